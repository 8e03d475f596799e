#include "tests/unit/vmm/acpi/guest_tables.h"

#include "absl/strings/str_format.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::acpi::testing {
namespace {

using x86::LoadLittleEndian;

absl::StatusOr<std::vector<uint8_t>> ReadBytes(const hw::GuestMemory& memory, uint64_t address,
                                               uint64_t length) {
  std::vector<uint8_t> bytes(length);
  if (absl::Status status = memory.Read(address, bytes); !status.ok()) return status;
  return bytes;
}

// A whole SDT: the header's length field says how much to read.
absl::StatusOr<std::vector<uint8_t>> ReadSdt(const hw::GuestMemory& memory, uint64_t address) {
  auto length = memory.ReadObject<uint32_t>(address + 4);
  if (!length.ok()) return length.status();
  if (*length < 36 || *length > 0x20000) {
    return absl::DataLossError(absl::StrFormat("table at %#x has length %d", address, *length));
  }
  return ReadBytes(memory, address, *length);
}

}  // namespace

uint8_t ByteSum(const std::vector<uint8_t>& bytes, size_t length) {
  uint8_t sum = 0;
  for (size_t i = 0; i < length && i < bytes.size(); ++i) sum += bytes[i];
  return sum;
}

absl::StatusOr<GuestTables> ReadGuestTables(const hw::GuestMemory& memory, uint64_t rsdp_address) {
  GuestTables result;
  auto rsdp = ReadBytes(memory, rsdp_address, 36);
  if (!rsdp.ok()) return rsdp.status();
  result.rsdp = *rsdp;
  const uint64_t xsdt_address = LoadLittleEndian<uint64_t>(result.rsdp, 24);
  auto xsdt = ReadSdt(memory, xsdt_address);
  if (!xsdt.ok()) return xsdt.status();
  result.tables["XSDT"] = *xsdt;
  result.addresses["XSDT"] = xsdt_address;
  for (uint64_t offset = 36; offset + 8 <= xsdt->size(); offset += 8) {
    const uint64_t address = LoadLittleEndian<uint64_t>(*xsdt, offset);
    auto table = ReadSdt(memory, address);
    if (!table.ok()) return table.status();
    const std::string signature(table->begin(), table->begin() + 4);
    result.tables[signature] = *table;
    result.addresses[signature] = address;
  }
  auto fadt = result.tables.find("FACP");
  if (fadt == result.tables.end()) return absl::NotFoundError("no FADT in the XSDT");
  const uint64_t dsdt_address = LoadLittleEndian<uint64_t>(fadt->second, 140);
  auto dsdt = ReadSdt(memory, dsdt_address);
  if (!dsdt.ok()) return dsdt.status();
  result.tables["DSDT"] = *dsdt;
  result.addresses["DSDT"] = dsdt_address;
  return result;
}

}  // namespace kvmini::vmm::acpi::testing

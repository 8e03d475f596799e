#include "vmm/acpi/sdt.h"

#include "util/check.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::acpi {
namespace {

void AppendFixed(std::vector<uint8_t>& out, std::string_view text, size_t size) {
  KVMINI_CHECK(text.size() == size, "ACPI identifier has the wrong length");
  out.insert(out.end(), text.begin(), text.end());
}

}  // namespace

std::vector<uint8_t> SdtHeader(std::string_view signature, uint8_t revision) {
  std::vector<uint8_t> table;
  AppendFixed(table, signature, 4);
  x86::AppendLittleEndian<uint32_t>(table, 0);  // length, set by FinishSdt
  table.push_back(revision);
  table.push_back(0);  // checksum, set by FinishSdt
  AppendFixed(table, kOemId, 6);
  AppendFixed(table, kOemTableId, 8);
  x86::AppendLittleEndian<uint32_t>(table, 1);  // OEM revision
  AppendFixed(table, kCreatorId, 4);
  x86::AppendLittleEndian<uint32_t>(table, 1);  // creator revision
  KVMINI_CHECK(table.size() == kSdtHeaderSize, "SDT header layout");
  return table;
}

void FinishSdt(std::vector<uint8_t>& table) {
  KVMINI_CHECK(table.size() >= kSdtHeaderSize && table.size() <= UINT32_MAX,
               "ACPI table size out of range");
  x86::StoreLittleEndian<uint32_t>(table, kSdtLengthOffset, static_cast<uint32_t>(table.size()));
  table[kSdtChecksumOffset] = 0;
  table[kSdtChecksumOffset] = AcpiChecksum(table);
}

uint8_t AcpiChecksum(std::span<const uint8_t> bytes) {
  uint8_t sum = 0;
  for (uint8_t byte : bytes) sum += byte;
  return static_cast<uint8_t>(0x100 - sum);
}

}  // namespace kvmini::vmm::acpi

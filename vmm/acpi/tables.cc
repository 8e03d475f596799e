#include "vmm/acpi/tables.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "vmm/acpi/power_port.h"
#include "vmm/acpi/sdt.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::acpi {
namespace {

using x86::AppendLittleEndian;
using x86::StoreLittleEndian;
using Table = std::vector<uint8_t>;

// --- FADT (ACPI 6.x, 5.2.9): revision 6, 276 bytes. ---
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 5;
constexpr uint64_t kFadtSize = 276;
constexpr uint64_t kFadtDsdt = 40;
constexpr uint64_t kFadtBootArchitecture = 109;
constexpr uint64_t kFadtFlags = 112;
constexpr uint64_t kFadtResetRegister = 116;
constexpr uint64_t kFadtResetValue = 128;
constexpr uint64_t kFadtMinorVersion = 131;
constexpr uint64_t kFadtExtendedDsdt = 140;
constexpr uint64_t kFadtSleepControl = 244;
constexpr uint64_t kFadtSleepStatus = 256;
constexpr uint64_t kFadtHypervisorVendor = 268;
// IAPC_BOOT_ARCH: no VGA to probe; no CMOS RTC (spares Linux a slow probe
// of ports nobody answers). Bit 1 (8042 present) stays clear.
constexpr uint16_t kBootArchVgaNotPresent = 1 << 2;
constexpr uint16_t kBootArchCmosRtcNotPresent = 1 << 5;
// Flags: power and sleep buttons are control-method (there are none),
// RESET_REG is supported, hardware-reduced ACPI (no PM blocks, no SCI).
constexpr uint32_t kFlagPowerButton = 1 << 4;
constexpr uint32_t kFlagSleepButton = 1 << 5;
constexpr uint32_t kFlagResetRegisterSupported = 1 << 10;
constexpr uint32_t kFlagHardwareReduced = 1 << 20;

// Generic Address Structure for an 8-bit I/O port.
void StoreIoPortAddress(Table& table, uint64_t offset, uint16_t port) {
  constexpr uint8_t kSystemIo = 1;
  constexpr uint8_t kByteAccess = 1;
  table[offset] = kSystemIo;
  table[offset + 1] = 8;  // register bit width
  table[offset + 2] = 0;  // bit offset
  table[offset + 3] = kByteAccess;
  StoreLittleEndian<uint64_t>(table, offset + 4, port);
}

Table BuildFadt(uint64_t dsdt_address) {
  Table table = SdtHeader("FACP", kFadtRevision);
  table.resize(kFadtSize, 0);
  StoreLittleEndian<uint32_t>(table, kFadtDsdt, static_cast<uint32_t>(dsdt_address));
  StoreLittleEndian<uint64_t>(table, kFadtExtendedDsdt, dsdt_address);
  StoreLittleEndian<uint16_t>(table, kFadtBootArchitecture,
                              kBootArchVgaNotPresent | kBootArchCmosRtcNotPresent);
  StoreLittleEndian<uint32_t>(
      table, kFadtFlags,
      kFlagPowerButton | kFlagSleepButton | kFlagResetRegisterSupported | kFlagHardwareReduced);
  StoreIoPortAddress(table, kFadtResetRegister, kPowerPort);
  table[kFadtResetValue] = kResetValue;
  table[kFadtMinorVersion] = kFadtMinorRevision;
  StoreIoPortAddress(table, kFadtSleepControl, kPowerPort);
  StoreIoPortAddress(table, kFadtSleepStatus, kPowerPort);
  constexpr std::string_view kHypervisorVendor = "KVMINI  ";
  std::copy(kHypervisorVendor.begin(), kHypervisorVendor.end(),
            table.begin() + kFadtHypervisorVendor);
  FinishSdt(table);
  return table;
}

// --- MADT (5.2.12). ---
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kLocalApicEntry = 0;
constexpr uint8_t kIoApicEntry = 1;
constexpr uint8_t kLocalApicNmiEntry = 4;
constexpr uint32_t kLocalApicEnabled = 1 << 0;
constexpr uint8_t kAllProcessors = 0xFF;
constexpr uint8_t kIoApicId = 0;

Table BuildMadt(uint32_t vcpu_count) {
  Table table = SdtHeader("APIC", kMadtRevision);
  AppendLittleEndian<uint32_t>(table, x86::kLocalApicAddress);
  AppendLittleEndian<uint32_t>(table, 0);  // flags: no PCAT_COMPAT, no legacy PIC wanted
  for (uint32_t i = 0; i < vcpu_count; ++i) {
    const uint8_t apic_id = static_cast<uint8_t>(i);
    table.insert(table.end(), {kLocalApicEntry, 8, /*processor UID*/ apic_id, apic_id});
    AppendLittleEndian<uint32_t>(table, kLocalApicEnabled);
  }
  table.insert(table.end(), {kIoApicEntry, 12, kIoApicId, 0});
  AppendLittleEndian<uint32_t>(table, x86::kIoapicAddress);
  AppendLittleEndian<uint32_t>(table, 0);  // GSI base
  // LINT1 of every local APIC is the NMI input (as KVM wires it).
  table.insert(table.end(), {kLocalApicNmiEntry, 6, kAllProcessors});
  AppendLittleEndian<uint16_t>(table, 0);  // flags: conforms to the bus
  table.push_back(1);                      // LINT1
  FinishSdt(table);
  return table;
}

Table BuildXsdt(const std::vector<uint64_t>& entries) {
  Table table = SdtHeader("XSDT", 1);
  for (uint64_t address : entries) AppendLittleEndian<uint64_t>(table, address);
  FinishSdt(table);
  return table;
}

// --- RSDP (5.2.5), revision 2: 36 bytes, points at the XSDT only. ---
constexpr uint64_t kRsdpSize = 36;
constexpr uint64_t kRsdpV1ChecksumLength = 20;

Table BuildRsdp(uint64_t xsdt_address) {
  // Filled in place at its fixed offsets: appending field by field made
  // GCC 12 -O3 report a false -Wstringop-overflow in vector growth.
  constexpr std::string_view kSignature = "RSD PTR ";
  Table table(kRsdpSize, 0);
  std::copy(kSignature.begin(), kSignature.end(), table.begin());
  std::copy(kOemId.begin(), kOemId.end(), table.begin() + 9);
  table[15] = 2;  // revision; the RSDT address at 16 stays 0 (none)
  StoreLittleEndian<uint32_t>(table, 20, kRsdpSize);
  StoreLittleEndian<uint64_t>(table, 24, xsdt_address);
  table[8] = AcpiChecksum(std::span(table).first(kRsdpV1ChecksumLength));
  table[32] = AcpiChecksum(table);  // extended checksum, all 36 bytes
  return table;
}

absl::Status ValidateConfig(const AcpiConfig& config) {
  if (config.vcpu_count < 1 || config.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d vCPUs requested; the ACPI MADT describes 1 to %d", config.vcpu_count, kMaxVcpus));
  }
  const auto& devices = config.virtio_mmio_devices;
  for (size_t i = 0; i < devices.size(); ++i) {
    const x86::MmioDeviceWindow& device = devices[i];
    if (device.size == 0 || device.base < x86::kMmioHoleStart ||
        device.base > x86::kIoapicAddress || x86::kIoapicAddress - device.base < device.size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtio-mmio device %d: window [%#x, +%#x) is not inside the MMIO hole [%#x, %#x)", i,
          device.base, device.size, x86::kMmioHoleStart, x86::kIoapicAddress));
    }
    if (device.gsi >= x86::kIoapicPinCount || device.gsi == x86::kCom1Irq) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "virtio-mmio device %d: GSI %d is not a free IOAPIC pin (0-%d, COM1 uses %d)", i,
          device.gsi, x86::kIoapicPinCount - 1, x86::kCom1Irq));
    }
    for (size_t j = 0; j < i; ++j) {
      const x86::MmioDeviceWindow& other = devices[j];
      if (device.base < other.base + other.size && other.base < device.base + device.size) {
        return absl::InvalidArgumentError(
            absl::StrFormat("virtio-mmio devices %d and %d have overlapping windows", j, i));
      }
      if (device.gsi == other.gsi) {
        return absl::InvalidArgumentError(
            absl::StrFormat("virtio-mmio devices %d and %d share GSI %d", j, i, device.gsi));
      }
    }
  }
  return absl::OkStatus();
}

constexpr uint64_t AlignUp16(uint64_t value) { return (value + 15) & ~uint64_t{15}; }

}  // namespace

absl::StatusOr<AcpiTables> BuildAcpiTables(const hw::GuestMemory& memory,
                                           const AcpiConfig& config) {
  if (absl::Status status = ValidateConfig(config); !status.ok()) return status;

  // Tables are placed one after another, 16-byte aligned, after the RSDP;
  // each address must be known before the table that points at it is built.
  AcpiTables result{x86::kRsdpAddress, {}};
  std::vector<std::pair<uint64_t, Table>> placed;
  uint64_t next = AlignUp16(x86::kRsdpAddress + kRsdpSize);
  auto place = [&](std::string signature, Table table) {
    const uint64_t address = next;
    next = AlignUp16(address + table.size());
    result.tables.push_back({std::move(signature), address, table.size()});
    placed.emplace_back(address, std::move(table));
    return address;
  };
  const uint64_t dsdt = place("DSDT", BuildDsdt(config));
  const uint64_t fadt = place("FACP", BuildFadt(dsdt));
  const uint64_t madt = place("APIC", BuildMadt(config.vcpu_count));
  const uint64_t xsdt = place("XSDT", BuildXsdt({fadt, madt}));
  result.tables.insert(result.tables.begin(), {"RSD PTR ", x86::kRsdpAddress, kRsdpSize});
  placed.emplace_back(x86::kRsdpAddress, BuildRsdp(xsdt));

  if (next > x86::kAcpiAreaEnd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the ACPI tables for %d vCPUs and %d devices need %d bytes, more than the %d reserved",
        config.vcpu_count, config.virtio_mmio_devices.size(), next - x86::kAcpiAreaStart,
        x86::kAcpiAreaEnd - x86::kAcpiAreaStart));
  }
  for (const auto& [address, table] : placed) {
    if (absl::Status status = memory.Write(address, table); !status.ok()) return status;
  }
  return result;
}

}  // namespace kvmini::vmm::acpi

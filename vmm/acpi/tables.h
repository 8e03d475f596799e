// BuildAcpiTables(): the ACPI tables of a kvmini machine, written into guest
// memory in the E820-reserved area below 1 MiB. A hardware-reduced ACPI
// platform: RSDP (revision 2) -> XSDT -> FADT (-> DSDT) and MADT. The MADT
// lists one local APIC per vCPU and the IOAPIC; the DSDT describes COM1, every
// virtio-mmio device (LNRO0005, edge-triggered interrupt) and _S5_, so that
// the guest's poweroff reaches kPowerPort. Debian's kernels find CPUs, the
// IOAPIC and virtio-mmio devices only here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::acpi {

// APIC IDs 0..254 (one byte; 0xFF is the broadcast ID).
inline constexpr uint32_t kMaxVcpus = 255;

struct AcpiConfig {
  // vCPU i has APIC ID i (the KVM vCPU id).
  uint32_t vcpu_count = 1;
  // In the order the guest should enumerate them (virtio-mmio device i is
  // ACPI device "V00i", _UID i). Windows must lie in the 32-bit MMIO hole
  // below the IOAPIC and not overlap; each GSI is an IOAPIC pin used once.
  std::vector<x86::MmioDeviceWindow> virtio_mmio_devices;
};

struct AcpiTableLocation {
  std::string signature;  // "RSD PTR ", "DSDT", "FACP", "APIC", "XSDT"
  uint64_t address;
  uint64_t length;
};

struct AcpiTables {
  uint64_t rsdp_address;  // for boot_params.acpi_rsdp_addr
  std::vector<AcpiTableLocation> tables;
};

// Validates `config` (InvalidArgument naming the bad device or count),
// builds the tables and writes them at x86::kAcpiAreaStart.
absl::StatusOr<AcpiTables> BuildAcpiTables(const hw::GuestMemory& memory, const AcpiConfig& config);

// The DSDT alone (header included, checksummed), for BuildAcpiTables and
// tests. `config` must already be valid.
std::vector<uint8_t> BuildDsdt(const AcpiConfig& config);

}  // namespace kvmini::vmm::acpi

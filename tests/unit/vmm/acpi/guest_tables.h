// Reads the ACPI tables back out of guest memory the way a guest finds
// them: RSDP -> XSDT -> each table, FADT -> DSDT. Used by the table tests
// and the iasl decoding test.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"

namespace kvmini::vmm::acpi::testing {

struct GuestTables {
  std::vector<uint8_t> rsdp;
  // By signature: "XSDT", "FACP", "APIC", "DSDT".
  std::map<std::string, std::vector<uint8_t>> tables;
  std::map<std::string, uint64_t> addresses;
};

absl::StatusOr<GuestTables> ReadGuestTables(const hw::GuestMemory& memory, uint64_t rsdp_address);

// Sum of all bytes mod 256 (0 for a correct checksum).
uint8_t ByteSum(const std::vector<uint8_t>& bytes, size_t length);

}  // namespace kvmini::vmm::acpi::testing

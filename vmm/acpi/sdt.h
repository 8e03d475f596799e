// The parts every ACPI table shares: the 36-byte system description table
// header with kvmini's OEM identity, and checksums. A table is built as a
// byte vector starting with SdtHeader(); FinishSdt() fills in its length and
// checksum once its contents are complete.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace kvmini::vmm::acpi {

inline constexpr uint64_t kSdtHeaderSize = 36;
inline constexpr uint64_t kSdtLengthOffset = 4;
inline constexpr uint64_t kSdtChecksumOffset = 9;

// The OEM identity every kvmini table carries.
inline constexpr std::string_view kOemId = "KVMINI";         // 6 bytes
inline constexpr std::string_view kOemTableId = "KVMINIVM";  // 8 bytes
inline constexpr std::string_view kCreatorId = "KVMI";       // 4 bytes

// A header for `signature` (4 characters) with length and checksum still 0.
std::vector<uint8_t> SdtHeader(std::string_view signature, uint8_t revision);

// Sets the length field to the table's size, then the checksum so that all
// bytes sum to 0.
void FinishSdt(std::vector<uint8_t>& table);

// The byte that makes `bytes` (with this byte still 0) sum to 0 mod 256.
uint8_t AcpiChecksum(std::span<const uint8_t> bytes);

}  // namespace kvmini::vmm::acpi

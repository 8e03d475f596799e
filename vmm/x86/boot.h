// Loading a Linux kernel: a bzImage through the 64-bit boot protocol (the
// kernel at 1 MiB, the zero page (boot_params) with the kernel's own setup
// header, the command line, the initrd, the e820 map and the ACPI RSDP
// address, long-mode page tables and GDT), or an uncompressed ELF vmlinux
// through its PVH entry (no decompression; see pvh_boot.h). The file's
// first bytes decide which. Returns the BSP's initial registers.
// Everything a user can get wrong (not a kernel, too little memory, an
// initrd that does not fit, a command line that is too long) is an
// InvalidArgument error that names the file and what to change.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/x86/long_mode.h"

namespace kvmini::vmm::x86 {

// boot_params offsets outside the setup header (zero-page.rst).
namespace boot_params {
inline constexpr uint64_t kAcpiRsdpAddress = 0x070;  // u64
inline constexpr uint64_t kExtRamdiskImage = 0x0C0;  // u32, bits 63:32
inline constexpr uint64_t kExtRamdiskSize = 0x0C4;   // u32, bits 63:32
inline constexpr uint64_t kExtCmdLinePtr = 0x0C8;    // u32, bits 63:32
inline constexpr uint64_t kE820EntryCount = 0x1E8;   // u8
inline constexpr uint64_t kSentinel = 0x1EF;         // u8, must stay 0
inline constexpr uint64_t kE820Table = 0x2D0;        // 128 x {u64, u64, u32}
inline constexpr uint64_t kE820EntrySize = 20;
inline constexpr uint64_t kE820MaxEntries = 128;
inline constexpr uint8_t kUndefinedLoader = 0xFF;  // type_of_loader
}  // namespace boot_params

struct LinuxBootConfig {
  std::span<const uint8_t> kernel;  // the whole bzImage or vmlinux file
  std::string_view kernel_name;     // for messages (the path)
  std::span<const uint8_t> initrd;  // empty: no initrd
  std::string_view initrd_name;
  std::string_view command_line;
  // Where BuildAcpiTables() put the RSDP; 0 leaves the kernel to scan for it.
  uint64_t acpi_rsdp_address = 0;
};

// Loads the kernel into `memory` (which must contain RAM from 0 past 1 MiB,
// as GuestRamRanges() lays it out) and returns the BSP state for its entry.
// The initrd goes as high as allowed below the end of RAM below the MMIO
// hole (and a bzImage's initrd_addr_max), page aligned, clear of the loaded
// kernel and, for a bzImage, of the area it decompresses into
// (pref_address + init_size).
absl::StatusOr<BootState> LoadLinux(const hw::GuestMemory& memory, const LinuxBootConfig& config);

// The same, reading the kernel and initrd (empty path: none) from files;
// errors name the file.
struct LinuxBootFiles {
  std::string kernel_path;
  std::string initrd_path;
  std::string command_line;
  uint64_t acpi_rsdp_address = 0;
};
absl::StatusOr<BootState> LoadLinuxFromFiles(const hw::GuestMemory& memory,
                                             const LinuxBootFiles& files);

}  // namespace kvmini::vmm::x86

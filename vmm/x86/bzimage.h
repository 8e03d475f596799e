// Parsing and validating a Linux bzImage (the x86 boot protocol's setup
// header, Documentation/arch/x86/boot.rst) for the 64-bit entry path: which
// bytes go into the zero page, which are loaded at 1 MiB, and the limits the
// kernel imposes on its command line, initrd and memory. A file that is not
// a bzImage kvmini can boot gets an error naming the file and the reason.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvmini::vmm::x86 {

// Offsets in the bzImage file, which are also the offsets in boot_params
// (the setup header sits at the same place in both).
namespace setup_header {
inline constexpr uint64_t kStart = 0x1F1;
inline constexpr uint64_t kSetupSectors = 0x1F1;     // u8, 0 means 4
inline constexpr uint64_t kSysSize = 0x1F4;          // u32, protected-mode size / 16
inline constexpr uint64_t kBootFlag = 0x1FE;         // u16, 0xAA55
inline constexpr uint64_t kJump = 0x200;             // 0xEB, disp8: header ends at 0x202+disp8
inline constexpr uint64_t kHeaderMagic = 0x202;      // u32, "HdrS"
inline constexpr uint64_t kVersion = 0x206;          // u16
inline constexpr uint64_t kTypeOfLoader = 0x210;     // u8
inline constexpr uint64_t kLoadFlags = 0x211;        // u8
inline constexpr uint64_t kRamdiskImage = 0x218;     // u32
inline constexpr uint64_t kRamdiskSize = 0x21C;      // u32
inline constexpr uint64_t kCmdLinePtr = 0x228;       // u32
inline constexpr uint64_t kInitrdAddrMax = 0x22C;    // u32
inline constexpr uint64_t kKernelAlignment = 0x230;  // u32
inline constexpr uint64_t kRelocatable = 0x234;      // u8
inline constexpr uint64_t kXLoadFlags = 0x236;       // u16
inline constexpr uint64_t kCmdlineSize = 0x238;      // u32
inline constexpr uint64_t kPrefAddress = 0x258;      // u64
inline constexpr uint64_t kInitSize = 0x260;         // u32
// boot_params fields outside the setup header are in boot_params.h.
// The setup header may not extend past this (boot_params' next field).
inline constexpr uint64_t kLimit = 0x290;

inline constexpr uint16_t kBootFlagValue = 0xAA55;
inline constexpr uint32_t kHeaderMagicValue = 0x53726448;  // "HdrS"
inline constexpr uint8_t kLoadedHigh = 0x01;               // loadflags bit 0
inline constexpr uint16_t kXlfKernel64 = 0x01;             // xloadflags bit 0
// Oldest protocol with the fields and 64-bit entry we rely on (2.12).
inline constexpr uint16_t kMinimumVersion = 0x020C;
}  // namespace setup_header

// A validated bzImage.
struct BzImage {
  // Bytes [0x1F1, end of setup header), copied verbatim into the zero page.
  // Points into the `head` passed to ParseBzImage, which must outlive this.
  std::span<const uint8_t> setup_header;
  // The protected-mode kernel, loaded at kKernelLoadAddress: everything
  // from this file offset to the end of the file.
  uint64_t protected_mode_offset;
  uint64_t protected_mode_size;
  uint16_t protocol_version;
  // Highest guest-physical address the initrd may occupy (inclusive).
  uint32_t initrd_addr_max;
  // Longest command line the kernel accepts, without the NUL.
  uint32_t cmdline_size;
  bool relocatable;
  uint32_t kernel_alignment;
  // The kernel decompresses itself to at least pref_address and needs
  // init_size bytes there.
  uint64_t pref_address;
  uint32_t init_size;
};

// Validates a bzImage of `file_size` bytes from `head`, its first
// min(file_size, setup_header::kLimit) bytes or more (the whole file will
// do), so that a loader need not read the kernel twice. `name` (usually the
// path) is only used in error messages: "<name>: not a bzImage (...)".
absl::StatusOr<BzImage> ParseBzImage(std::span<const uint8_t> head, uint64_t file_size,
                                     std::string_view name);

}  // namespace kvmini::vmm::x86

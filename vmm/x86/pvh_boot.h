// Loading an uncompressed ELF vmlinux through its PVH entry point (the
// 32-bit entry named by the XEN_ELFNOTE_PHYS32_ENTRY note, which Linux has
// with CONFIG_PVH): no decompression step. The kernel's PT_LOAD segments go
// to their physical addresses; the kernel learns the command line, initrd,
// memory map and RSDP from an hvm_start_info structure (Xen's
// arch-x86/hvm/start_info.h, version 1) whose address it gets in EBX.
// Internal to vmm/x86; the machine uses boot.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/x86/load_support.h"
#include "vmm/x86/long_mode.h"

namespace kvmini::vmm::x86 {

namespace pvh {
inline constexpr uint32_t kStartInfoMagic = 0x336EC578;
inline constexpr uint32_t kStartInfoVersion = 1;
inline constexpr uint64_t kStartInfoSize = 56;
inline constexpr uint64_t kModuleEntrySize = 32;
inline constexpr uint64_t kMemoryMapEntrySize = 24;
// Linux copies at most COMMAND_LINE_SIZE (2048) bytes including the NUL.
inline constexpr uint64_t kCommandLineLimit = 2047;
// The note that names the 32-bit PVH entry point.
inline constexpr uint32_t kPhys32EntryNote = 18;
}  // namespace pvh

struct ElfSegment {
  uint64_t file_offset;
  uint64_t file_size;
  uint64_t physical_address;
  uint64_t memory_size;  // >= file_size; the rest is zeroed
};

struct PvhKernel {
  uint32_t entry;  // physical address of the 32-bit PVH entry
  std::vector<ElfSegment> segments;
  uint64_t end;  // highest physical address any segment occupies, exclusive
};

// Reads and validates the ELF headers of `kernel`: a 64-bit little-endian
// x86-64 executable with a PVH note and loadable segments inside the file.
absl::StatusOr<PvhKernel> ParsePvhKernel(const ImageSource& kernel);

absl::StatusOr<BootState> LoadPvhKernel(const hw::GuestMemory& memory, const ImageSource& kernel,
                                        const std::optional<ImageSource>& initrd,
                                        std::string_view command_line, uint64_t acpi_rsdp_address);

}  // namespace kvmini::vmm::x86

// What the kernel loaders (bzImage, PVH ELF) share: a source of kernel or
// initrd bytes that is read straight into guest memory, where RAM below
// the MMIO hole ends, and the rule for placing the initrd. Internal to
// vmm/x86; the machine uses boot.h.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/x86/boot_file.h"

namespace kvmini::vmm::x86 {

// The bytes of a kernel or initrd, from a buffer or a file.
struct ImageSource {
  std::string_view name;  // for messages: the path
  uint64_t size = 0;
  std::function<absl::Status(uint64_t offset, std::span<uint8_t> destination)> read;
};

// `bytes` / `file` must outlive the source.
ImageSource SourceFromBytes(std::span<const uint8_t> bytes, std::string_view name);
ImageSource SourceFromFile(const BootFile& file);

// Copies source bytes [offset, offset + size) to guest RAM at `address`.
absl::Status CopyToGuest(const hw::GuestMemory& memory, uint64_t address, const ImageSource& source,
                         uint64_t offset, uint64_t size);

// End of the RAM range that starts at 0 (it ends at or below the MMIO
// hole), which the kernel, initrd and boot structures must fit in.
absl::StatusOr<uint64_t> LowRamEnd(const hw::GuestMemory& memory);

// The initrd's address: page aligned, as high as possible with its end at
// or below `top`, and not below `lowest` (the end of the kernel's
// footprint). `top_description` says in the error what limited `top`.
absl::StatusOr<uint64_t> PlaceInitrd(const ImageSource& initrd, uint64_t lowest, uint64_t top,
                                     std::string_view top_description);

// The command line, NUL terminated, if the kernel accepts it: an error
// naming the kernel if it is longer than `limit` or contains a NUL.
absl::StatusOr<std::vector<uint8_t>> CommandLineBytes(std::string_view command_line, uint64_t limit,
                                                      std::string_view kernel_name);

// "12.3 MiB", for messages.
std::string Mebibytes(uint64_t bytes);

}  // namespace kvmini::vmm::x86

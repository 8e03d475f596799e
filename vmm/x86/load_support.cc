#include "vmm/x86/load_support.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_format.h"
#include "util/check.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {

ImageSource SourceFromBytes(std::span<const uint8_t> bytes, std::string_view name) {
  return {name, bytes.size(), [bytes](uint64_t offset, std::span<uint8_t> destination) {
            std::copy_n(bytes.begin() + offset, destination.size(), destination.begin());
            return absl::OkStatus();
          }};
}

ImageSource SourceFromFile(const BootFile& file) {
  return {file.path(), file.size(), [&file](uint64_t offset, std::span<uint8_t> destination) {
            return file.ReadAt(offset, destination);
          }};
}

absl::Status CopyToGuest(const hw::GuestMemory& memory, uint64_t address, const ImageSource& source,
                         uint64_t offset, uint64_t size) {
  KVMINI_CHECK(offset <= source.size && source.size - offset >= size,
               "copy past the end of a kernel or initrd");
  std::optional<std::span<uint8_t>> destination = memory.HostSpan(address, size);
  if (!destination) {
    return absl::OutOfRangeError(
        absl::StrFormat("%s: [%#x, +%#x) is not guest RAM", source.name, address, size));
  }
  return source.read(offset, *destination);
}

absl::StatusOr<uint64_t> LowRamEnd(const hw::GuestMemory& memory) {
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    if (region.guest_address == 0 && region.size > kKernelLoadAddress) return region.size;
  }
  return absl::InvalidArgumentError(
      "guest RAM does not start at address 0 and extend past 1 MiB; cannot load a kernel");
}

absl::StatusOr<uint64_t> PlaceInitrd(const ImageSource& initrd, uint64_t lowest, uint64_t top,
                                     std::string_view top_description) {
  if (initrd.size <= top) {
    const uint64_t address = (top - initrd.size) / kPageSize * kPageSize;
    if (address >= lowest) return address;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: the initrd (%s) does not fit in guest RAM between the kernel (which needs up to %s) "
      "and %s (%s): give the guest more memory",
      initrd.name, Mebibytes(initrd.size), Mebibytes(lowest), Mebibytes(top), top_description));
}

absl::StatusOr<std::vector<uint8_t>> CommandLineBytes(std::string_view command_line, uint64_t limit,
                                                      std::string_view kernel_name) {
  limit = std::min(limit, kCommandLineMaxBytes - 1);
  if (command_line.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the kernel command line is %d bytes; %s accepts at most %d",
                        command_line.size(), kernel_name, limit));
  }
  if (command_line.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("the kernel command line contains a NUL byte");
  }
  std::vector<uint8_t> bytes(command_line.begin(), command_line.end());
  bytes.push_back('\0');
  return bytes;
}

std::string Mebibytes(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / kMiB);
}

}  // namespace kvmini::vmm::x86

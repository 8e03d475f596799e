#include "vmm/x86/boot.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/x86/boot_file.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/bzimage_boot.h"
#include "vmm/x86/load_support.h"
#include "vmm/x86/pvh_boot.h"

namespace kvmini::vmm::x86 {
namespace {

bool IsElf(std::span<const uint8_t> head) {
  constexpr uint8_t kElfMagic[] = {0x7F, 'E', 'L', 'F'};
  return head.size() >= sizeof(kElfMagic) && std::memcmp(head.data(), kElfMagic, 4) == 0;
}

// `head`: at least the kernel file's first setup_header::kLimit bytes.
absl::StatusOr<BootState> Load(const hw::GuestMemory& memory, std::span<const uint8_t> head,
                               const ImageSource& kernel, const std::optional<ImageSource>& initrd,
                               std::string_view command_line, uint64_t acpi_rsdp_address) {
  if (IsElf(head)) {
    return LoadPvhKernel(memory, kernel, initrd, command_line, acpi_rsdp_address);
  }
  return LoadBzImageKernel(memory, head, kernel, initrd, command_line, acpi_rsdp_address);
}

}  // namespace

absl::StatusOr<BootState> LoadLinux(const hw::GuestMemory& memory, const LinuxBootConfig& config) {
  std::optional<ImageSource> initrd;
  if (!config.initrd.empty()) initrd = SourceFromBytes(config.initrd, config.initrd_name);
  return Load(memory, config.kernel, SourceFromBytes(config.kernel, config.kernel_name), initrd,
              config.command_line, config.acpi_rsdp_address);
}

absl::StatusOr<BootState> LoadLinuxFromFiles(const hw::GuestMemory& memory,
                                             const LinuxBootFiles& files) {
  absl::StatusOr<BootFile> kernel = BootFile::Open(files.kernel_path, "kernel");
  if (!kernel.ok()) return kernel.status();
  std::vector<uint8_t> head(std::min(kernel->size(), setup_header::kLimit));
  if (absl::Status status = kernel->ReadAt(0, head); !status.ok()) return status;

  std::optional<BootFile> initrd_file;
  std::optional<ImageSource> initrd;
  if (!files.initrd_path.empty()) {
    absl::StatusOr<BootFile> opened = BootFile::Open(files.initrd_path, "initrd");
    if (!opened.ok()) return opened.status();
    if (opened->size() == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("initrd file %s is empty", files.initrd_path));
    }
    initrd_file = std::move(*opened);
    initrd = SourceFromFile(*initrd_file);
  }
  return Load(memory, head, SourceFromFile(*kernel), initrd, files.command_line,
              files.acpi_rsdp_address);
}

}  // namespace kvmini::vmm::x86

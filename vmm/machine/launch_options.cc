#include "vmm/machine/launch_options.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "vmm/acpi/tables.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm {
namespace {

// Usage errors read "--flag VALUE: what is wrong".
absl::Status FlagError(absl::string_view flag, absl::string_view value, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", value, ": ", what));
}

absl::Status CheckReadableFile(absl::string_view flag, const std::string& path) {
  // Non-blocking: opening a FIFO for reading would wait for a writer.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return FlagError(flag, path, strerror(errno));
  struct stat info {};
  int result = fstat(fd, &info);
  close(fd);
  if (result != 0) return FlagError(flag, path, strerror(errno));
  if (!S_ISREG(info.st_mode)) return FlagError(flag, path, "not a regular file");
  if (info.st_size == 0) return FlagError(flag, path, "the file is empty");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> ParseMemorySize(absl::string_view text) {
  absl::string_view digits = text;
  uint64_t unit = 1ull << 20;  // bare numbers are MiB
  if (!digits.empty() && std::isalpha(static_cast<unsigned char>(digits.back()))) {
    switch (absl::ascii_toupper(digits.back())) {
      case 'K':
        unit = 1ull << 10;
        break;
      case 'M':
        unit = 1ull << 20;
        break;
      case 'G':
        unit = 1ull << 30;
        break;
      case 'T':
        unit = 1ull << 40;
        break;
      default:
        return FlagError("--memory", text, "unknown unit (use K, M, G or T, e.g. 512M or 2G)");
    }
    digits.remove_suffix(1);
  }
  uint64_t count = 0;
  if (digits.empty() || !absl::SimpleAtoi(digits, &count) ||
      !std::isdigit(static_cast<unsigned char>(digits.front()))) {
    return FlagError("--memory", text, "not a size (examples: 512M, 2G)");
  }
  if (count > std::numeric_limits<uint64_t>::max() / unit) {
    return FlagError("--memory", text, "too large");
  }
  uint64_t bytes = count * unit;
  if (bytes % x86::kPageSize != 0) {
    return FlagError("--memory", text, "not a whole number of 4 KiB pages");
  }
  return bytes;
}

absl::StatusOr<LaunchOptions> ValidateLaunchFlags(const LaunchFlags& flags) {
  LaunchOptions options;
  if (flags.kernel.empty()) {
    return absl::InvalidArgumentError("--kernel is required: the Linux kernel (bzImage or vmlinux) to boot");
  }
  if (absl::Status status = CheckReadableFile("--kernel", flags.kernel); !status.ok()) {
    return status;
  }
  options.kernel_path = flags.kernel;
  if (!flags.initrd.empty()) {
    if (absl::Status status = CheckReadableFile("--initrd", flags.initrd); !status.ok()) {
      return status;
    }
    options.initrd_path = flags.initrd;
  }

  absl::StatusOr<uint64_t> memory = ParseMemorySize(flags.memory);
  if (!memory.ok()) return memory.status();
  if (*memory < x86::kMinimumMemoryBytes) {
    return FlagError("--memory", flags.memory,
                     absl::StrCat("below the minimum of ", x86::kMinimumMemoryBytes >> 20, "M"));
  }
  // The layout's upper limit, checked here rather than after /dev/kvm is open.
  if (absl::Status layout = x86::GuestRamRanges(*memory).status(); !layout.ok()) {
    return FlagError("--memory", flags.memory, layout.message());
  }
  options.memory_bytes = *memory;

  if (flags.cpus < 1 || flags.cpus > acpi::kMaxVcpus) {
    return FlagError("--cpus", std::to_string(flags.cpus),
                     absl::StrCat("must be between 1 and ", acpi::kMaxVcpus));
  }
  options.vcpu_count = static_cast<uint32_t>(flags.cpus);

  absl::StatusOr<hw::SerialSpec> serial = hw::ParseSerialSpec(flags.serial);
  if (!serial.ok()) return serial.status();
  options.serial = *serial;

  absl::StatusOr<std::vector<IoThreadSpec>> iothreads = ValidateIoThreads(flags.iothreads);
  if (!iothreads.ok()) return iothreads.status();
  absl::StatusOr<std::vector<DiskSpec>> disks =
      ValidateDisks(flags.blk, flags.scsi, *iothreads, x86::kMaxVirtioMmioDevices);
  if (!disks.ok()) return disks.status();
  options.disks = std::move(*disks);
  options.iothreads = std::move(*iothreads);
  if (flags.control.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("--control: the path contains a NUL byte");
  }
  options.control_path = flags.control;
  if (flags.seccomp != "on" && flags.seccomp != "off") {
    return FlagError("--seccomp", flags.seccomp, "use on or off");
  }
  options.seccomp = flags.seccomp == "on";

  options.kernel_command_line = flags.cmdline;
  if (!flags.append.empty()) {
    if (!options.kernel_command_line.empty()) options.kernel_command_line += ' ';
    options.kernel_command_line += flags.append;
  }
  if (options.kernel_command_line.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("--cmdline/--append: the command line contains a NUL byte");
  }
  return options;
}

}  // namespace kvmini::vmm

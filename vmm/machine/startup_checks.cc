#include "vmm/machine/startup_checks.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "util/path.h"
#include "vmm/x86/bzimage.h"

namespace kvmini::vmm {
namespace {

bool StartsWithElfMagic(const std::vector<uint8_t>& head) {
  return head.size() >= 4 && head[0] == 0x7F && head[1] == 'E' && head[2] == 'L' && head[3] == 'F';
}

// The bzImage header: format, truncation, and the command line limit it
// announces. An ELF vmlinux is left to the PVH loader.
absl::Status CheckKernel(const LaunchOptions& options) {
  const std::string name = absl::StrCat("--kernel ", options.kernel_path);
  // Non-blocking: a FIFO put in place of the kernel must not hang kvmini.
  int fd = open(options.kernel_path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat(name, ": ", strerror(errno)));
  struct stat info {};
  std::vector<uint8_t> head;
  ssize_t read_bytes = -1;
  int error = 0;
  if (fstat(fd, &info) == 0) {
    head.resize(std::min<uint64_t>(info.st_size, x86::setup_header::kLimit));
    read_bytes = pread(fd, head.data(), head.size(), 0);
  }
  error = errno;
  close(fd);
  if (read_bytes < 0 || static_cast<size_t>(read_bytes) != head.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": cannot read its header: ", read_bytes < 0 ? strerror(error) : "the file shrank"));
  }
  if (StartsWithElfMagic(head)) return absl::OkStatus();
  absl::StatusOr<x86::BzImage> image = x86::ParseBzImage(head, info.st_size, name);
  if (!image.ok()) return absl::InvalidArgumentError(image.status().message());
  if (options.kernel_command_line.size() > image->cmdline_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--cmdline/--append: the kernel command line is ", options.kernel_command_line.size(),
        " bytes; ", options.kernel_path, " accepts at most ", image->cmdline_size));
  }
  return absl::OkStatus();
}

bool SameFile(const struct stat& a, const std::string& path) {
  struct stat b {};
  return !path.empty() && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

// The serial log is created (truncated) only once everything else is known
// to be right; its directory must exist by then, and it must not be one of
// the files the machine reads - a slip of the keyboard would wipe a disk.
absl::Status CheckSerialFile(const LaunchOptions& options) {
  const hw::SerialSpec& serial = options.serial;
  if (serial.kind != hw::SerialSpec::Kind::kFile) return absl::OkStatus();
  const std::string directory = util::ParentDirectory(serial.path);
  struct stat info {};
  const char* problem = nullptr;
  if (stat(directory.c_str(), &info) != 0) {
    problem = strerror(errno);
  } else if (!S_ISDIR(info.st_mode)) {
    problem = "not a directory";
  }
  if (problem != nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--serial file:", serial.path, ": directory ", directory, ": ", problem));
  }
  if (stat(serial.path.c_str(), &info) != 0) return absl::OkStatus();  // created later
  if (S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--serial file:", serial.path, ": is a directory, not a file"));
  }
  std::string overwritten;
  if (SameFile(info, options.kernel_path)) overwritten = "--kernel";
  if (SameFile(info, options.initrd_path)) overwritten = "--initrd";
  for (const DiskSpec& disk : options.disks) {
    if (SameFile(info, disk.path))
      overwritten = absl::StrCat(DiskFlagName(disk.type), " id=", disk.id);
  }
  if (!overwritten.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--serial file:", serial.path,
                                                   " is the file of ", overwritten,
                                                   "; the console log would overwrite it"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckLaunchFiles(const LaunchOptions& options) {
  if (absl::Status status = CheckKernel(options); !status.ok()) return status;
  return CheckSerialFile(options);
}

}  // namespace kvmini::vmm

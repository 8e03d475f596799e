#include "vmm/x86/boot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_format.h"

namespace kvmini::vmm::x86 {

absl::StatusOr<BootFile> BootFile::Open(const std::string& path, std::string_view what) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("cannot open %s file %s", what, path));
  }
  struct stat info;
  if (fstat(fd, &info) != 0) {
    const int saved = errno;
    close(fd);
    return absl::ErrnoToStatus(saved, absl::StrFormat("cannot stat %s file %s", what, path));
  }
  if (!S_ISREG(info.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s file %s is not a regular file", what, path));
  }
  return BootFile(fd, static_cast<uint64_t>(info.st_size), path, what);
}

BootFile::BootFile(BootFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      size_(other.size_),
      path_(std::move(other.path_)),
      what_(std::move(other.what_)) {}

BootFile& BootFile::operator=(BootFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
    path_ = std::move(other.path_);
    what_ = std::move(other.what_);
  }
  return *this;
}

BootFile::~BootFile() {
  if (fd_ >= 0) close(fd_);
}

absl::Status BootFile::ReadAt(uint64_t offset, std::span<uint8_t> destination) const {
  uint64_t done = 0;
  while (done < destination.size()) {
    const ssize_t result =
        pread(fd_, destination.data() + done, destination.size() - done, offset + done);
    if (result < 0 && errno == EINTR) continue;
    if (result < 0) {
      return absl::ErrnoToStatus(errno, absl::StrFormat("cannot read %s file %s", what_, path_));
    }
    if (result == 0) {
      return absl::DataLossError(
          absl::StrFormat("%s file %s ended at %d bytes while being read (was it changed?)", what_,
                          path_, offset + done));
    }
    done += static_cast<uint64_t>(result);
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm::x86

#include "block/image_file.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvmini::block {
namespace {

constexpr uint64_t kSectorSize = 512;
// Used when the kernel cannot tell us (no STATX_DIOALIGN before Linux 6.1):
// every device and file system accepts 4 KiB-aligned direct I/O.
constexpr uint32_t kSafeDirectAlignment = 4096;

absl::Status ImageError(int error, const std::string& path, absl::string_view reason) {
  return absl::Status(absl::ErrnoToStatusCode(error),
                      absl::StrCat("disk image '", path, "': ", reason));
}

absl::Status OpenError(int error, const std::string& path, bool read_only) {
  switch (error) {
    case ENOENT:
      return ImageError(error, path, "no such file");
    case EACCES:
    case EPERM:
      return ImageError(error, path,
                        read_only ? "permission denied opening it for reading"
                                  : "permission denied opening it for reading and writing "
                                    "(grant write access, or attach it read-only)");
    case EISDIR:
      return ImageError(error, path, "is a directory, not a disk image");
    case EROFS:
      return ImageError(error, path, "is on a read-only file system; attach it read-only");
    default:
      return ImageError(error, path, absl::StrCat("cannot open it: ", strerror(error)));
  }
}

bool DirectIoRejected(const std::string& path, int flags) {
  // open() says EINVAL for O_DIRECT on file systems without direct I/O;
  // make sure that, and not something else, is why it failed.
  int fd = open(path.c_str(), flags & ~O_DIRECT);
  if (fd < 0) return false;
  close(fd);
  return true;
}

absl::Status FindDirectAlignment(int fd, const std::string& path, bool block_device,
                                 ImageFile& image) {
  if (block_device) {
    int logical_block = 0;
    if (ioctl(fd, BLKSSZGET, &logical_block) < 0 || logical_block <= 0) {
      return ImageError(errno, path, "cannot read the device's logical block size (BLKSSZGET)");
    }
    image.offset_alignment = static_cast<uint32_t>(logical_block);
    image.memory_alignment = static_cast<uint32_t>(logical_block);
    return absl::OkStatus();
  }
  struct statx details {};
  if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &details) == 0 &&
      (details.stx_mask & STATX_DIOALIGN) != 0) {
    if (details.stx_dio_offset_align == 0) {
      return ImageError(EINVAL, path,
                        "its file system does not support O_DIRECT (direct=on); "
                        "use direct=off or move the image");
    }
    image.offset_alignment = details.stx_dio_offset_align;
    image.memory_alignment = details.stx_dio_mem_align;
    return absl::OkStatus();
  }
  image.offset_alignment = kSafeDirectAlignment;
  image.memory_alignment = kSafeDirectAlignment;
  return absl::OkStatus();
}

absl::StatusOr<ImageFile> Inspect(int fd, const std::string& path, bool direct) {
  struct stat info {};
  if (fstat(fd, &info) < 0) return ImageError(errno, path, "fstat failed");
  ImageFile image;
  image.fd = fd;
  struct statfs file_system {};
  if (fstatfs(fd, &file_system) == 0) {
    image.memory_backed = file_system.f_type == TMPFS_MAGIC || file_system.f_type == RAMFS_MAGIC;
  }
  if (S_ISDIR(info.st_mode)) {
    return ImageError(EISDIR, path, "is a directory, not a disk image");
  } else if (S_ISREG(info.st_mode)) {
    image.size_bytes = static_cast<uint64_t>(info.st_size);
  } else if (S_ISBLK(info.st_mode)) {
    image.block_device = true;
    if (ioctl(fd, BLKGETSIZE64, &image.size_bytes) < 0) {
      return ImageError(errno, path, "cannot read the block device's size (BLKGETSIZE64)");
    }
  } else {
    return ImageError(EINVAL, path, "is neither a regular file nor a block device");
  }
  if (image.size_bytes % kSectorSize != 0) {
    return ImageError(EINVAL, path,
                      absl::StrCat("its size, ", image.size_bytes,
                                   " bytes, is not a multiple of 512 (a disk is made of "
                                   "512-byte sectors); resize it, e.g. truncate -s ",
                                   (image.size_bytes / kSectorSize + 1) * kSectorSize));
  }
  if (direct) {
    absl::Status alignment = FindDirectAlignment(fd, path, image.block_device, image);
    if (!alignment.ok()) return alignment;
  }
  return image;
}

}  // namespace

absl::StatusOr<ImageFile> OpenImageFile(const std::string& path, bool read_only, bool direct) {
  if (path.empty()) return absl::InvalidArgumentError("disk image: the path is empty");
  int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? O_DIRECT : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) {
    int error = errno;
    if (error == EINVAL && direct && DirectIoRejected(path, flags)) {
      return ImageError(error, path,
                        "its file system does not support O_DIRECT (direct=on); "
                        "use direct=off or move the image");
    }
    return OpenError(error, path, read_only);
  }
  absl::StatusOr<ImageFile> image = Inspect(fd, path, direct);
  if (!image.ok()) close(fd);
  return image;
}

}  // namespace kvmini::block

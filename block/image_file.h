// Opening a raw disk image: the checks a user gets a clear message from
// (missing file, directory, permissions, O_DIRECT support, size), and the
// facts the backend needs (size, O_DIRECT alignment).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvmini::block {

struct ImageFile {
  int fd = -1;
  uint64_t size_bytes = 0;
  // With O_DIRECT: what file offsets and transfer lengths must be a multiple
  // of, and what buffer addresses must be a multiple of. 1 without O_DIRECT.
  uint32_t offset_alignment = 1;
  uint32_t memory_alignment = 1;
  bool block_device = false;
  // On tmpfs or ramfs: every byte is in memory, so reads and writes never
  // wait for a device (the kernel still refuses RWF_NOWAIT there).
  bool memory_backed = false;
};

// Opens `path` (read-only or read-write, with O_DIRECT if `direct`). On
// error nothing stays open and the status names the path and the reason.
absl::StatusOr<ImageFile> OpenImageFile(const std::string& path, bool read_only, bool direct);

}  // namespace kvmini::block

// A kernel or initrd file opened for loading: its size, and reads at an
// offset straight into a destination buffer (guest memory), so loading
// costs one copy from the page cache and no intermediate buffer. Errors
// name the file and its role ("kernel", "initrd").
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvmini::vmm::x86 {

class BootFile {
 public:
  // "cannot open initrd file /x/y: No such file or directory".
  static absl::StatusOr<BootFile> Open(const std::string& path, std::string_view what);

  BootFile(BootFile&& other) noexcept;
  BootFile& operator=(BootFile&& other) noexcept;
  BootFile(const BootFile&) = delete;
  BootFile& operator=(const BootFile&) = delete;
  ~BootFile();

  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Fills `destination` with the bytes at `offset`; an error if the file
  // cannot be read or ends early.
  absl::Status ReadAt(uint64_t offset, std::span<uint8_t> destination) const;

 private:
  BootFile(int fd, uint64_t size, std::string path, std::string_view what)
      : fd_(fd), size_(size), path_(std::move(path)), what_(what) {}

  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
  std::string what_;
};

}  // namespace kvmini::vmm::x86

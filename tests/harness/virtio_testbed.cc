#include "tests/harness/virtio_testbed.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace kvmini::test {

absl::StatusOr<std::string> CreateTemporaryImage(uint64_t bytes) {
  const char* directory = std::getenv("KVMINI_TEST_IMAGE_DIR");
  std::string path = absl::StrCat(directory != nullptr ? directory : "/dev/shm",
                                  "/kvmini-test-image-XXXXXX");
  int fd = mkstemp(path.data());
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("creating test image ", path));
  int result = ftruncate(fd, static_cast<off_t>(bytes));
  int saved = errno;
  close(fd);
  if (result < 0) {
    unlink(path.c_str());
    return absl::ErrnoToStatus(saved, absl::StrCat("sizing test image ", path));
  }
  return path;
}

absl::StatusOr<std::unique_ptr<block::BlockBackend>> VirtioTestbed::Prepare(uint64_t ram_bytes,
                                                                            TestDiskOptions disk) {
  util::AioContext* main = util::AioContext::Main();
  if (main == nullptr || !main->InHomeThread()) {
    return absl::FailedPreconditionError("a device testbed needs the main loop thread");
  }
  absl::StatusOr<std::unique_ptr<hw::GuestMemory>> memory =
      hw::GuestMemory::Allocate({{0, ram_bytes}});
  if (!memory.ok()) return memory.status();
  memory_ = std::move(*memory);
  // Page 0 stays unused so that a zero address is never a valid buffer.
  allocator_ = std::make_unique<GuestAllocator>(4096, ram_bytes);

  if (disk.backend == TestBackend::kMemory) {
    auto backend =
        std::make_unique<MemoryBlockBackend>(disk.image_bytes, disk.block.read_only, *main);
    memory_backend_ = backend.get();
    return backend;
  }
  if (disk.image_path.empty()) {
    absl::StatusOr<std::string> path = CreateTemporaryImage(disk.image_bytes);
    if (!path.ok()) return path.status();
    disk.image_path = *path;
    delete_image_ = true;
  }
  image_path_ = disk.image_path;
  return block::BlockBackend::Open(disk.image_path, disk.block, *main);
}

absl::Status VirtioTestbed::Connect(std::unique_ptr<hw::virtio::VirtioDevice> device,
                                    util::AioContext* iothread) {
  absl::StatusOr<std::unique_ptr<hw::virtio::MmioTransport>> transport =
      hw::virtio::MmioTransport::Create(*memory_, std::move(device), {.iothread = iothread});
  if (!transport.ok()) return transport.status();
  transport_ = std::move(*transport);
  std::vector<int> notify_fds;
  for (const auto& notifier : transport_->queue_notifiers()) notify_fds.push_back(notifier.fd);
  driver_ = std::make_unique<VirtioDriver>(*transport_, *memory_, *allocator_,
                                           transport_->interrupt_fd(), std::move(notify_fds));
  return absl::OkStatus();
}

VirtioTestbed::~VirtioTestbed() {
  driver_.reset();
  transport_.reset();  // stops the queues and drains
  if (delete_image_) unlink(image_path_.c_str());
}

}  // namespace kvmini::test

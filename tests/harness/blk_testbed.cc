#include "tests/harness/blk_testbed.h"

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

absl::StatusOr<std::unique_ptr<BlkTestbed>> BlkTestbed::Create(BlkTestbedOptions options) {
  util::AioContext* main = util::AioContext::Main();
  if (main == nullptr || !main->InHomeThread()) {
    return absl::FailedPreconditionError("BlkTestbed needs the main loop thread");
  }
  std::unique_ptr<BlkTestbed> testbed(new BlkTestbed());
  absl::StatusOr<std::unique_ptr<hw::GuestMemory>> memory =
      hw::GuestMemory::Allocate({{0, options.ram_bytes}});
  if (!memory.ok()) return memory.status();
  testbed->memory_ = std::move(*memory);
  // Page 0 stays unused so that a zero address is never a valid buffer.
  testbed->allocator_ = std::make_unique<GuestAllocator>(4096, options.ram_bytes);

  std::unique_ptr<block::BlockBackend> backend;
  if (options.backend == BlkTestbedOptions::Backend::kMemory) {
    auto memory_backend =
        std::make_unique<MemoryBlockBackend>(options.image_bytes, options.block.read_only, *main);
    testbed->memory_backend_ = memory_backend.get();
    backend = std::move(memory_backend);
  } else {
    if (options.image_path.empty()) {
      absl::StatusOr<std::string> path = CreateTemporaryImage(options.image_bytes);
      if (!path.ok()) return path.status();
      options.image_path = *path;
      testbed->delete_image_ = true;
    }
    testbed->image_path_ = options.image_path;
    absl::StatusOr<std::unique_ptr<block::BlockBackend>> opened =
        block::BlockBackend::Open(options.image_path, options.block, *main);
    if (!opened.ok()) return opened.status();
    backend = std::move(*opened);
  }

  absl::StatusOr<std::unique_ptr<hw::virtio::VirtioBlk>> blk =
      hw::virtio::VirtioBlk::Create(std::move(backend), options.blk);
  if (!blk.ok()) return blk.status();
  testbed->blk_ = blk->get();
  absl::StatusOr<std::unique_ptr<hw::virtio::MmioTransport>> transport =
      hw::virtio::MmioTransport::Create(*testbed->memory_, std::move(*blk),
                                        {.iothread = options.iothread});
  if (!transport.ok()) return transport.status();
  testbed->transport_ = std::move(*transport);

  std::vector<int> notify_fds;
  for (const auto& notifier : testbed->transport_->queue_notifiers()) {
    notify_fds.push_back(notifier.fd);
  }
  testbed->driver_ = std::make_unique<VirtioDriver>(
      *testbed->transport_, *testbed->memory_, *testbed->allocator_,
      testbed->transport_->interrupt_fd(), std::move(notify_fds));
  testbed->blk_driver_ = std::make_unique<BlkDriver>(
      *testbed->driver_, *testbed->memory_, *testbed->allocator_, options.max_request_data);
  return testbed;
}

BlkTestbed::~BlkTestbed() {
  blk_driver_.reset();
  driver_.reset();
  transport_.reset();  // stops the queues and drains
  if (delete_image_) unlink(image_path_.c_str());
}

}  // namespace kvmini::test

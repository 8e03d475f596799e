// BlkTestbed: one virtio-blk device on virtio-mmio, wired up the way the
// machine wires it, but in a host process: guest RAM is a GuestMemory over
// anonymous memory, the "guest" is a BlkDriver, and the disk is either the
// real BlockBackend over an image file (the default) or a MemoryBlockBackend
// (failure injection, held completions).
//
// Create and destroy it in the main loop thread (a main AioContext must
// exist); IOThreads passed in must outlive it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/mmio_transport.h"
#include "hw/virtio/virtio_blk.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/memory_block_backend.h"
#include "tests/harness/virtio_driver.h"
#include "util/aio_context.h"

namespace kvmini::test {

struct BlkTestbedOptions {
  enum class Backend { kImageFile, kMemory };
  Backend backend = Backend::kImageFile;
  uint64_t image_bytes = 8 << 20;
  // kImageFile: an existing image to use; empty: a fresh zeroed file in
  // $KVMINI_TEST_IMAGE_DIR (default /dev/shm), deleted with the testbed.
  std::string image_path = {};
  block::BlockOptions block = {};
  hw::virtio::VirtioBlkOptions blk{.id = "vda", .serial = "kvmini-test-serial"};
  util::AioContext* iothread = nullptr;
  uint64_t ram_bytes = 128 << 20;
  uint32_t max_request_data = BlkDriver::kDefaultMaxData;
};

class BlkTestbed {
 public:
  static absl::StatusOr<std::unique_ptr<BlkTestbed>> Create(BlkTestbedOptions options);
  ~BlkTestbed();

  hw::GuestMemory& memory() { return *memory_; }
  hw::virtio::MmioTransport& transport() { return *transport_; }
  hw::virtio::VirtioBlk& blk() { return *blk_; }
  VirtioDriver& driver() { return *driver_; }
  BlkDriver& blk_driver() { return *blk_driver_; }
  GuestAllocator& allocator() { return *allocator_; }
  // Null unless Backend::kMemory.
  MemoryBlockBackend* memory_backend() { return memory_backend_; }
  // Empty unless Backend::kImageFile.
  const std::string& image_path() const { return image_path_; }

 private:
  BlkTestbed() = default;

  std::unique_ptr<hw::GuestMemory> memory_;
  std::unique_ptr<GuestAllocator> allocator_;
  std::unique_ptr<hw::virtio::MmioTransport> transport_;
  hw::virtio::VirtioBlk* blk_ = nullptr;
  MemoryBlockBackend* memory_backend_ = nullptr;
  std::unique_ptr<VirtioDriver> driver_;
  std::unique_ptr<BlkDriver> blk_driver_;
  std::string image_path_;
  bool delete_image_ = false;
};

// Creates a zeroed file of `bytes` in $KVMINI_TEST_IMAGE_DIR (default
// /dev/shm); returns its path.
absl::StatusOr<std::string> CreateTemporaryImage(uint64_t bytes);

}  // namespace kvmini::test

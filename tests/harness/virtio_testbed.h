// VirtioTestbed: what every device testbed (BlkTestbed, ScsiTestbed) sets up
// the way the machine does, but in a host process: guest RAM as a
// GuestMemory over anonymous memory with an allocator for driver
// structures, the disk's BlockBackend (the real one over an image file, or
// a MemoryBlockBackend for failure injection and held completions), the
// MmioTransport around the device, and a VirtioDriver playing the guest.
//
// Create and destroy testbeds in the main loop thread (a main AioContext
// must exist); IOThreads passed in must outlive them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/mmio_transport.h"
#include "hw/virtio/virtio_device.h"
#include "tests/harness/memory_block_backend.h"
#include "tests/harness/virtio_driver.h"
#include "util/aio_context.h"

namespace kvmini::test {

enum class TestBackend { kImageFile, kMemory };

struct TestDiskOptions {
  TestBackend backend = TestBackend::kImageFile;
  uint64_t image_bytes = 8 << 20;
  // kImageFile: an existing image to use; empty: a fresh zeroed file in
  // $KVMINI_TEST_IMAGE_DIR (default /dev/shm), deleted with the testbed.
  std::string image_path = {};
  block::BlockOptions block = {};
};

class VirtioTestbed {
 public:
  virtual ~VirtioTestbed();
  VirtioTestbed(const VirtioTestbed&) = delete;
  VirtioTestbed& operator=(const VirtioTestbed&) = delete;

  hw::GuestMemory& memory() { return *memory_; }
  hw::virtio::MmioTransport& transport() { return *transport_; }
  VirtioDriver& driver() { return *driver_; }
  GuestAllocator& allocator() { return *allocator_; }
  // Null unless TestBackend::kMemory.
  MemoryBlockBackend* memory_backend() { return memory_backend_; }
  // Empty unless TestBackend::kImageFile.
  const std::string& image_path() const { return image_path_; }

 protected:
  VirtioTestbed() = default;

  // First step of a testbed's Create: guest RAM and the disk's backend.
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> Prepare(uint64_t ram_bytes,
                                                               TestDiskOptions disk);
  // Second step: wraps the device in a transport and connects the driver.
  absl::Status Connect(std::unique_ptr<hw::virtio::VirtioDevice> device,
                       util::AioContext* iothread);

 private:
  std::unique_ptr<hw::GuestMemory> memory_;
  std::unique_ptr<GuestAllocator> allocator_;
  std::unique_ptr<hw::virtio::MmioTransport> transport_;
  MemoryBlockBackend* memory_backend_ = nullptr;
  std::unique_ptr<VirtioDriver> driver_;
  std::string image_path_;
  bool delete_image_ = false;
};

// Creates a zeroed file of `bytes` in $KVMINI_TEST_IMAGE_DIR (default
// /dev/shm); returns its path.
absl::StatusOr<std::string> CreateTemporaryImage(uint64_t bytes);

}  // namespace kvmini::test

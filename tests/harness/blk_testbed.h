// BlkTestbed: one virtio-blk device on virtio-mmio, wired up the way the
// machine wires it, but in a host process (see VirtioTestbed); the "guest"
// is a BlkDriver.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/virtio/virtio_blk.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/virtio_testbed.h"
#include "util/aio_context.h"

namespace kvmini::test {

struct BlkTestbedOptions {
  using Backend = TestBackend;
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

class BlkTestbed final : public VirtioTestbed {
 public:
  static absl::StatusOr<std::unique_ptr<BlkTestbed>> Create(BlkTestbedOptions options);

  hw::virtio::VirtioBlk& blk() { return *blk_; }
  BlkDriver& blk_driver() { return *blk_driver_; }

 private:
  BlkTestbed() = default;

  hw::virtio::VirtioBlk* blk_ = nullptr;
  std::unique_ptr<BlkDriver> blk_driver_;
};

}  // namespace kvmini::test

#include "tests/harness/blk_testbed.h"

namespace kvmini::test {

absl::StatusOr<std::unique_ptr<BlkTestbed>> BlkTestbed::Create(BlkTestbedOptions options) {
  std::unique_ptr<BlkTestbed> testbed(new BlkTestbed());
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> backend = testbed->Prepare(
      options.ram_bytes,
      {options.backend, options.image_bytes, options.image_path, options.block});
  if (!backend.ok()) return backend.status();
  absl::StatusOr<std::unique_ptr<hw::virtio::VirtioBlk>> blk =
      hw::virtio::VirtioBlk::Create(std::move(*backend), options.blk);
  if (!blk.ok()) return blk.status();
  testbed->blk_ = blk->get();
  absl::Status connected = testbed->Connect(std::move(*blk), options.iothread);
  if (!connected.ok()) return connected;
  testbed->blk_driver_ = std::make_unique<BlkDriver>(
      testbed->driver(), testbed->memory(), testbed->allocator(), options.max_request_data);
  return testbed;
}

}  // namespace kvmini::test

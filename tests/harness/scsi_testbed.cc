#include "tests/harness/scsi_testbed.h"

namespace kvmini::test {

absl::StatusOr<std::unique_ptr<ScsiTestbed>> ScsiTestbed::Create(ScsiTestbedOptions options) {
  std::unique_ptr<ScsiTestbed> testbed(new ScsiTestbed());
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> backend = testbed->Prepare(
      options.ram_bytes,
      {options.backend, options.image_bytes, options.image_path, options.block});
  if (!backend.ok()) return backend.status();
  absl::StatusOr<std::unique_ptr<hw::virtio::VirtioScsi>> scsi =
      hw::virtio::VirtioScsi::Create(std::move(*backend), options.scsi);
  if (!scsi.ok()) return scsi.status();
  testbed->scsi_ = scsi->get();
  absl::Status connected = testbed->Connect(std::move(*scsi), options.iothread);
  if (!connected.ok()) return connected;
  testbed->scsi_driver_ = std::make_unique<ScsiDriver>(
      testbed->driver(), testbed->memory(), testbed->allocator(), options.max_request_data);
  return testbed;
}

}  // namespace kvmini::test

// ScsiTestbed: one virtio-scsi controller (one disk at target 0, LUN 0) on
// virtio-mmio, wired up the way the machine wires it, but in a host process
// (see VirtioTestbed); the "guest" is a ScsiDriver.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/virtio/virtio_scsi.h"
#include "tests/harness/scsi_driver.h"
#include "tests/harness/virtio_testbed.h"
#include "util/aio_context.h"

namespace kvmini::test {

struct ScsiTestbedOptions {
  TestBackend backend = TestBackend::kImageFile;
  uint64_t image_bytes = 8 << 20;
  // kImageFile: an existing image to use; empty: a fresh zeroed file in
  // $KVMINI_TEST_IMAGE_DIR (default /dev/shm), deleted with the testbed.
  std::string image_path = {};
  block::BlockOptions block = {};
  hw::virtio::VirtioScsiOptions scsi{.id = "sda",
                                     .disk = {.serial = "kvmini-scsi-serial"}};
  util::AioContext* iothread = nullptr;
  uint64_t ram_bytes = 128 << 20;
  uint32_t max_request_data = ScsiDriver::kDefaultMaxData;
};

class ScsiTestbed final : public VirtioTestbed {
 public:
  static absl::StatusOr<std::unique_ptr<ScsiTestbed>> Create(ScsiTestbedOptions options);

  hw::virtio::VirtioScsi& scsi() { return *scsi_; }
  ScsiDriver& scsi_driver() { return *scsi_driver_; }

 private:
  ScsiTestbed() = default;

  hw::virtio::VirtioScsi* scsi_ = nullptr;
  std::unique_ptr<ScsiDriver> scsi_driver_;
};

}  // namespace kvmini::test

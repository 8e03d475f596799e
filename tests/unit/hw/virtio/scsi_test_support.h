// Shared set-up for the virtio-scsi device tests: a main loop in the test
// thread and a ScsiTestbed, plus CDB builders and readers of what the
// device answered.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "hw/scsi/big_endian.h"
#include "hw/scsi/scsi_protocol.h"
#include "hw/virtio/virtio_scsi.h"
#include "tests/harness/scsi_testbed.h"
#include "tests/unit/hw/scsi/scsi_cdb_builders.h"
#include "util/aio_context.h"

namespace kvmini::test {

namespace vs = hw::virtio::virtio_scsi;
namespace scsi_cdb = hw::scsi::testing;
namespace opcode = hw::scsi::opcode;

// What Linux 6.1's virtio_scsi accepts from this device: the transport
// features (the device offers no virtio-scsi ones; asking costs nothing).
inline constexpr uint64_t kLinuxScsiFeatures =
    hw::virtio::feature::kVersion1 | hw::virtio::feature::kRingIndirectDesc |
    hw::virtio::feature::kRingEventIdx | vs::kFeatureHotplug | vs::kFeatureChange |
    vs::kFeatureT10Pi;

inline std::array<uint8_t, 8> Lun(uint8_t target, uint16_t lun) {
  return hw::scsi::EncodeVirtioLun(target, lun);
}

// Key, ASC and ASCQ of fixed-format sense data (0xff when too short).
inline hw::scsi::SenseCode SenseOf(const ScsiResponse& response) {
  if (response.sense.size() < 14) return {0xff, 0xff, 0xff};
  return {static_cast<uint8_t>(response.sense[2] & 0x0f), response.sense[12], response.sense[13]};
}

inline std::vector<uint8_t> Read10(uint32_t lba, uint16_t blocks) {
  return scsi_cdb::Cdb10(opcode::kRead10, 0, lba, blocks);
}
inline std::vector<uint8_t> Write10(uint32_t lba, uint16_t blocks) {
  return scsi_cdb::Cdb10(opcode::kWrite10, 0, lba, blocks);
}
inline std::vector<uint8_t> TestUnitReady() { return std::vector<uint8_t>(6, 0); }

inline std::vector<uint8_t> ScsiPattern(size_t length, uint8_t seed) {
  std::vector<uint8_t> bytes(length);
  for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 13 + (i >> 9));
  return bytes;
}

class ScsiDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto main = util::AioContext::CreateMain();
    ASSERT_TRUE(main.ok()) << main.status();
    main_ = std::move(*main);
  }
  void TearDown() override {
    testbed_.reset();
    main_.reset();
  }

  // Creates the testbed and starts the driver on `request_queues` request
  // queues of `size` entries with the given cdb_size and sense_size.
  void StartDevice(ScsiTestbedOptions options = {}, uint16_t request_queues = 1,
                   uint16_t size = 128, uint32_t cdb_size = vs::kDefaultCdbSize,
                   uint32_t sense_size = vs::kDefaultSenseSize) {
    auto testbed = ScsiTestbed::Create(std::move(options));
    ASSERT_TRUE(testbed.ok()) << testbed.status();
    testbed_ = std::move(*testbed);
    absl::Status started =
        scsi().Start(kLinuxScsiFeatures, request_queues, size, cdb_size, sense_size);
    ASSERT_TRUE(started.ok()) << started;
  }
  ScsiDriver& scsi() { return testbed_->scsi_driver(); }
  VirtioDriver& driver() { return testbed_->driver(); }
  hw::virtio::VirtioScsi& device() { return testbed_->scsi(); }

  // Runs one command and expects an answer.
  ScsiResponse Run(const ScsiCommand& command, uint16_t request_queue = 0) {
    absl::StatusOr<ScsiResponse> response = scsi().Run(command, request_queue);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : ScsiResponse{};
  }
  uint8_t Tmf(uint32_t subtype, std::array<uint8_t, 8> lun = Lun(0, 0), uint64_t tag = 0) {
    absl::StatusOr<ControlResponse> response = scsi().RunTaskManagement(subtype, lun, tag);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->response : 0xff;
  }

  std::unique_ptr<util::AioContext> main_;
  std::unique_ptr<ScsiTestbed> testbed_;
};

}  // namespace kvmini::test

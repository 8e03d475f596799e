// Shared set-up for the virtio-blk device tests: a main loop in the test
// thread and a BlkTestbed, plus small helpers to build request payloads and
// look at the image file from the host side.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/harness/blk_testbed.h"
#include "util/aio_context.h"

namespace kvmini::test {

inline std::vector<uint8_t> Pattern(size_t length, uint8_t seed) {
  std::vector<uint8_t> bytes(length);
  for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return bytes;
}

inline std::vector<uint8_t> ReadImage(const std::string& path, uint64_t offset, size_t length) {
  std::vector<uint8_t> bytes(length);
  int fd = open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(pread(fd, bytes.data(), length, static_cast<off_t>(offset)),
            static_cast<ssize_t>(length));
  close(fd);
  return bytes;
}

inline void WriteImage(const std::string& path, uint64_t offset, const std::vector<uint8_t>& bytes) {
  int fd = open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset)),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
}

inline std::vector<uint8_t> Segments(
    std::initializer_list<hw::virtio::blk::DiscardSegment> segments) {
  std::vector<uint8_t> bytes(segments.size() * sizeof(hw::virtio::blk::DiscardSegment));
  std::memcpy(bytes.data(), segments.begin(), bytes.size());
  return bytes;
}

// The feature set a Linux 6.1 guest accepts from this device.
inline constexpr uint64_t kLinuxFeatures =
    hw::virtio::feature::kVersion1 | hw::virtio::feature::kRingIndirectDesc |
    hw::virtio::feature::kRingEventIdx | hw::virtio::blk::kFeatureSizeMax |
    hw::virtio::blk::kFeatureSegMax | hw::virtio::blk::kFeatureBlockSize |
    hw::virtio::blk::kFeatureFlush | hw::virtio::blk::kFeatureTopology |
    hw::virtio::blk::kFeatureMultiQueue | hw::virtio::blk::kFeatureDiscard |
    hw::virtio::blk::kFeatureWriteZeroes | hw::virtio::blk::kFeatureReadOnly;

class MainLoopTest : public ::testing::Test {
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

  // Creates the testbed and starts the driver with `features` on `queues`
  // queues of `size` entries.
  void StartDevice(BlkTestbedOptions options, uint64_t features = kLinuxFeatures,
                   uint16_t queues = 1, uint16_t size = 128) {
    auto testbed = BlkTestbed::Create(std::move(options));
    ASSERT_TRUE(testbed.ok()) << testbed.status();
    testbed_ = std::move(*testbed);
    ASSERT_TRUE(testbed_->blk_driver().Start(features, queues, size).ok());
  }
  BlkDriver& blk() { return testbed_->blk_driver(); }
  VirtioDriver& driver() { return testbed_->driver(); }

  std::unique_ptr<util::AioContext> main_;
  std::unique_ptr<BlkTestbed> testbed_;
};

}  // namespace kvmini::test

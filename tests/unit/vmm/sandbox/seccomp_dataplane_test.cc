// A virtio-blk dataplane served by a filtered IOThread: the device
// harness plays the guest (kicks through the ioeventfd, interrupts through
// the irqfd), the IOThread processes the queue and completes requests
// through a real BlockBackend (io_uring or the thread pool), and the
// dataplane is stopped and restarted in between. A forbidden call in the
// IOThread would end the test binary with SIGSYS. Label concurrency too.
#include <cstdint>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "hw/virtio/virtio_blk.h"
#include "hw/virtio/virtio_constants.h"
#include "tests/harness/blk_testbed.h"
#include "tests/unit/block/block_test_support.h"
#include "tests/unit/vmm/sandbox/sandbox_test_support.h"
#include "util/aio_wait.h"
#include "util/iothread.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {
namespace {

namespace blk = hw::virtio::blk;

constexpr uint64_t kFeatures =
    hw::virtio::feature::kVersion1 | hw::virtio::feature::kRingEventIdx | blk::kFeatureFlush;

class FilteredDataplaneTest : public block::testing::MainLoopTest,
                              public ::testing::WithParamInterface<block::AioEngine> {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    auto thread = testing::StartFilteredIoThread("sandbox-io");
    ASSERT_TRUE(thread.ok()) << thread.status();
    iothread_ = std::move(*thread);
  }
  void TearDown() override {
    testbed_.reset();  // detaches from the IOThread first
    if (iothread_ != nullptr) iothread_->Stop();
    iothread_.reset();
    MainLoopTest::TearDown();
  }

  // Writes a block at `sector`, reads it back, compares; then a flush.
  void WriteReadFlush(uint64_t sector, uint8_t seed) {
    std::vector<uint8_t> data(4096);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(seed + i * 13);
    test::BlkDriver& driver = testbed_->blk_driver();
    auto written = driver.Run(0, {.type = blk::kTypeOut, .sector = sector, .out_data = data});
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(written->status, blk::kStatusOk);
    auto read = driver.Run(0, {.type = blk::kTypeIn, .sector = sector, .in_length = 4096,
                               .segment_size = 1024});
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->status, blk::kStatusOk);
    EXPECT_TRUE(read->in_data == data) << "sector " << sector;
    auto flushed = driver.Run(0, {.type = blk::kTypeFlush});
    ASSERT_TRUE(flushed.ok()) << flushed.status();
    EXPECT_EQ(flushed->status, blk::kStatusOk);
  }

  std::unique_ptr<util::IOThread> iothread_;
  std::unique_ptr<test::BlkTestbed> testbed_;
};

TEST_P(FilteredDataplaneTest, QueueServedAndStoppedAndRestartedOnTheFilteredIoThread) {
  test::BlkTestbedOptions options;
  options.iothread = &iothread_->context();
  options.block.engine = GetParam();
  auto testbed = test::BlkTestbed::Create(options);
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  ASSERT_TRUE(testbed_->blk_driver().Start(kFeatures, 1, 64).ok());
  ASSERT_TRUE(testbed_->transport().dataplane_status().running);
  ASSERT_EQ(&testbed_->blk().backend().context(), &iothread_->context());

  for (uint64_t i = 0; i < 20; ++i) WriteReadFlush(i * 8, static_cast<uint8_t>(i));
  testbed_->transport().StopDataplaneAndWait();
  EXPECT_FALSE(testbed_->transport().dataplane_status().running);
  WriteReadFlush(512, 0x40);  // served by the main loop meanwhile
  testbed_->transport().StartDataplaneAndWait();
  EXPECT_TRUE(testbed_->transport().dataplane_status().running);
  for (uint64_t i = 0; i < 20; ++i) WriteReadFlush(1024 + i * 8, static_cast<uint8_t>(0x80 + i));
}

INSTANTIATE_TEST_SUITE_P(Engines, FilteredDataplaneTest,
                         ::testing::Values(block::AioEngine::kIoUring,
                                           block::AioEngine::kThreads),
                         [](const ::testing::TestParamInfo<block::AioEngine>& info) {
                           return info.param == block::AioEngine::kIoUring ? "IoUring"
                                                                           : "ThreadPool";
                         });

}  // namespace
}  // namespace kvmini::vmm::sandbox

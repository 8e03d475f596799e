// Notification suppression (EVENT_IDX both ways, NO_INTERRUPT), two queues,
// and device reset with requests in flight, with the queues served by the
// main loop.
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;
namespace mmio = hw::virtio::mmio;
namespace feature = hw::virtio::feature;

class NotificationTest : public MainLoopTest {
 protected:
  // Runs the main loop (without consuming interrupts) until `done()`.
  bool PumpUntil(absl::FunctionRef<bool()> done) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (!done()) {
      if (absl::Now() > deadline) return false;
      main_->Poll(/*blocking=*/false);
    }
    return true;
  }
  // Posts a flush on queue 0, kicks, and runs until it is used.
  void FlushAndWaitUsed() {
    DriverQueue& queue = driver().queue(0);
    const uint16_t before = queue.used_index();
    ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
    driver().Kick(0);
    ASSERT_TRUE(PumpUntil([&] { return queue.used_index() != before; }));
    // Completions are published by a bottom half: let it and the
    // interrupt decision run.
    while (main_->Poll(false)) {
    }
  }
};

TEST_F(NotificationTest, EventIdxInterruptsOnlyWhenUsedIndexPassesUsedEvent) {
  StartDevice({});
  ASSERT_TRUE(blk().event_idx());
  DriverQueue& queue = driver().queue(0);
  EXPECT_FALSE(driver().TakeInterrupt());

  // used_event far ahead: completions arrive without an interrupt.
  queue.SetUsedEvent(queue.used_index() + 3);
  for (int i = 0; i < 3; ++i) {
    FlushAndWaitUsed();
    EXPECT_FALSE(driver().TakeInterrupt()) << "completion " << i << " must be silent";
  }
  // The 4th completion moves the used index past used_event: interrupt.
  FlushAndWaitUsed();
  EXPECT_TRUE(driver().TakeInterrupt());
  EXPECT_NE(driver().AckInterrupt() & hw::virtio::kInterruptUsedBuffer, 0u);
  EXPECT_EQ(blk().Collect(0).size(), 4u);  // also re-arms used_event

  FlushAndWaitUsed();
  EXPECT_TRUE(driver().TakeInterrupt());
}

TEST_F(NotificationTest, EventIdxDevicePublishesWhereItWantsTheNextKick) {
  StartDevice({});
  DriverQueue& queue = driver().queue(0);
  for (int i = 0; i < 5; ++i) FlushAndWaitUsed();
  // After draining the ring the device asks to be kicked for the next entry.
  EXPECT_EQ(queue.avail_event(), queue.avail_index());
  const uint16_t old_index = queue.avail_index();
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
  EXPECT_TRUE(queue.KickNeeded(old_index, /*event_idx=*/true));
  // Publishing more without a kick while the device has not caught up:
  // no second kick is needed for the same window.
  const uint16_t second_old = queue.avail_index();
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
  EXPECT_FALSE(queue.KickNeeded(second_old, /*event_idx=*/true));
  driver().Kick(0);
  EXPECT_TRUE(PumpUntil([&] { return queue.used_index() == 7; }));
}

TEST_F(NotificationTest, WithoutEventIdxNoInterruptFlagSuppressesInterrupts) {
  StartDevice({}, kLinuxFeatures & ~feature::kRingEventIdx);
  ASSERT_FALSE(blk().event_idx());
  DriverQueue& queue = driver().queue(0);
  queue.SetNoInterrupt(true);
  FlushAndWaitUsed();
  EXPECT_FALSE(driver().TakeInterrupt());
  queue.SetNoInterrupt(false);
  FlushAndWaitUsed();
  EXPECT_TRUE(driver().TakeInterrupt());
  // Without EVENT_IDX the device never asks the driver not to kick.
  EXPECT_TRUE(queue.KickNeeded(queue.avail_index(), /*event_idx=*/false));
}

TEST_F(NotificationTest, InterruptStatusStaysSetUntilAcknowledged) {
  StartDevice({});
  FlushAndWaitUsed();
  EXPECT_TRUE(driver().TakeInterrupt());
  blk().Collect(0);
  FlushAndWaitUsed();
  EXPECT_EQ(driver().Read32(mmio::kInterruptStatus), hw::virtio::kInterruptUsedBuffer);
  driver().Write32(mmio::kInterruptAck, hw::virtio::kInterruptConfigChange);  // other bit
  EXPECT_EQ(driver().Read32(mmio::kInterruptStatus), hw::virtio::kInterruptUsedBuffer);
  driver().Write32(mmio::kInterruptAck, hw::virtio::kInterruptUsedBuffer);
  EXPECT_EQ(driver().Read32(mmio::kInterruptStatus), 0u);
}

TEST_F(NotificationTest, TwoQueuesServeIndependently) {
  BlkTestbedOptions options;
  options.blk.num_queues = 2;
  StartDevice(options, kLinuxFeatures, 2, 64);
  const std::vector<uint8_t> first = Pattern(4096, 1), second = Pattern(4096, 2);
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeOut, .sector = 0, .out_data = first}).ok());
  ASSERT_TRUE(blk().Post(1, {.type = blk::kTypeOut, .sector = 8, .out_data = second}).ok());
  driver().Kick(1);  // only queue 1 kicked: queue 0 must wait for its own kick
  ASSERT_TRUE(PumpUntil([&] { return driver().queue(1).used_index() == 1; }));
  for (int i = 0; i < 20; ++i) main_->Poll(false);
  EXPECT_EQ(driver().queue(0).used_index(), 0);
  driver().Kick(0);
  ASSERT_TRUE(PumpUntil([&] { return driver().queue(0).used_index() == 1; }));
  auto read0 = blk().Run(1, {.type = blk::kTypeIn, .sector = 0, .in_length = 4096});
  auto read1 = blk().Run(0, {.type = blk::kTypeIn, .sector = 8, .in_length = 4096});
  EXPECT_EQ(read0->in_data, first);
  EXPECT_EQ(read1->in_data, second);
}

TEST_F(NotificationTest, ResetWaitsForRequestsInFlightAndThenLeavesGuestMemoryAlone) {
  StartDevice({.backend = BlkTestbedOptions::Backend::kMemory}, kLinuxFeatures, 1, 64);
  MemoryBlockBackend& backend = *testbed_->memory_backend();
  backend.HoldCompletions(true);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeOut, .sector = uint64_t(i) * 8,
                               .out_data = Pattern(4096, i)})
                    .ok());
  }
  driver().Kick(0);
  ASSERT_TRUE(PumpUntil([&] { return backend.held() == 8; }));
  EXPECT_EQ(testbed_->blk().stats().in_flight, 8u);

  // The completions come back 50 ms into the reset, while it drains.
  backend.HoldCompletions(false);
  main_->AddTimer(absl::Now() + absl::Milliseconds(50), [&] { backend.ReleaseHeld(); });
  const absl::Time start = absl::Now();
  driver().Write32(mmio::kStatus, 0);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(40)) << "reset must wait for the drain";

  DriverQueue& queue = driver().queue(0);
  EXPECT_EQ(queue.used_index(), 8) << "every request completed before the reset finished";
  EXPECT_EQ(driver().status(), 0);
  EXPECT_EQ(driver().Read32(mmio::kInterruptStatus), 0u);
  driver().Write32(mmio::kQueueSel, 0);
  EXPECT_EQ(driver().Read32(mmio::kQueueReady), 0u);
  EXPECT_EQ(testbed_->blk().stats().in_flight, 0u);

  // Nothing touches guest memory after the reset, even if the driver
  // kicks the old queue.
  std::vector<uint8_t> before(64 * 1024), after(64 * 1024);
  ASSERT_TRUE(testbed_->memory().Read(queue.descriptor_table(), before).ok());
  driver().Kick(0);
  for (int i = 0; i < 50; ++i) main_->Poll(false);
  ASSERT_TRUE(testbed_->memory().Read(queue.descriptor_table(), after).ok());
  EXPECT_EQ(before, after);

  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  auto read = blk().Run(0, {.type = blk::kTypeIn, .sector = 56, .in_length = 4096});
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->in_data, Pattern(4096, 7));
}

}  // namespace
}  // namespace kvmini::test

// The dataplane's poll check on the available ring: an IOThread that is
// spinning before it sleeps serves requests the driver made available
// without a kick, and once the queues leave the IOThread its check is gone
// with its ioeventfd handler (a stale one would process the queue in the
// wrong thread). Runs under TSan too (label concurrency).
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/with_iothreads.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;

constexpr int64_t kPollMaxNs = 200'000'000;

class DataplanePollTest : public WithIOThreads<MainLoopTest> {
 protected:
  // Wakes the IOThread at intervals a little longer than its poll window,
  // which is what makes the window grow, until it spins for 100 ms or more.
  void GrowIoThreadWindow() {
    util::AioContext& context = iothread(0);
    for (int round = 0; round < 40 && context.poll_window_ns() < kPollMaxNs / 2; ++round) {
      int64_t window = context.poll_window_ns();
      int64_t delay = std::min(std::max<int64_t>(2 * window, 1'000'000), (window + kPollMaxNs) / 2);
      absl::SleepFor(absl::Nanoseconds(delay));
      context.ScheduleOneshot([] {});
    }
    // The last wake-up is adapted for once the loop has slept again.
    absl::SleepFor(absl::Milliseconds(5));
    ASSERT_GE(context.poll_window_ns(), kPollMaxNs / 4);
  }

  // Posts a flush without kicking, then keeps waking the IOThread (never
  // through the queue's eventfd) so that it spins again and again; returns
  // whether the request was answered within `timeout`.
  bool AnsweredWithoutAKick(absl::Duration timeout) {
    EXPECT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
    return driver().WaitUntil(
        [&] {
          iothread(0).ScheduleOneshot([] {});
          return blk().Collect(0).size() == 1;
        },
        timeout);
  }
};

TEST_F(DataplanePollTest, SpinningIoThreadServesARequestThatWasNotKicked) {
  iothread(0).SetPollMaxNs(kPollMaxNs);
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  ASSERT_TRUE(Running());
  GrowIoThreadWindow();
  EXPECT_TRUE(AnsweredWithoutAKick(absl::Seconds(5)));
}

TEST_F(DataplanePollTest, WithPollingOffARequestThatWasNotKickedWaitsForItsKick) {
  iothread(0).SetPollMaxNs(0);
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  EXPECT_FALSE(AnsweredWithoutAKick(absl::Milliseconds(200)));
  driver().Kick(0);
  EXPECT_TRUE(driver().WaitUntil([&] { return blk().Collect(0).size() == 1; }, absl::Seconds(5)));
}

TEST_F(DataplanePollTest, StoppedDataplaneLeavesNoPollCheckOnTheIoThread) {
  iothread(0).SetPollMaxNs(kPollMaxNs);
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  GrowIoThreadWindow();
  transport().StopDataplaneAndWait();
  ASSERT_FALSE(Running());
  // The queue now belongs to the main loop. A check left on the IOThread
  // would serve it there (virtio-blk aborts on that: its backend is on the
  // main loop); the main loop has no reason to look without a kick.
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
  for (int i = 0; i < 20; ++i) {
    iothread(0).ScheduleOneshot([] {});
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(testbed_->blk().stats().completed, 0u);
  driver().Kick(0);
  EXPECT_TRUE(driver().WaitUntil([&] { return blk().Collect(0).size() == 1; }, absl::Seconds(5)));
  // Back on the IOThread, the check is there again.
  transport().StartDataplaneAndWait();
  ASSERT_TRUE(Running());
  GrowIoThreadWindow();
  EXPECT_TRUE(AnsweredWithoutAKick(absl::Seconds(5)));
}

}  // namespace
}  // namespace kvmini::test

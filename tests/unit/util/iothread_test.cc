#include "util/iothread.h"

#include <sys/prctl.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"

namespace kvmini::util {
namespace {

TEST(IOThreadTest, RunsBottomHalvesInItsOwnThreadWithItsContextCurrent) {
  auto thread = IOThread::Create("io-test");
  ASSERT_TRUE(thread.ok()) << thread.status();
  std::atomic<bool> done{false};
  std::atomic<bool> right_context{false};
  std::atomic<bool> other_thread{false};
  char name[16] = {};
  (*thread)->context().ScheduleOneshot([&] {
    right_context = AioContext::Current() == &(*thread)->context();
    other_thread = gettid() != getpid();
    prctl(PR_GET_NAME, name);
    done = true;
  });
  while (!done) std::this_thread::yield();
  EXPECT_TRUE(right_context);
  EXPECT_TRUE(other_thread);
  EXPECT_STREQ(name, "io-test");
  EXPECT_NE((*thread)->thread_id(), 0);
}

TEST(IOThreadTest, StopRunsPendingBottomHalvesAndWhatTheySchedule) {
  auto thread = IOThread::Create("io-stop");
  ASSERT_TRUE(thread.ok());
  AioContext& context = (*thread)->context();
  std::atomic<int> ran{0};
  // Keep the thread busy so the BHs below are still pending at Stop().
  std::atomic<bool> release{false};
  context.ScheduleOneshot([&] {
    while (!release) std::this_thread::yield();
  });
  for (int i = 0; i < 100; ++i) {
    context.ScheduleOneshot([&] {
      ran.fetch_add(1);
      context.ScheduleOneshot([&] { ran.fetch_add(1); });
    });
  }
  std::thread stopper([&] { (*thread)->Stop(); });
  absl::SleepFor(absl::Milliseconds(10));
  release = true;
  stopper.join();
  EXPECT_EQ(ran.load(), 200);
  (*thread)->Stop();  // idempotent
}

TEST(IOThreadTest, LongNamesAreTruncatedForTheKernel) {
  auto thread = IOThread::Create("a-very-long-iothread-name");
  ASSERT_TRUE(thread.ok());
  EXPECT_EQ((*thread)->id(), "a-very-long-iothread-name");
}

}  // namespace
}  // namespace kvmini::util

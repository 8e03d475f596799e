#include "util/aio_wait.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "util/iothread.h"
#include "util/mutex.h"

namespace kvmini::util {
namespace {

class AioWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto main = AioContext::CreateMain();
    ASSERT_TRUE(main.ok());
    main_ = std::move(*main);
    auto iothread = IOThread::Create("wait-test");
    ASSERT_TRUE(iothread.ok());
    iothread_ = std::move(*iothread);
  }
  void TearDown() override {
    iothread_.reset();
    main_.reset();
  }

  std::unique_ptr<AioContext> main_;
  std::unique_ptr<IOThread> iothread_;
};

TEST_F(AioWaitTest, BhOneshotRunsInTheTargetThreadAndReturnsAfterIt) {
  std::atomic<bool> in_iothread{false};
  bool ran = false;
  AioWaitBhOneshot(iothread_->context(), [&] {
    in_iothread = AioContext::Current() == &iothread_->context();
    ran = true;
  });
  EXPECT_TRUE(ran);
  EXPECT_TRUE(in_iothread);
}

TEST_F(AioWaitTest, BhOneshotOnTheMainContextRunsDirectly) {
  bool ran = false;
  AioWaitBhOneshot(*main_, [&] { ran = true; });
  EXPECT_TRUE(ran);
}

TEST_F(AioWaitTest, WaitKeepsServingTheMainContext) {
  // The IOThread's BH needs the main loop to run something before it can
  // finish: only works if the waiting main thread keeps polling.
  std::atomic<bool> main_work_ran{false};
  AioWaitBhOneshot(iothread_->context(), [&] {
    main_->ScheduleOneshot([&] { main_work_ran = true; });
    while (!main_work_ran) std::this_thread::yield();
  });
  EXPECT_TRUE(main_work_ran);
}

// The deadlock the design exists for: while the main thread waits, the BH
// posts work to the main context and a third thread blocks until that work
// ran; the BH in turn waits for the third thread.
TEST_F(AioWaitTest, MainLoopWorkNeededByAnotherThreadRunsDuringTheWait) {
  std::atomic<bool> posted{false}, main_work_ran{false}, helper_done{false};
  std::thread helper([&] {
    while (!posted) std::this_thread::yield();
    while (!main_work_ran) std::this_thread::yield();
    helper_done = true;
  });
  AioWaitBhOneshot(iothread_->context(), [&] {
    main_->ScheduleOneshot([&] { main_work_ran = true; });
    posted = true;
    while (!helper_done) std::this_thread::yield();
  });
  helper.join();
  EXPECT_TRUE(helper_done);
}

TEST_F(AioWaitTest, WaitWhileUnlockedReturnsWhenAnotherThreadChangesTheConditionAndKicks) {
  std::atomic<bool> flag{false};
  std::thread setter([&] {
    absl::SleepFor(absl::Milliseconds(20));
    flag = true;
    AioWaitKick();
  });
  AioWaitWhileUnlocked([&] { return !flag.load(); });
  setter.join();
  EXPECT_TRUE(flag);
}

TEST_F(AioWaitTest, NestedWaitsFromMainLoopCallbacks) {
  bool inner_done = false;
  AioWaitBhOneshot(iothread_->context(), [&] {
    main_->ScheduleOneshot([&] {
      // A main-loop callback that itself waits on the IOThread.
      AioWaitBhOneshot(iothread_->context(), [] {});
      inner_done = true;
    });
  });
  AioWaitWhileUnlocked([&] { return !inner_done; });
  EXPECT_TRUE(inner_done);
}

using AioWaitDeathTest = AioWaitTest;

TEST_F(AioWaitDeathTest, BhOneshotWithALockHeldAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Mutex lock;
  EXPECT_DEATH(
      {
        lock.Lock();
        AioWaitBhOneshot(iothread_->context(), [] {});
        lock.Unlock();
      },
      "while holding a lock");
}

TEST_F(AioWaitDeathTest, WaitFromAnIOThreadAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        std::atomic<bool> done{false};
        iothread_->context().ScheduleOneshot([&] {
          AioWaitWhileUnlocked([] { return false; });
          done = true;
        });
        while (!done) std::this_thread::yield();
      },
      "must be called from the main loop thread");
}

}  // namespace
}  // namespace kvmini::util

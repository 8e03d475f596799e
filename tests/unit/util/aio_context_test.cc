#include "util/aio_context.h"

#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "util/event_notifier.h"

namespace kvmini::util {
namespace {

std::unique_ptr<AioContext> NewContext() {
  absl::StatusOr<std::unique_ptr<AioContext>> context = AioContext::Create("test");
  EXPECT_TRUE(context.ok()) << context.status();
  return std::move(*context);
}

TEST(AioContextTest, NonBlockingPollWithNothingToDoMakesNoProgress) {
  auto context = NewContext();
  EXPECT_FALSE(context->Poll(false));
}

TEST(AioContextTest, OneshotRunsOnceInPoll) {
  auto context = NewContext();
  int runs = 0;
  context->ScheduleOneshot([&] { ++runs; });
  EXPECT_EQ(runs, 0);
  EXPECT_TRUE(context->Poll(false));
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(context->Poll(false));
  EXPECT_EQ(runs, 1);
}

TEST(AioContextTest, BottomHalvesRunInSchedulingOrder) {
  auto context = NewContext();
  std::vector<int> order;
  for (int i = 0; i < 5; ++i) context->ScheduleOneshot([&order, i] { order.push_back(i); });
  context->Poll(false);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(AioContextTest, BottomHalfScheduledFromInsideABottomHalfRunsWithoutBlocking) {
  auto context = NewContext();
  bool inner_ran = false;
  context->ScheduleOneshot([&] { context->ScheduleOneshot([&] { inner_ran = true; }); });
  // A blocking poll must not sleep while the inner BH is pending: both run
  // within two polls even though no fd ever becomes ready.
  context->Poll(true);
  if (!inner_ran) context->Poll(true);
  EXPECT_TRUE(inner_ran);
}

TEST(AioContextTest, ReusableBottomHalfCoalescesAndCancels) {
  auto context = NewContext();
  int runs = 0;
  std::unique_ptr<BottomHalf> bh = context->NewBottomHalf([&] { ++runs; });
  bh->Schedule();
  bh->Schedule();
  context->Poll(false);
  EXPECT_EQ(runs, 1);
  bh->Schedule();
  bh->Cancel();
  EXPECT_FALSE(context->Poll(false));
  EXPECT_EQ(runs, 1);
  bh->Schedule();
  context->Poll(false);
  EXPECT_EQ(runs, 2);
}

TEST(AioContextTest, ReusableBottomHalfCanRescheduleItself) {
  auto context = NewContext();
  int runs = 0;
  std::unique_ptr<BottomHalf> bh;
  bh = context->NewBottomHalf([&] {
    if (++runs < 3) bh->Schedule();
  });
  bh->Schedule();
  for (int i = 0; i < 10; ++i) context->Poll(false);
  EXPECT_EQ(runs, 3);
}

TEST(AioContextTest, DestroyedBottomHalfDoesNotRun) {
  auto context = NewContext();
  int runs = 0;
  auto bh = context->NewBottomHalf([&] { ++runs; });
  bh->Schedule();
  bh.reset();
  context->Poll(false);
  EXPECT_EQ(runs, 0);
}

TEST(AioContextTest, FdHandlerRunsWhenReadable) {
  auto context = NewContext();
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(),
                                 [&] {
                                   notifier->TestAndClear();
                                   ++calls;
                                 })
                  .ok());
  EXPECT_FALSE(context->Poll(false));
  notifier->Set();
  EXPECT_TRUE(context->Poll(true));
  EXPECT_EQ(calls, 1);
  context->RemoveFdHandler(notifier->fd());
  notifier->Set();
  EXPECT_FALSE(context->Poll(false));
  EXPECT_EQ(calls, 1);
}

// Level-triggered, an eventfd nobody reads would make every Poll run the
// handler again; edge-triggered, each Set() runs it once.
TEST(AioContextTest, EdgeTriggeredHandlerRunsOncePerSignalWithoutReading) {
  auto context = NewContext();
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(
                      notifier->fd(), [&] { ++calls; }, nullptr, {},
                      AioContext::Trigger::kEdge)
                  .ok());
  notifier->Set();
  EXPECT_TRUE(context->Poll(true));
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(context->Poll(false)) << "still readable, but nothing new";
  EXPECT_EQ(calls, 1);
  notifier->Set();
  EXPECT_TRUE(context->Poll(true));
  EXPECT_EQ(calls, 2);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioContextTest, HandlerRemovingItselfFromItsOwnCallback) {
  auto context = NewContext();
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(),
                                 [&] {
                                   ++calls;
                                   context->RemoveFdHandler(notifier->fd());
                                 })
                  .ok());
  notifier->Set();  // stays readable: the handler never clears it
  context->Poll(false);
  context->Poll(false);
  context->Poll(false);
  EXPECT_EQ(calls, 1);
}

TEST(AioContextTest, HandlerRemovedByAnEarlierCallbackInTheSameBatchIsNotCalled) {
  auto context = NewContext();
  auto first = EventNotifier::Create();
  auto second = EventNotifier::Create();
  ASSERT_TRUE(first.ok() && second.ok());
  int first_calls = 0, second_calls = 0;
  // Whichever runs first removes the other; exactly one of them runs.
  ASSERT_TRUE(context
                  ->SetFdHandler(first->fd(),
                                 [&] {
                                   ++first_calls;
                                   context->RemoveFdHandler(second->fd());
                                   context->RemoveFdHandler(first->fd());
                                 })
                  .ok());
  ASSERT_TRUE(context
                  ->SetFdHandler(second->fd(),
                                 [&] {
                                   ++second_calls;
                                   context->RemoveFdHandler(first->fd());
                                   context->RemoveFdHandler(second->fd());
                                 })
                  .ok());
  first->Set();
  second->Set();
  context->Poll(false);
  EXPECT_EQ(first_calls + second_calls, 1);
}

TEST(AioContextTest, HandlerReplacedFromInsideItsCallbackUsesTheNewOne) {
  auto context = NewContext();
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int old_calls = 0, new_calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(),
                                 [&] {
                                   ++old_calls;
                                   ASSERT_TRUE(context
                                                   ->SetFdHandler(notifier->fd(),
                                                                  [&] {
                                                                    ++new_calls;
                                                                    notifier->TestAndClear();
                                                                  })
                                                   .ok());
                                 })
                  .ok());
  notifier->Set();
  context->Poll(false);
  context->Poll(false);
  EXPECT_EQ(old_calls, 1);
  EXPECT_EQ(new_calls, 1);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioContextTest, WritableHandler) {
  auto context = NewContext();
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  bool writable = false;
  ASSERT_TRUE(context->SetFdHandler(pipe_fds[1], nullptr, [&] { writable = true; }).ok());
  EXPECT_TRUE(context->Poll(false));
  EXPECT_TRUE(writable);
  context->RemoveFdHandler(pipe_fds[1]);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

TEST(AioContextTest, InvalidFdIsAnError) {
  auto context = NewContext();
  absl::Status status = context->SetFdHandler(-1, [] {});
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fd -1"), std::string::npos) << status;
}

TEST(AioContextTest, TimersFireInDeadlineOrderAndNotBefore) {
  auto context = NewContext();
  std::vector<int> order;
  absl::Time start = absl::Now();
  context->AddTimer(start + absl::Milliseconds(30), [&] { order.push_back(3); });
  context->AddTimer(start + absl::Milliseconds(10), [&] { order.push_back(1); });
  context->AddTimer(start + absl::Milliseconds(20), [&] { order.push_back(2); });
  while (order.size() < 3) context->Poll(true);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(30));
}

TEST(AioContextTest, CancelledTimerDoesNotFire) {
  auto context = NewContext();
  bool cancelled_fired = false, other_fired = false;
  absl::Time now = absl::Now();
  AioContext::TimerId id =
      context->AddTimer(now + absl::Milliseconds(5), [&] { cancelled_fired = true; });
  context->AddTimer(now + absl::Milliseconds(10), [&] { other_fired = true; });
  EXPECT_TRUE(context->CancelTimer(id));
  EXPECT_FALSE(context->CancelTimer(id));
  while (!other_fired) context->Poll(true);
  EXPECT_FALSE(cancelled_fired);
}

TEST(AioContextTest, TimerAddedFromAnotherThreadWakesABlockedPoll) {
  auto context = NewContext();
  std::atomic<bool> fired{false};
  std::thread adder([&] {
    absl::SleepFor(absl::Milliseconds(20));
    context->AddTimer(absl::Now(), [&] { fired = true; });
  });
  while (!fired) context->Poll(true);  // would block forever if not woken
  adder.join();
}

TEST(AioContextTest, NotifyWakesABlockedPollWithoutProgress) {
  auto context = NewContext();
  std::thread waker([&] {
    absl::SleepFor(absl::Milliseconds(20));
    context->Notify();
  });
  EXPECT_FALSE(context->Poll(true));
  waker.join();
}

// The classic lost wake-up: a BH scheduled from another thread just as the
// loop decides to block. Repeated many times, with the scheduler racing the
// poller; a single lost wake-up hangs the test (ctest's timeout catches it).
TEST(AioContextTest, CrossThreadScheduleJustBeforeBlockingIsNeverLost) {
  auto context = NewContext();
  constexpr int kRounds = 20000;
  std::atomic<int> ran{0};
  std::atomic<int> scheduled{0};
  std::thread scheduler([&] {
    for (int i = 0; i < kRounds; ++i) {
      while (ran.load() < i) {
      }
      scheduled.fetch_add(1);
      context->ScheduleOneshot([&] { ran.fetch_add(1); });
    }
  });
  while (ran.load() < kRounds) context->Poll(true);
  scheduler.join();
  EXPECT_EQ(ran.load(), kRounds);
}

TEST(AioContextTest, ScheduleFromManyThreadsRunsEveryCallbackExactlyOnce) {
  auto context = NewContext();
  constexpr int kThreads = 4, kEach = 5000;
  std::vector<std::atomic<int>> counts(kThreads * kEach);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        context->ScheduleOneshot([&counts, index = t * kEach + i] { counts[index].fetch_add(1); });
      }
    });
  }
  int done = 0;
  while (done < kThreads * kEach) {
    context->Poll(true);
    done = 0;
    for (auto& count : counts) done += count.load();
  }
  for (auto& thread : threads) thread.join();
  for (auto& count : counts) EXPECT_EQ(count.load(), 1);
}

TEST(AioContextTest, ExtensionIsCreatedOnceAndDestroyedWithTheContext) {
  struct Counter : AioContext::Extension {
    explicit Counter(int* destroyed) : destroyed(destroyed) {}
    ~Counter() override { ++*destroyed; }
    int* destroyed;
  };
  int destroyed = 0, created = 0;
  {
    auto context = NewContext();
    auto make = [&] {
      ++created;
      return std::make_unique<Counter>(&destroyed);
    };
    Counter& first = context->GetOrCreateExtension<Counter>(make);
    Counter& second = context->GetOrCreateExtension<Counter>(make);
    EXPECT_EQ(&first, &second);
    EXPECT_EQ(created, 1);
  }
  EXPECT_EQ(destroyed, 1);
}

TEST(AioContextTest, MainContextIsUniqueAndCurrentInItsThread) {
  ASSERT_EQ(AioContext::Main(), nullptr);
  {
    auto main = AioContext::CreateMain();
    ASSERT_TRUE(main.ok());
    EXPECT_EQ(AioContext::Main(), main->get());
    EXPECT_EQ(AioContext::Current(), main->get());
    EXPECT_TRUE(AioContext::InMainThread());
    std::thread other([] { EXPECT_FALSE(AioContext::InMainThread()); });
    other.join();
  }
  EXPECT_EQ(AioContext::Main(), nullptr);
  EXPECT_EQ(AioContext::Current(), nullptr);
}

}  // namespace
}  // namespace kvmini::util

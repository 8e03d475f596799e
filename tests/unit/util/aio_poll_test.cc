// Adaptive polling in AioContext: the window policy on its own, then the
// loop spinning on poll handlers, bottom halves, Notify() and timers.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "util/aio_context.h"
#include "util/event_notifier.h"

namespace kvmini::util {
namespace {

constexpr int64_t kMicro = 1000;
constexpr int64_t kMilli = 1000 * kMicro;

// Makes a context the calling thread's own, as its loop thread has it (a
// timer added from outside the home thread would Notify() the loop).
class HomeThreadScope {
 public:
  explicit HomeThreadScope(AioContext& context) { AioContext::SetCurrent(&context); }
  ~HomeThreadScope() { AioContext::SetCurrent(nullptr); }
};

std::unique_ptr<AioContext> NewContext(int64_t poll_max_ns) {
  absl::StatusOr<std::unique_ptr<AioContext>> context = AioContext::Create("poll-test");
  EXPECT_TRUE(context.ok()) << context.status();
  (*context)->SetPollMaxNs(poll_max_ns);
  return std::move(*context);
}

// Polls (blocking) until a timer armed `delay` from now has fired.
void PollUntilTimerFires(AioContext& context, absl::Duration delay) {
  bool fired = false;
  context.AddTimer(absl::Now() + delay, [&] { fired = true; });
  while (!fired) context.Poll(true);
}

// Sleeps in Poll on timers that each fire a little after the current window
// ran out, which is what makes the window grow, until it reaches `target`.
void GrowWindow(AioContext& context, int64_t target_ns) {
  for (int round = 0; round < 40 && context.poll_window_ns() < target_ns; ++round) {
    int64_t window = context.poll_window_ns();
    // Past the window but inside the maximum (with room for a late wake-up).
    int64_t delay = std::min(std::max(2 * window, kMilli), (window + context.poll_max_ns()) / 2);
    PollUntilTimerFires(context, absl::Nanoseconds(delay));
  }
  ASSERT_GE(context.poll_window_ns(), target_ns);
}

// How long one Poll(true) takes, with a safety timer so a missed wake-up
// fails the test instead of hanging it.
absl::Duration TimeOnePoll(AioContext& context, bool* progress = nullptr) {
  AioContext::TimerId safety = context.AddTimer(absl::Now() + absl::Seconds(2), [] {});
  absl::Time start = absl::Now();
  bool result = context.Poll(true);
  absl::Duration took = absl::Now() - start;
  context.CancelTimer(safety);
  if (progress != nullptr) *progress = result;
  return took;
}

TEST(PollWindowPolicyTest, GrowsFromZeroThenDoublesWhenTheEventCameJustAfterTheWindow) {
  constexpr int64_t kMax = 32768;
  EXPECT_EQ(PollWindowPolicy::Next(0, 10 * kMicro, kMax), PollWindowPolicy::kStartNs);
  EXPECT_EQ(PollWindowPolicy::Next(4096, 10 * kMicro, kMax), 8192);
  EXPECT_EQ(PollWindowPolicy::Next(8192, 10 * kMicro, kMax), 16384);
}

TEST(PollWindowPolicyTest, IsCappedAtTheMaximum) {
  EXPECT_EQ(PollWindowPolicy::Next(16384, 19000, 20000), 20000);
  EXPECT_EQ(PollWindowPolicy::Next(20000, 20000, 20000), 20000);
  // A maximum lowered below the window takes effect at once.
  EXPECT_EQ(PollWindowPolicy::Next(32768, 1000, 8192), 8192);
}

TEST(PollWindowPolicyTest, StaysWhenTheEventCameInsideTheWindow) {
  EXPECT_EQ(PollWindowPolicy::Next(16384, 5 * kMicro, 32768), 16384);
}

TEST(PollWindowPolicyTest, ShrinksWhenTheLoopSleptLongerThanTheMaximum) {
  EXPECT_EQ(PollWindowPolicy::Next(32768, kMilli, 32768), 16384);
  EXPECT_EQ(PollWindowPolicy::Next(8192, kMilli, 32768), 4096);
  EXPECT_EQ(PollWindowPolicy::Next(4096, kMilli, 32768), 0);
  EXPECT_EQ(PollWindowPolicy::Next(0, kMilli, 32768), 0);
}

TEST(PollWindowPolicyTest, ZeroMaximumDisablesPolling) {
  EXPECT_EQ(PollWindowPolicy::Next(0, 10 * kMicro, 0), 0);
  EXPECT_EQ(PollWindowPolicy::Next(16384, 10 * kMicro, 0), 0);
}

// Milliseconds rather than microseconds, so that a loaded machine's late
// wake-ups (a few ms) do not read as "slept longer than the maximum".
TEST(AioPollTest, WindowGrowsToTheMaximumAndNoFurther) {
  auto context = NewContext(40 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 40 * kMilli);
  EXPECT_EQ(context->poll_window_ns(), 40 * kMilli);
  // An event inside the window leaves it where it is.
  PollUntilTimerFires(*context, absl::Milliseconds(15));
  EXPECT_EQ(context->poll_window_ns(), 40 * kMilli);
}

TEST(AioPollTest, WindowShrinksAfterALongSleep) {
  auto context = NewContext(20 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 20 * kMilli);
  PollUntilTimerFires(*context, absl::Milliseconds(200));
  EXPECT_EQ(context->poll_window_ns(), 10 * kMilli);
}

TEST(AioPollTest, ZeroMaximumNeverSpinsNorCallsTheChecks) {
  auto context = NewContext(0);
  HomeThreadScope home(*context);
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int checks = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(), [] {}, nullptr,
                                 {.has_work = [&] {
                                    ++checks;
                                    return false;
                                  }})
                  .ok());
  for (int i = 0; i < 5; ++i) {
    PollUntilTimerFires(*context, absl::Microseconds(500));
  }
  EXPECT_EQ(context->poll_window_ns(), 0);
  EXPECT_EQ(checks, 0);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioPollTest, SpinningStopsAtTheNextTimer) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  bool fired = false;
  context->AddTimer(absl::Now() + absl::Milliseconds(5), [&] { fired = true; });
  absl::Duration took = TimeOnePoll(*context);
  while (!fired) took += TimeOnePoll(*context);
  EXPECT_LT(took, absl::Milliseconds(60));
}

TEST(AioPollTest, NotifyFromAnotherThreadEndsTheSpinAtOnce) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  std::thread waker([&] {
    absl::SleepFor(absl::Milliseconds(5));
    context->Notify();
  });
  bool progress = true;
  absl::Duration took = TimeOnePoll(*context, &progress);
  waker.join();
  EXPECT_LT(took, absl::Milliseconds(60));
  EXPECT_FALSE(progress);  // a wake-up alone is not progress
}

TEST(AioPollTest, BottomHalfFromAnotherThreadRunsDuringTheSpin) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  std::atomic<bool> ran{false};
  std::thread scheduler([&] {
    absl::SleepFor(absl::Milliseconds(5));
    context->ScheduleOneshot([&] { ran = true; });
  });
  bool progress = false;
  absl::Duration took = TimeOnePoll(*context, &progress);
  scheduler.join();
  EXPECT_LT(took, absl::Milliseconds(60));
  EXPECT_TRUE(progress);
  EXPECT_TRUE(ran.load());
}

TEST(AioPollTest, PollHandlerRunsWhenItsCheckSaysSoWithoutTheFdBecomingReadable) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  auto notifier = EventNotifier::Create();  // never set
  ASSERT_TRUE(notifier.ok());
  std::atomic<bool> work{false};
  int on_work_calls = 0;
  int readable_calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(
                      notifier->fd(), [&] { ++readable_calls; }, nullptr,
                      {.has_work = [&] { return work.load(); },
                       .on_work = [&] {
                         work = false;
                         ++on_work_calls;
                       }})
                  .ok());
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(5));
    work = true;
  });
  bool progress = false;
  absl::Duration took = TimeOnePoll(*context, &progress);
  producer.join();
  EXPECT_LT(took, absl::Milliseconds(60));
  EXPECT_TRUE(progress);
  EXPECT_EQ(on_work_calls, 1);
  EXPECT_EQ(readable_calls, 0);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioPollTest, PollHandlerWithoutOnWorkRunsTheReadableCallback) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  std::atomic<bool> work{false};
  int readable_calls = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(
                      notifier->fd(),
                      [&] {
                        work = false;
                        ++readable_calls;
                      },
                      nullptr, {.has_work = [&] { return work.load(); }})
                  .ok());
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(5));
    work = true;
  });
  absl::Duration took = TimeOnePoll(*context);
  producer.join();
  EXPECT_LT(took, absl::Milliseconds(60));
  EXPECT_EQ(readable_calls, 1);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioPollTest, AHandlerThatFindsSpinningNotWorthwhileMakesTheLoopSleepAtOnce) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int checks = 0;
  bool worthwhile = false;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(), [] {}, nullptr,
                                 {.has_work =
                                      [&] {
                                        ++checks;
                                        return false;
                                      },
                                  .worth_spinning = [&] { return worthwhile; }})
                  .ok());
  PollUntilTimerFires(*context, absl::Milliseconds(5));
  EXPECT_EQ(checks, 0);
  worthwhile = true;
  PollUntilTimerFires(*context, absl::Milliseconds(5));
  EXPECT_GT(checks, 0);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioPollTest, ReplacingTheFdHandlerDropsItsPollCheck) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  int checks = 0;
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(), [] {}, nullptr,
                                 {.has_work = [&] {
                                    ++checks;
                                    return false;
                                  }})
                  .ok());
  ASSERT_TRUE(context->SetFdHandler(notifier->fd(), [] {}).ok());
  PollUntilTimerFires(*context, absl::Milliseconds(5));
  EXPECT_EQ(checks, 0);
  context->RemoveFdHandler(notifier->fd());
}

TEST(AioPollTest, PollHandlerRemovedFromAnotherThreadIsNotCheckedAfterwards) {
  auto context = NewContext(200 * kMilli);
  auto notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok());
  std::atomic<int> checks{0};
  std::atomic<bool> grown{false};
  std::atomic<bool> stop{false};
  std::thread home([&] {
    HomeThreadScope scope(*context);
    GrowWindow(*context, 100 * kMilli);
    grown = true;
    while (!stop) context->Poll(true);
  });
  while (!grown) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(), [] {}, nullptr,
                                 {.has_work = [&] {
                                    checks.fetch_add(1);
                                    return false;
                                  }})
                  .ok());
  // The handler is picked up by the next spin: wake the loop into one.
  context->Notify();
  absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (checks.load() < 100 && absl::Now() < give_up) absl::SleepFor(absl::Microseconds(100));
  ASSERT_GE(checks.load(), 100) << "the loop never spun on the check";
  context->RemoveFdHandler(notifier->fd());
  int after_removal = checks.load();
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(checks.load(), after_removal);
  stop = true;
  context->Notify();
  home.join();
}

// A poll handler may poll its own context again (as AioWaitWhileUnlocked
// does from the main loop); the nested spin must neither lose nor disturb
// the handlers the outer spin has yet to run. Twice, so the second round
// spins with the list the first one kept.
TEST(AioPollTest, PollHandlerThatPollsItsContextAgainLeavesTheOuterSpinIntact) {
  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  GrowWindow(*context, 100 * kMilli);
  std::vector<EventNotifier> notifiers;  // never set: only the checks find work
  for (int i = 0; i < 3; ++i) {
    auto notifier = EventNotifier::Create();
    ASSERT_TRUE(notifier.ok());
    notifiers.push_back(std::move(*notifier));
  }
  // Handlers 0 and 1 are ready together; whichever runs first makes handler
  // 2 ready and polls, so the nested spin always has work and never sleeps.
  bool work[3] = {};
  int runs[3] = {};
  bool nested = false;
  for (int i = 0; i < 3; ++i) {
    auto on_work = [&, i] {
      work[i] = false;
      ++runs[i];
      if (i < 2 && !nested) {
        nested = true;
        work[2] = true;
        context->Poll(true);
      }
    };
    ASSERT_TRUE(context
                    ->SetFdHandler(notifiers[i].fd(), [] {}, nullptr,
                                   {.has_work = [&, i] { return work[i]; }, .on_work = on_work})
                    .ok());
  }
  for (int round = 1; round <= 2; ++round) {
    work[0] = work[1] = true;
    nested = false;
    bool progress = false;
    TimeOnePoll(*context, &progress);
    EXPECT_TRUE(progress);
    EXPECT_TRUE(nested);
    // Handler 2 once, in the nested spin; the outer spin ran its own two,
    // the second again after the nested spin ran it.
    EXPECT_EQ(runs[2], round);
    EXPECT_EQ(runs[0] + runs[1], 3 * round);
    EXPECT_GE(std::min(runs[0], runs[1]), round);
  }
  for (const EventNotifier& notifier : notifiers) context->RemoveFdHandler(notifier.fd());
}

// A wait that a signal interrupts (as io_uring task work wakes a loop whose
// ring uses COOP_TASKRUN) looks at the poll checks before going back to
// epoll: the completions the task work posted are handled in that same
// Poll. The handler says spinning is never worthwhile, so only the look
// after the interruption can find the work.
TEST(AioPollTest, AnInterruptedWaitLooksAtThePollChecksAtOnce) {
  struct sigaction quiet {};
  quiet.sa_handler = [](int) {};
  sigemptyset(&quiet.sa_mask);
  struct sigaction previous {};
  ASSERT_EQ(sigaction(SIGUSR2, &quiet, &previous), 0);  // no SA_RESTART

  auto context = NewContext(200 * kMilli);
  HomeThreadScope home(*context);
  auto notifier = EventNotifier::Create();  // never set
  ASSERT_TRUE(notifier.ok());
  std::atomic<bool> work{false};
  std::atomic<int> on_work_calls{0};
  ASSERT_TRUE(context
                  ->SetFdHandler(notifier->fd(), [] {}, nullptr,
                                 {.has_work = [&] { return work.load(); },
                                  .on_work =
                                      [&] {
                                        work = false;
                                        ++on_work_calls;
                                      },
                                  .worth_spinning = [] { return false; }})
                  .ok());
  pthread_t home_thread = pthread_self();
  std::thread interrupter([&] {
    work = true;
    // Again and again: a signal that lands outside epoll interrupts nothing.
    for (int i = 0; i < 100 && on_work_calls.load() == 0; ++i) {
      absl::SleepFor(absl::Milliseconds(10));
      pthread_kill(home_thread, SIGUSR2);
    }
  });
  absl::Time deadline = absl::Now() + absl::Seconds(1);
  while (on_work_calls.load() == 0 && absl::Now() < deadline) TimeOnePoll(*context);
  interrupter.join();
  EXPECT_EQ(on_work_calls.load(), 1);
  context->RemoveFdHandler(notifier->fd());
  sigaction(SIGUSR2, &previous, nullptr);
}

}  // namespace
}  // namespace kvmini::util

// Stress for the oneshot-BH wait (run under TSan by scripts/test.sh):
// 100,000 round trips spread over 4 IOThreads while other threads keep
// scheduling bottom halves into every context, including the main one.
#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "util/aio_wait.h"
#include "util/iothread.h"

namespace kvmini::util {
namespace {

TEST(AioWaitStressTest, HundredThousandRoundTripsUnderCrossThreadLoad) {
  auto main = AioContext::CreateMain();
  ASSERT_TRUE(main.ok());
  std::vector<std::unique_ptr<IOThread>> iothreads;
  for (int i = 0; i < 4; ++i) {
    auto thread = IOThread::Create("stress-" + std::to_string(i));
    ASSERT_TRUE(thread.ok());
    iothreads.push_back(std::move(*thread));
  }
  std::vector<AioContext*> contexts = {main->get()};
  for (auto& thread : iothreads) contexts.push_back(&thread->context());

  std::atomic<bool> stop{false};
  std::atomic<int64_t> background_scheduled{0};
  std::atomic<int64_t> background_ran{0};
  std::vector<std::thread> schedulers;
  for (int t = 0; t < 2; ++t) {
    schedulers.emplace_back([&, t] {
      for (size_t i = t; !stop.load(std::memory_order_relaxed); ++i) {
        background_scheduled.fetch_add(1);
        contexts[i % contexts.size()]->ScheduleOneshot([&] { background_ran.fetch_add(1); });
        if (i % 64 == 0) std::this_thread::yield();
      }
    });
  }

  constexpr int kRoundTrips = 100000;
  // Each round trip mutates state owned by its IOThread; the main thread
  // reads it afterwards: TSan checks the handover is properly ordered.
  std::vector<int64_t> per_thread_counter(iothreads.size(), 0);
  for (int i = 0; i < kRoundTrips; ++i) {
    size_t index = i % iothreads.size();
    AioWaitBhOneshot(iothreads[index]->context(), [&per_thread_counter, index] {
      ++per_thread_counter[index];
    });
  }
  stop = true;
  for (auto& thread : schedulers) thread.join();
  for (size_t i = 0; i < iothreads.size(); ++i) {
    EXPECT_EQ(per_thread_counter[i], kRoundTrips / 4);
  }
  // Let every background BH run: the IOThreads' by stopping them (orderly
  // stop runs pending BHs), the main context's by polling it.
  for (auto& thread : iothreads) thread->Stop();
  while ((*main)->Poll(false)) {
  }
  EXPECT_EQ(background_ran.load(), background_scheduled.load());
  iothreads.clear();
}

}  // namespace
}  // namespace kvmini::util

// Event-loop costs, each next to its floor measured in the same run:
//   BM_EventfdPingPong           two threads bouncing eventfds (the floor)
//   BM_BhScheduleCrossThread     main thread -> BH in an IOThread -> back
//   BM_AioWaitBhOneshotRoundTrip AioWaitBhOneshot into an IOThread
// The target is AioWaitBhOneshot within 1.5x of the ping-pong; the ratio is
// printed after the run (and is in the JSON as the benchmarks' real_time).
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <thread>

#include "benchmark/benchmark.h"
#include "util/aio_context.h"
#include "util/aio_wait.h"
#include "util/iothread.h"

namespace {

using kvmini::util::AioContext;
using kvmini::util::IOThread;

void Signal(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, sizeof(one)) != sizeof(one)) std::abort();
}
void WaitFor(int fd) {
  uint64_t value;
  if (read(fd, &value, sizeof(value)) != sizeof(value)) std::abort();
}

void BM_EventfdPingPong(benchmark::State& state) {
  int ping = eventfd(0, EFD_CLOEXEC);
  int pong = eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> stop{false};
  std::thread partner([&] {
    while (true) {
      WaitFor(ping);
      if (stop.load()) break;
      Signal(pong);
    }
  });
  for (auto _ : state) {
    Signal(ping);
    WaitFor(pong);
  }
  stop = true;
  Signal(ping);
  partner.join();
  close(ping);
  close(pong);
}
BENCHMARK(BM_EventfdPingPong)->UseRealTime();

// A BH scheduled into the IOThread schedules one back into the main loop;
// the main thread polls (blocking) until it ran.
void BM_BhScheduleCrossThread(benchmark::State& state) {
  auto main = AioContext::CreateMain();
  auto iothread = IOThread::Create("bench-io");
  if (!main.ok() || !iothread.ok()) {
    state.SkipWithError("cannot create event loops");
    return;
  }
  AioContext* main_context = main->get();
  bool back = false;
  for (auto _ : state) {
    back = false;
    (*iothread)->context().ScheduleOneshot(
        [main_context, &back] { main_context->ScheduleOneshot([&back] { back = true; }); });
    while (!back) main_context->Poll(true);
  }
  (*iothread)->Stop();
}
BENCHMARK(BM_BhScheduleCrossThread)->UseRealTime();

void BM_AioWaitBhOneshotRoundTrip(benchmark::State& state) {
  auto main = AioContext::CreateMain();
  auto iothread = IOThread::Create("bench-io");
  if (!main.ok() || !iothread.ok()) {
    state.SkipWithError("cannot create event loops");
    return;
  }
  int64_t counter = 0;
  for (auto _ : state) {
    kvmini::util::AioWaitBhOneshot((*iothread)->context(), [&counter] { ++counter; });
  }
  benchmark::DoNotOptimize(counter);
  (*iothread)->Stop();
}
BENCHMARK(BM_AioWaitBhOneshotRoundTrip)->UseRealTime();

// Collects per-benchmark mean times so the ratio can be printed at the end.
class RatioReporter : public benchmark::BenchmarkReporter {
 public:
  explicit RatioReporter(benchmark::BenchmarkReporter* inner) : inner_(inner) {}
  bool ReportContext(const Context& context) override { return inner_->ReportContext(context); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration && run.iterations > 0) {
        nanoseconds_[run.benchmark_name()] =
            run.real_accumulated_time * 1e9 / static_cast<double>(run.iterations);
      }
    }
    inner_->ReportRuns(runs);
  }
  void Finalize() override { inner_->Finalize(); }
  double Get(const std::string& name) const {
    auto it = nanoseconds_.find(name);
    return it == nanoseconds_.end() ? 0 : it->second;
  }

 private:
  benchmark::BenchmarkReporter* inner_;
  std::map<std::string, double> nanoseconds_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::unique_ptr<benchmark::BenchmarkReporter> display(
      benchmark::CreateDefaultDisplayReporter());
  RatioReporter reporter(display.get());
  benchmark::RunSpecifiedBenchmarks(&reporter);
  double floor = reporter.Get("BM_EventfdPingPong/real_time");
  double oneshot = reporter.Get("BM_AioWaitBhOneshotRoundTrip/real_time");
  double cross = reporter.Get("BM_BhScheduleCrossThread/real_time");
  if (floor > 0 && oneshot > 0) {
    std::fprintf(stderr,
                 "round trips: eventfd ping-pong %.0f ns, cross-thread BH %.0f ns (%.2fx), "
                 "AioWaitBhOneshot %.0f ns (%.2fx the eventfd floor; target <= 1.5x)\n",
                 floor, cross, cross / floor, oneshot, oneshot / floor);
  }
  benchmark::Shutdown();
  return 0;
}

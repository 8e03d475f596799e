// What the device benchmarks share: the figures they report, fio on the
// same image as the reference, the image fill, medians and printing, and
// the closed-loop "guest" that keeps random 4 KiB reads in flight through a
// device driver of the test harness.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvmini::bench {

struct Figures {
  double iops = 0;
  double mean_latency_us = 0;
  double p99_latency_us = 0;
};

[[noreturn]] void Fail(const std::string& message);

// Fills `bytes` of the image at `path` with random data (every read then
// hits the page cache, for fio and the device alike).
void FillImage(const std::string& path, uint64_t bytes);

// fio, io_uring engine, buffered like our backend, one job, 4 KiB random
// reads at `depth`.
Figures RunFio(const std::string& image, int depth, double seconds);

// The run with the median IOPS of several.
Figures Median(std::vector<Figures> runs);

void Print(const char* what, const Figures& figures);

// The guest side: keeps `depth` random 4 KiB reads in flight for `seconds`
// (after a short unmeasured warm-up) through `driver`, which offers:
//   void PostRead(uint64_t offset)  (head returned), bool Collect(callback),
//   size_t in_flight(), void Kick(), bool WaitForInterrupt(absl::Duration).
// Collect(callback) calls callback(head, ok) for each completed read.
// `halt_poll`: before sleeping on the interrupt, look at the used ring for
// up to this long, as KVM does for a halted vCPU (halt_poll_ns) before it
// puts its thread to sleep; zero sleeps at once.
template <typename Driver>
Figures RunClosedLoop(Driver& driver, uint64_t image_bytes, int depth, double seconds,
                      absl::Duration halt_poll = absl::ZeroDuration()) {
  std::mt19937_64 random(2);
  const uint64_t blocks = image_bytes / 4096;
  std::vector<absl::Time> started(1 << 16);  // by head
  auto post = [&] {
    const absl::Time now = absl::Now();
    started[driver.PostRead((random() % blocks) * 4096)] = now;
  };
  std::vector<double> latencies;
  latencies.reserve(1 << 22);
  Figures figures;
  for (bool measuring : {false, true}) {
    const absl::Duration span = measuring ? absl::Seconds(seconds) : absl::Milliseconds(500);
    latencies.clear();
    for (int i = 0; i < depth; ++i) post();
    driver.Kick();
    const absl::Time begin = absl::Now();
    const absl::Time end = begin + span;
    bool stopping = false;
    while (driver.in_flight() > 0) {
      size_t collected = 0;
      absl::Time now;
      auto collect = [&] {
        now = absl::Now();
        driver.Collect([&](uint16_t head, bool ok) {
          if (!ok) Fail("a read failed");
          latencies.push_back(absl::ToDoubleMicroseconds(now - started[head]));
          ++collected;
        });
      };
      if (halt_poll > absl::ZeroDuration()) {
        // An interrupt raised meanwhile stays pending on its eventfd; the
        // next wait then returns at once, harmlessly.
        const absl::Time give_up = absl::Now() + halt_poll;
        do {
          collect();
        } while (collected == 0 && now < give_up);
      }
      if (collected == 0) {
        driver.WaitForInterrupt(absl::Milliseconds(100));
        collect();
      }
      stopping |= now >= end;
      // Refill after matching the batch (a new post may reuse its heads).
      bool posted = false;
      while (!stopping && driver.in_flight() < static_cast<size_t>(depth)) {
        post();
        posted = true;
      }
      if (posted) driver.Kick();
    }
    if (!measuring) continue;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - begin);
    std::sort(latencies.begin(), latencies.end());
    double sum = 0;
    for (double latency : latencies) sum += latency;
    figures.iops = latencies.size() / elapsed;
    figures.mean_latency_us = latencies.empty() ? 0 : sum / latencies.size();
    figures.p99_latency_us = latencies.empty() ? 0 : latencies[latencies.size() * 99 / 100];
  }
  return figures;
}

}  // namespace kvmini::bench

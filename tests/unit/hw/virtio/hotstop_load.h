// The guest side of the hot-stop harness: a vCPU-like driver thread that
// keeps a fixed number of random reads and writes in flight on a DiskPort
// and checks every answer against a byte-exact shadow model of the disk,
// and the latency summaries (min/p50/p99/max) the test and the benchmark
// print. Shared by hotstop_stress_test and bench/hotstop.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "tests/unit/hw/virtio/hotstop_testbed.h"

namespace kvmini::test {

struct ShadowLoadOptions {
  int depth = 64;
  // Each request covers 1..max_sectors 512-byte sectors.
  uint32_t max_sectors = 32;
  uint32_t seed = 42;
  // Keep (posted, answered) times of every request (the benchmark).
  bool record_requests = false;
  // With requests in flight and no answer for this long, Run gives up.
  absl::Duration hang_timeout = absl::Seconds(60);
};

// Requests in flight never conflict: a write overlaps no other request in
// flight, a read no write in flight. So the model can take a write when it
// is posted, and a read must return the model's bytes whenever it is
// answered.
class ShadowLoad {
 public:
  struct Timing {
    absl::Time posted;
    absl::Time answered;
  };

  ShadowLoad(DiskPort& port, uint64_t image_bytes, ShadowLoadOptions options);

  // In the driver thread: posts `depth` requests, and on each answer checks
  // it and posts a new one, until RequestStop(); then waits for the
  // requests in flight and returns.
  void Run();
  // Any thread.
  void RequestStop() { stop_requested_ = true; }
  bool finished() const { return finished_.load(); }
  // Requests posted and not yet answered, as the driver thread last saw it.
  int in_flight() const { return in_flight_count_.load(); }
  uint64_t completed() const { return completed_.load(); }

  // Once Run has returned.
  const std::vector<uint8_t>& model() const { return model_; }
  uint64_t posted() const { return posted_; }
  uint64_t failed() const { return failed_; }          // answered not OK
  uint64_t mismatches() const { return mismatches_; }  // read returned other bytes
  uint64_t unexpected() const { return unexpected_; }  // answer for no request in flight
  uint64_t post_failures() const { return post_failures_; }
  // Requests still in flight when Run gave up (a hang).
  uint64_t unanswered() const { return unanswered_; }
  const std::vector<Timing>& timings() const { return timings_; }
  // What went wrong first, for the test's message.
  const std::string& first_problem() const { return first_problem_; }

 private:
  struct Pending {
    DiskIo io;
    absl::Time posted;
  };

  bool Conflicts(bool write, uint64_t offset, uint32_t length) const;
  void Submit(uint16_t queue);
  void Check(const Pending& pending, const DiskIoResult& result);
  void Problem(std::string what);

  DiskPort& port_;
  const ShadowLoadOptions options_;
  std::vector<uint8_t> model_;
  std::mt19937_64 random_;
  std::map<std::pair<uint16_t, uint16_t>, Pending> in_flight_;  // (queue, head)
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> finished_{false};
  std::atomic<int> in_flight_count_{0};
  std::atomic<uint64_t> completed_{0};
  uint64_t posted_ = 0;
  uint64_t failed_ = 0;
  uint64_t mismatches_ = 0;
  uint64_t unexpected_ = 0;
  uint64_t post_failures_ = 0;
  uint64_t unanswered_ = 0;
  std::vector<Timing> timings_;
  std::string first_problem_;
};

struct LatencySummary {
  size_t count = 0;
  absl::Duration min, p50, p99, max;
};
// Nearest-rank percentiles; all zero for no samples.
LatencySummary Summarize(std::vector<absl::Duration> samples);
// "min 12 us, p50 30 us, p99 210 us, max 1.3 ms (n=5000)".
std::string FormatSummary(const LatencySummary& summary);

}  // namespace kvmini::test

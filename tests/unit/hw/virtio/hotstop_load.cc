#include "tests/unit/hw/virtio/hotstop_load.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"

namespace kvmini::test {

ShadowLoad::ShadowLoad(DiskPort& port, uint64_t image_bytes, ShadowLoadOptions options)
    : port_(port), options_(options), model_(image_bytes, 0), random_(options.seed) {}

void ShadowLoad::Problem(std::string what) {
  if (first_problem_.empty()) first_problem_ = std::move(what);
}

bool ShadowLoad::Conflicts(bool write, uint64_t offset, uint32_t length) const {
  for (const auto& [key, pending] : in_flight_) {
    if (!write && !pending.io.write) continue;
    if (offset < pending.io.offset + pending.io.length && pending.io.offset < offset + length) {
      return true;
    }
  }
  return false;
}

void ShadowLoad::Submit(uint16_t queue) {
  const uint64_t sectors = model_.size() / 512;
  DiskIo io;
  io.write = random_() % 2 == 0;
  do {
    io.length = 512 * static_cast<uint32_t>(1 + random_() % options_.max_sectors);
    io.offset = 512 * (random_() % (sectors - io.length / 512 + 1));
  } while (Conflicts(io.write, io.offset, io.length));
  io.indirect = random_() % 2 == 0;
  io.segment_size = random_() % 3 == 0 ? 4096 : 0;
  if (io.write) {
    io.data.resize(io.length);
    for (size_t i = 0; i < io.data.size(); i += sizeof(uint64_t)) {
      const uint64_t bits = random_();
      std::memcpy(&io.data[i], &bits, std::min(sizeof(bits), io.data.size() - i));
    }
    std::copy(io.data.begin(), io.data.end(), model_.begin() + static_cast<ptrdiff_t>(io.offset));
  }
  absl::StatusOr<uint16_t> head = port_.Post(queue, io);
  if (!head.ok()) {
    ++post_failures_;
    Problem(absl::StrFormat("posting on queue %d: %s", queue, head.status().ToString()));
    return;
  }
  io.data.clear();  // the model has the bytes; no need to keep them twice
  in_flight_[{queue, *head}] = {std::move(io), absl::Now()};
  ++posted_;
}

void ShadowLoad::Check(const Pending& pending, const DiskIoResult& result) {
  if (!result.ok) {
    ++failed_;
    Problem(absl::StrFormat("%s of %d bytes at %d failed", pending.io.write ? "write" : "read",
                            pending.io.length, pending.io.offset));
    return;
  }
  if (pending.io.write) return;
  const auto expected = model_.begin() + static_cast<ptrdiff_t>(pending.io.offset);
  if (result.data.size() != pending.io.length ||
      !std::equal(result.data.begin(), result.data.end(), expected)) {
    ++mismatches_;
    Problem(absl::StrFormat("read of %d bytes at %d returned other bytes than were written",
                            pending.io.length, pending.io.offset));
  }
}

void ShadowLoad::Run() {
  const uint16_t queues = port_.queues();
  for (int i = 0; i < options_.depth; ++i) Submit(static_cast<uint16_t>(i % queues));
  in_flight_count_ = static_cast<int>(in_flight_.size());
  for (uint16_t q = 0; q < queues; ++q) port_.Kick(q);
  absl::Time last_answer = absl::Now();
  while (!(stop_requested_ && in_flight_.empty())) {
    if (!in_flight_.empty() && absl::Now() - last_answer > options_.hang_timeout) {
      unanswered_ = in_flight_.size();
      Problem(absl::StrFormat("%d requests unanswered for %s", unanswered_,
                              absl::FormatDuration(options_.hang_timeout)));
      break;
    }
    port_.driver().WaitForInterrupt(absl::Milliseconds(20));
    for (uint16_t q = 0; q < queues; ++q) {
      // Match the whole batch before posting again: a new post may reuse a
      // head that appears later in the same batch.
      int answered = 0;
      const absl::Time now = absl::Now();
      for (auto& [head, result] : port_.Collect(q)) {
        auto it = in_flight_.find({q, head});
        if (it == in_flight_.end()) {
          ++unexpected_;
          Problem(
              absl::StrFormat("answer on queue %d for head %d, which is not in flight", q, head));
          continue;
        }
        Check(it->second, result);
        if (options_.record_requests) timings_.push_back({it->second.posted, now});
        in_flight_.erase(it);
        ++answered;
      }
      if (answered == 0) continue;
      last_answer = now;
      completed_.fetch_add(answered);
      if (!stop_requested_) {
        for (int i = 0; i < answered; ++i) Submit(q);
        port_.Kick(q);
      }
    }
    in_flight_count_ = static_cast<int>(in_flight_.size());
  }
  in_flight_count_ = static_cast<int>(in_flight_.size());
  finished_ = true;
}

LatencySummary Summarize(std::vector<absl::Duration> samples) {
  LatencySummary summary;
  summary.count = samples.size();
  if (samples.empty()) return summary;
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double fraction) {
    size_t index = static_cast<size_t>(fraction * static_cast<double>(samples.size()) + 0.999999);
    return samples[std::clamp<size_t>(index, 1, samples.size()) - 1];
  };
  summary.min = samples.front();
  summary.p50 = rank(0.50);
  summary.p99 = rank(0.99);
  summary.max = samples.back();
  return summary;
}

std::string FormatSummary(const LatencySummary& summary) {
  auto us = [](absl::Duration d) { return absl::ToDoubleMicroseconds(d); };
  return absl::StrFormat("min %.1f us, p50 %.1f us, p99 %.1f us, max %.1f us (n=%d)",
                         us(summary.min), us(summary.p50), us(summary.p99), us(summary.max),
                         summary.count);
}

}  // namespace kvmini::test

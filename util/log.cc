#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/check.h"
#include "util/log.h"

#include "absl/time/clock.h"

namespace kvmini::util {
namespace {
std::atomic<LogLevel> minimum_level{LogLevel::kInfo};

void WriteAll(const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(STDERR_FILENO, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}
}  // namespace

void SetMinimumLogLevel(LogLevel level) { minimum_level.store(level); }
LogLevel MinimumLogLevel() { return minimum_level.load(std::memory_order_relaxed); }

LogMessage::~LogMessage() {
  static constexpr const char* kPrefix[] = {"kvmini: ", "kvmini: warning: ",
                                            "kvmini: error: "};
  std::string line = kPrefix[static_cast<int>(level_)] + stream_.str() + "\n";
  WriteAll(line);
}

bool RateLimiter::Allow() {
  int64_t now = absl::ToUnixNanos(absl::Now());
  int64_t start = window_start_ns_.load(std::memory_order_relaxed);
  if (now - start >= absl::ToInt64Nanoseconds(period_)) {
    if (window_start_ns_.compare_exchange_strong(start, now)) {
      used_in_window_.store(0);
    }
  }
  if (used_in_window_.fetch_add(1) < burst_) return true;
  suppressed_.fetch_add(1);
  return false;
}

void CheckFailed(const char* condition, const char* file, int line,
                 absl::string_view reason) {
  std::string text = std::string("kvmini: internal error: check failed: ") + condition +
                     " at " + file + ":" + std::to_string(line) + ": " +
                     std::string(reason) + "\n";
  WriteAll(text);
  std::abort();
}

}  // namespace kvmini::util

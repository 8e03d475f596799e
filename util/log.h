// Logging to stderr: one write(2) per message so lines from different
// threads never interleave. Guest-triggered messages go through RateLimiter
// so a hostile guest cannot flood the log.
#pragma once

#include <atomic>
#include <cstdint>
#include <sstream>

#include "absl/time/time.h"

namespace kvmini::util {

enum class LogLevel { kInfo, kWarning, kError };

// Messages below this level are dropped; default kInfo. Set once at start-up.
void SetMinimumLogLevel(LogLevel level);
LogLevel MinimumLogLevel();

class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  template <typename T>
  LogMessage& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

// Allows at most `burst` messages per `period`; counts what it suppressed so
// the next allowed message can say so.
class RateLimiter {
 public:
  RateLimiter(int burst, absl::Duration period) : burst_(burst), period_(period) {}
  // True if a message may be logged now. Thread-safe.
  bool Allow();
  // Messages refused since the last allowed one (reset by Allow() == true).
  uint64_t TakeSuppressedCount() { return suppressed_.exchange(0); }

 private:
  const int burst_;
  const absl::Duration period_;
  std::atomic<int64_t> window_start_ns_{0};
  std::atomic<int> used_in_window_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace kvmini::util

#define KVMINI_LOG(level)                                                        \
  if (::kvmini::util::LogLevel::k##level < ::kvmini::util::MinimumLogLevel()) {  \
  } else                                                                         \
    ::kvmini::util::LogMessage(::kvmini::util::LogLevel::k##level)

#include "vmm/machine/startup_trace.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "util/log.h"

namespace kvmini::vmm {
namespace {

struct Mark {
  char phase[64];
  int64_t instant_ns;
};

constexpr int kMaxMarks = 32;
// Fixed storage, filled through an atomic index: marking allocates nothing
// and takes no lock, so it cannot disturb what it measures.
std::array<Mark, kMaxMarks> marks;
std::atomic<int> marks_taken{0};
int marks_logged = 0;  // FlushStartupTrace() only
// /proc/self/status, opened while files still can be: the sandbox allows
// read and close but not open when FlushStartupTrace() reads it.
int status_fd = -1;

// VmHWM of /proc/self/status: this process's own peak resident set, which
// a parent's ru_maxrss cannot tell apart from the parent's peak when the
// child was spawned with vfork semantics. -1 if unreadable.
long PeakResidentKib() {
  if (status_fd < 0) return -1;
  char text[8192];
  const ssize_t length = read(status_fd, text, sizeof(text) - 1);
  if (length <= 0) return -1;
  text[length] = '\0';
  const char* field = strstr(text, "VmHWM:");
  return field == nullptr ? -1 : strtol(field + strlen("VmHWM:"), nullptr, 10);
}

}  // namespace

bool StartupTraceEnabled() {
  static const bool enabled = [] {
    if (getenv(kTraceStartupVariable) == nullptr) return false;
    status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    return true;
  }();
  return enabled;
}

void MarkStartupPhase(absl::string_view phase) {
  if (!StartupTraceEnabled()) return;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const int index = marks_taken.fetch_add(1, std::memory_order_relaxed);
  if (index >= kMaxMarks) return;
  Mark& mark = marks[index];
  const size_t length = std::min(phase.size(), sizeof(mark.phase) - 1);
  phase.copy(mark.phase, length);
  mark.phase[length] = '\0';
  mark.instant_ns = int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

void FlushStartupTrace() {
  if (!StartupTraceEnabled()) return;
  if (const long peak = PeakResidentKib(); peak >= 0) {
    KVMINI_LOG(Info) << "startup: peak RSS VmHWM " << peak << " kB";
  }
  const int taken = std::min(marks_taken.load(), kMaxMarks);
  if (taken <= marks_logged) return;
  for (int i = marks_logged; i < taken; ++i) {
    KVMINI_LOG(Info) << "startup: " << marks[i].phase << " at CLOCK_MONOTONIC "
                     << marks[i].instant_ns << " ns";
  }
  marks_logged = taken;
}

}  // namespace kvmini::vmm

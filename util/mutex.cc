#include "util/mutex.h"

#if defined(KVMINI_TSAN_ANNOTATE)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
#endif

namespace kvmini::util {
namespace {
thread_local int locks_held = 0;

// Abseil's lock-order (deadlock) detector keeps a global graph under its own
// lock on every acquisition: a cost release builds should not pay, and, since
// Debian's Abseil is not TSan-instrumented, a source of false TSan reports.
// Debug builds keep it.
[[maybe_unused]] const bool deadlock_detection_configured = [] {
#if defined(NDEBUG) || defined(KVMINI_TSAN_ANNOTATE)
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  return true;
}();

void AnnotateAcquired([[maybe_unused]] void* mutex) {
#if defined(KVMINI_TSAN_ANNOTATE)
  __tsan_acquire(mutex);
#endif
}

void AnnotateReleasing([[maybe_unused]] void* mutex) {
#if defined(KVMINI_TSAN_ANNOTATE)
  __tsan_release(mutex);
#endif
}
}  // namespace

void Mutex::Lock() {
  mutex_.Lock();
  AnnotateAcquired(this);
  ++locks_held;
}

void Mutex::Unlock() {
  --locks_held;
  AnnotateReleasing(this);
  mutex_.Unlock();
}

bool Mutex::TryLock() {
  if (!mutex_.TryLock()) return false;
  AnnotateAcquired(this);
  ++locks_held;
  return true;
}

int LocksHeldByThisThread() { return locks_held; }

}  // namespace kvmini::util

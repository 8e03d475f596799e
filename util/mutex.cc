#include "util/mutex.h"

#if defined(KVMINI_TSAN_ANNOTATE)
extern "C" void __tsan_acquire(void* address);
extern "C" void __tsan_release(void* address);
#endif

namespace kvmini::util {
namespace {
thread_local int locks_held = 0;

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

// util::Mutex: the lock every kvmini component uses.
//
// It is absl::Mutex with two additions that absl cannot give us here:
//  - a per-thread count of held locks, so that waits which must not happen
//    under a lock (AioWaitBhOneshot, AioWaitWhileUnlocked) can assert it at
//    run time, not only through clang's static analysis;
//  - TSan annotations: Debian's Abseil is built without TSan, so TSan would
//    not see absl::Mutex synchronise and would report false races.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvmini::util {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION();
  void Unlock() ABSL_UNLOCK_FUNCTION();
  bool TryLock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true);
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() { mutex_.AssertHeld(); }

 private:
  absl::Mutex mutex_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mutex) ABSL_EXCLUSIVE_LOCK_FUNCTION(mutex) : mutex_(mutex) {
    mutex_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mutex_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mutex_;
};

// Number of util::Mutex locks the calling thread holds right now.
int LocksHeldByThisThread();

}  // namespace kvmini::util

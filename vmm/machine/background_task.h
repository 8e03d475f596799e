// BackgroundTask: one piece of start-up work on a helper thread, so that a
// call that mostly waits overlaps the rest of the set-up instead of
// preceding it. What waits at start-up: KVM's memory-slot and I/O-bus
// updates each wait for an SRCU grace period (about 5 ms on the software
// KVM of our test hosts; calls made at the same time share one), and
// Abseil's CPU-frequency calibration, part of the seccomp preparation,
// sleeps about 3 ms. The helper blocks every signal, so the termination
// signals still reach only the main loop and a vCPU kick never lands there.
#pragma once

#include <pthread.h>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

namespace kvmini::vmm {

class BackgroundTask {
 public:
  // Starts `work` on a helper thread; if no thread can be created, runs it
  // here and now (slower, same result).
  explicit BackgroundTask(absl::AnyInvocable<absl::Status() &&> work);
  ~BackgroundTask();  // waits for the work
  BackgroundTask(const BackgroundTask&) = delete;
  BackgroundTask& operator=(const BackgroundTask&) = delete;

  // Waits for the work; its result. Calling it again returns the same.
  absl::Status Finish();

 private:
  static void* RunWork(void* task);

  absl::AnyInvocable<absl::Status() &&> work_;
  // Written by the helper, read after the join (which orders the two).
  absl::Status status_;
  pthread_t thread_{};
  bool running_ = false;
};

}  // namespace kvmini::vmm

// BackgroundTask: one piece of start-up work on a helper thread, so that
// work that mostly waits or computes overlaps the rest of the set-up
// instead of preceding it: compiling the seccomp filters, and Abseil's
// CPU-frequency measurement, which sleeps 3 ms or more (vmm/main.cc). The
// helper blocks every signal, so the termination signals still reach only
// the main loop and a vCPU kick never lands there.
#pragma once

#include <pthread.h>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

namespace kvmini::vmm {

class BackgroundTask {
 public:
  // What to do when no thread can be created: run the work here and now
  // (slower, same result), or skip it (work that changes the calling
  // thread, such as installing a filter on itself).
  enum class WithoutThread { kRunHere, kSkip };

  // Starts `work` on a helper thread.
  explicit BackgroundTask(absl::AnyInvocable<absl::Status() &&> work,
                          WithoutThread without_thread = WithoutThread::kRunHere);
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

#include "vmm/machine/background_task.h"

#include <signal.h>

#include <utility>

namespace kvmini::vmm {

BackgroundTask::BackgroundTask(absl::AnyInvocable<absl::Status() &&> work,
                               WithoutThread without_thread)
    : work_(std::move(work)) {
  pthread_attr_t attributes;
  if (pthread_attr_init(&attributes) == 0) {
    sigset_t all_signals;
    sigfillset(&all_signals);
    running_ = pthread_attr_setsigmask_np(&attributes, &all_signals) == 0 &&
               pthread_create(&thread_, &attributes, &BackgroundTask::RunWork, this) == 0;
    pthread_attr_destroy(&attributes);
  }
  if (running_) return;
  if (without_thread == WithoutThread::kRunHere) {
    RunWork(this);
  } else {
    status_ = absl::UnavailableError("no helper thread could be started; the work was skipped");
  }
}

BackgroundTask::~BackgroundTask() { (void)Finish(); }

void* BackgroundTask::RunWork(void* task) {
  auto* self = static_cast<BackgroundTask*>(task);
  self->status_ = std::move(self->work_)();
  return nullptr;
}

absl::Status BackgroundTask::Finish() {
  if (running_) {
    pthread_join(thread_, nullptr);
    running_ = false;
  }
  return status_;
}

}  // namespace kvmini::vmm

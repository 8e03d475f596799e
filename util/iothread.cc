#include "util/iothread.h"

#include <pthread.h>
#include <unistd.h>

#include <utility>

#include "util/check.h"

namespace kvmini::util {

absl::StatusOr<std::unique_ptr<IOThread>> IOThread::Create(std::string id) {
  absl::StatusOr<std::unique_ptr<AioContext>> context = AioContext::Create("iothread " + id);
  if (!context.ok()) return context.status();
  std::unique_ptr<IOThread> thread(new IOThread(std::move(id), std::move(*context)));
  thread->thread_ = std::thread([raw = thread.get()] { raw->Run(); });
  return thread;
}

IOThread::IOThread(std::string id, std::unique_ptr<AioContext> context)
    : id_(std::move(id)), context_(std::move(context)) {}

IOThread::~IOThread() { Stop(); }

void IOThread::Run() {
  std::string thread_name = id_.substr(0, 15);
  pthread_setname_np(pthread_self(), thread_name.c_str());
  thread_id_.store(gettid());
  AioContext::SetCurrent(context_.get());
  while (!stop_requested_.load(std::memory_order_acquire)) {
    context_->Poll(/*blocking=*/true);
  }
  // Work scheduled before Stop() (and whatever it schedules in turn) runs.
  while (context_->Poll(/*blocking=*/false)) {
  }
  AioContext::SetCurrent(nullptr);
}

void IOThread::Stop() {
  if (!thread_.joinable()) return;
  KVMINI_CHECK(std::this_thread::get_id() != thread_.get_id(),
               "IOThread::Stop called from the IOThread itself");
  // Through a BH, so every BH queued before this one runs first.
  context_->ScheduleOneshot([this] { stop_requested_.store(true, std::memory_order_release); });
  thread_.join();
}

}  // namespace kvmini::util

// The thread-pool engine: blocking preadv/pwritev/fdatasync/fallocate on a
// few worker threads, for when io_uring cannot be set up (disabled by
// sysctl or seccomp, old kernel) or aio=threads asks for it.
//
// One pool per AioContext, shared by the backends attached to it. Workers
// hand results back through a bottom half, so Finished() runs in the
// context's home thread like with io_uring.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "block/io_engine.h"
#include "util/aio_context.h"
#include "util/mutex.h"

namespace kvmini::block {

class ThreadPoolEngine final : public util::AioContext::Extension, public IoEngine {
 public:
  static constexpr int kWorkers = 8;

  // Starts the workers; check setup_status() before using it.
  explicit ThreadPoolEngine(util::AioContext& context);
  // Lets the workers finish what they run, then joins them.
  ~ThreadPoolEngine() override;
  ThreadPoolEngine(const ThreadPoolEngine&) = delete;
  ThreadPoolEngine& operator=(const ThreadPoolEngine&) = delete;

  const absl::Status& setup_status() const { return setup_status_; }

  AioEngine kind() const override { return AioEngine::kThreads; }
  void Submit(IoOperation* operation) override;

 private:
  void WorkerLoop();
  void DeliverResults();

  util::AioContext& context_;
  absl::Status setup_status_;
  util::Mutex queue_mutex_;
  std::deque<IoOperation*> queue_ ABSL_GUARDED_BY(queue_mutex_);
  bool stopping_ ABSL_GUARDED_BY(queue_mutex_) = false;
  // An eventfd semaphore: one count per queued operation (and one per
  // worker at shutdown); each worker's blocking read takes one. It sleeps
  // in the kernel where std::counting_semaphore would spin on sched_yield.
  int work_available_fd_ = -1;

  util::Mutex results_mutex_;
  std::vector<std::pair<IoOperation*, int64_t>> results_ ABSL_GUARDED_BY(results_mutex_);
  std::unique_ptr<util::BottomHalf> deliver_bh_;

  std::vector<std::thread> workers_;
};

}  // namespace kvmini::block

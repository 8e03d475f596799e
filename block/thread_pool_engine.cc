#include "block/thread_pool_engine.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

#include "util/check.h"

#include "util/log.h"

namespace kvmini::block {

ThreadPoolEngine::ThreadPoolEngine(util::AioContext& context) : context_(context) {
  work_available_fd_ = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  if (work_available_fd_ < 0) {
    setup_status_ = absl::ErrnoToStatus(errno, "eventfd for the I/O thread pool");
    return;
  }
  deliver_bh_ = context_.NewBottomHalf([this] { DeliverResults(); });
  workers_.reserve(kWorkers);
  for (int i = 0; i < kWorkers; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
    pthread_setname_np(workers_.back().native_handle(), "kvmini-blk-io");
  }
}

ThreadPoolEngine::~ThreadPoolEngine() {
  if (!setup_status_.ok()) return;
  size_t abandoned;
  {
    util::MutexLock lock(&queue_mutex_);
    stopping_ = true;
    abandoned = queue_.size();
  }
  KVMINI_CHECK(eventfd_write(work_available_fd_, kWorkers) == 0, "eventfd_write failed");
  for (std::thread& worker : workers_) worker.join();
  close(work_available_fd_);
  deliver_bh_.reset();
  util::MutexLock lock(&results_mutex_);
  abandoned += results_.size();
  if (abandoned > 0) {
    KVMINI_LOG(Error) << "I/O thread pool of event loop '" << context_.name()
                      << "' destroyed with " << abandoned << " operations unfinished";
  }
}

void ThreadPoolEngine::Submit(IoOperation* operation) {
  {
    util::MutexLock lock(&queue_mutex_);
    queue_.push_back(operation);
  }
  KVMINI_CHECK(eventfd_write(work_available_fd_, 1) == 0, "eventfd_write failed");
}

void ThreadPoolEngine::WorkerLoop() {
  while (true) {
    eventfd_t ignored;
    while (eventfd_read(work_available_fd_, &ignored) != 0) {
      KVMINI_CHECK(errno == EINTR, "reading the I/O thread pool's eventfd failed");
    }
    IoOperation* operation;
    {
      util::MutexLock lock(&queue_mutex_);
      if (stopping_) return;
      operation = queue_.front();
      queue_.pop_front();
    }
    int64_t result = RunBlocking(*operation);
    {
      util::MutexLock lock(&results_mutex_);
      results_.emplace_back(operation, result);
    }
    deliver_bh_->Schedule();
  }
}

void ThreadPoolEngine::DeliverResults() {
  std::vector<std::pair<IoOperation*, int64_t>> batch;
  {
    util::MutexLock lock(&results_mutex_);
    batch.swap(results_);
  }
  for (auto& [operation, result] : batch) operation->Finished(result);
}

}  // namespace kvmini::block

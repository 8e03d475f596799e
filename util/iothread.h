// IOThread: a named thread that runs its own AioContext until stopped. Disk
// dataplanes attach their virtqueues and block backends to it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "util/aio_context.h"

namespace kvmini::util {

class IOThread {
 public:
  // Starts the thread; `id` names it (also as the thread's name, truncated
  // to the kernel's 15 characters).
  static absl::StatusOr<std::unique_ptr<IOThread>> Create(std::string id);
  ~IOThread();
  IOThread(const IOThread&) = delete;
  IOThread& operator=(const IOThread&) = delete;

  const std::string& id() const { return id_; }
  AioContext& context() { return *context_; }
  // Kernel thread id, once the thread runs (for seccomp and diagnostics).
  pid_t thread_id() const { return thread_id_.load(); }

  // Orderly stop: bottom halves scheduled before the call still run, then
  // the thread is joined. Idempotent. Must not be called from the thread itself.
  void Stop();

 private:
  IOThread(std::string id, std::unique_ptr<AioContext> context);
  void Run();

  const std::string id_;
  std::unique_ptr<AioContext> context_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<pid_t> thread_id_{0};
  std::thread thread_;
};

}  // namespace kvmini::util

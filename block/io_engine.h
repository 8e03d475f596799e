// The seam between a BlockBackend and the thing that runs its system calls.
//
// A backend turns each request into one or more IoOperations (a readv, a
// writev, an fdatasync or an fallocate) and hands them to the IoEngine of
// the AioContext it is attached to. There is one engine per context, shared
// by every backend attached there: the io_uring engine (one ring per
// context, batched submission) or the thread-pool engine (blocking calls on
// a few workers) when io_uring cannot be used.
#pragma once

#include <sys/uio.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "util/aio_context.h"

namespace kvmini::block {

// One system call's worth of work. The owner (a backend request) keeps it
// alive until Finished() has run.
class IoOperation {
 public:
  enum class Kind : uint8_t { kReadv, kWritev, kDataSync, kFallocate };

  Kind kind = Kind::kReadv;
  int fd = -1;
  int fallocate_mode = 0;
  uint64_t offset = 0;
  uint64_t length = 0;  // kFallocate only; readv/writev use the iovecs
  const iovec* iov = nullptr;
  int iov_count = 0;

  // Runs in the engine's context's home thread, never inside Submit(), with
  // what the system call returned: bytes transferred (readv/writev), 0
  // (fdatasync/fallocate) or a negative errno.
  virtual void Finished(int64_t result) = 0;

 protected:
  ~IoOperation() = default;
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  // kIoUring or kThreads.
  virtual AioEngine kind() const = 0;
  // From the context's home thread. Queues the operation (io_uring starts
  // it with the rest of the current batch, after the caller returns);
  // Finished() runs later, never inside this call.
  virtual void Submit(IoOperation* operation) = 0;
};

// The engine of `context` for `wanted`: kIoUring fails if io_uring cannot
// be set up in this process; kAuto then falls back to the thread pool and
// says so once in the log.
absl::StatusOr<IoEngine*> EngineForContext(util::AioContext& context, AioEngine wanted);

// Runs `operation`'s system call in the calling thread (blocking) and
// returns what Finished() should get. The thread-pool engine's workers use it.
int64_t RunBlocking(const IoOperation& operation);

}  // namespace kvmini::block

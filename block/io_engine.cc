#include "block/io_engine.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "block/io_uring_engine.h"
#include "block/thread_pool_engine.h"
#include "util/log.h"

namespace kvmini::block {

absl::StatusOr<IoEngine*> EngineForContext(util::AioContext& context, AioEngine wanted) {
  auto threads = [&context]() -> absl::StatusOr<IoEngine*> {
    ThreadPoolEngine& pool = context.GetOrCreateExtension<ThreadPoolEngine>(
        [&context] { return std::make_unique<ThreadPoolEngine>(context); });
    if (!pool.setup_status().ok()) return pool.setup_status();
    return &pool;
  };
  if (wanted == AioEngine::kThreads) return threads();
  // Created once per context; a ring that failed to set up stays failed, so
  // later backends do not retry (and log) every time.
  IoUringEngine& ring = context.GetOrCreateExtension<IoUringEngine>(
      [&context] { return std::make_unique<IoUringEngine>(context); });
  if (ring.setup_status().ok()) return &ring;
  if (wanted == AioEngine::kIoUring) return ring.setup_status();
  static std::atomic<bool> fallback_logged{false};
  if (!fallback_logged.exchange(true)) {
    KVMINI_LOG(Warning) << "io_uring is unavailable (" << ring.setup_status().message()
                        << "): disk I/O uses the thread-pool engine";
  }
  return threads();
}

int64_t RunBlocking(const IoOperation& operation) {
  while (true) {
    int64_t result = 0;
    switch (operation.kind) {
      case IoOperation::Kind::kReadv:
        result = preadv(operation.fd, operation.iov, operation.iov_count,
                        static_cast<off_t>(operation.offset));
        break;
      case IoOperation::Kind::kWritev:
        result = pwritev(operation.fd, operation.iov, operation.iov_count,
                         static_cast<off_t>(operation.offset));
        break;
      case IoOperation::Kind::kDataSync:
        result = fdatasync(operation.fd);
        break;
      case IoOperation::Kind::kFallocate:
        result = fallocate(operation.fd, operation.fallocate_mode,
                           static_cast<off_t>(operation.offset),
                           static_cast<off_t>(operation.length));
        break;
    }
    if (result >= 0) return result;
    if (errno != EINTR) return -errno;
  }
}

}  // namespace kvmini::block

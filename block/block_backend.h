// BlockBackend: asynchronous reads and writes of a raw disk image, the only
// way a virtio disk touches its image file.
//
// A backend belongs to one AioContext (the main loop or an IOThread): every
// operation is started from that context's thread and every completion runs
// there, exactly once, never inside the call that started it. Operations
// started while handling one batch of guest requests are submitted together
// (one io_uring_submit per batch). SetAioContext() moves a drained backend
// to another loop; that is how a disk's dataplane moves between the main
// loop and an IOThread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "util/aio_context.h"

namespace kvmini::block {

enum class AioEngine {
  kAuto,     // io_uring if it can be set up, else threads (logged once)
  kIoUring,  // io_uring or fail at open
  kThreads,  // preadv/pwritev on a small worker pool
};

struct BlockOptions {
  bool read_only = false;
  bool direct = false;  // O_DIRECT: guest buffers bypass the page cache
  // Try reads/writes inline with RWF_NOWAIT first; completes page-cache hits
  // without a trip through io_uring.
  bool nowait = true;
  AioEngine engine = AioEngine::kAuto;
};

class BlockBackend {
 public:
  // `status` is 0 or a negative errno.
  using Completion = absl::AnyInvocable<void(int status) &&>;

  // Opens `path` attached to `context`. Errors name the path and the reason
  // (missing, a directory, no permission, O_DIRECT unsupported, size not a
  // multiple of 512, io_uring unavailable with AioEngine::kIoUring).
  static absl::StatusOr<std::unique_ptr<BlockBackend>> Open(const std::string& path,
                                                            const BlockOptions& options,
                                                            util::AioContext& context);
  // Destroy it drained, from the main loop thread, not from inside one of
  // its own completion callbacks.
  virtual ~BlockBackend() = default;

  virtual const std::string& path() const = 0;
  virtual uint64_t size_bytes() const = 0;
  virtual bool read_only() const = 0;
  // Buffer address/length/offset alignment the image needs (512 or 4096
  // with O_DIRECT, 1 otherwise). Misaligned buffers are bounced internally,
  // as are reads at misaligned offsets/lengths. A write whose offset or
  // length is not a multiple of alignment() fails with -EINVAL (it would
  // need a read-modify-write racing with other writes): a device advertises
  // alignment() as its block size so guests never send one.
  virtual uint32_t alignment() const = 0;
  // The engine doing the I/O: kIoUring or kThreads for image files. Not
  // pure so test doubles need not care; their kAuto means "no engine".
  virtual AioEngine engine() const { return AioEngine::kAuto; }

  // From the attached context's thread. `buffers` point into guest memory and
  // must stay valid until the completion runs. Ranges beyond the end of the
  // image fail with -EINVAL (reads and writes alike); writes, discards and
  // write-zeroes on a read-only backend fail with -EROFS. Inside the image,
  // a read past the end of a file that shrank under us returns zeroes.
  virtual void Read(uint64_t offset, std::vector<iovec> buffers, Completion done) = 0;
  virtual void Write(uint64_t offset, std::vector<iovec> buffers, Completion done) = 0;
  virtual void Flush(Completion done) = 0;
  // Deallocates the range (punch hole, size kept); reads return zeroes after.
  virtual void Discard(uint64_t offset, uint64_t length, Completion done) = 0;
  // Zeroes the range; with `may_unmap` it may deallocate it as well.
  virtual void WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap,
                           Completion done) = 0;

  // Operations started and not yet completed. Any thread.
  virtual uint64_t in_flight() const = 0;
  // From the main loop thread, no lock held, not from one of this
  // backend's completions: returns when in_flight() is 0, polling the main
  // context meanwhile (AioWaitWhileUnlocked). The caller makes sure nothing
  // starts new operations while it drains.
  virtual void Drain() = 0;
  // From the main loop thread, drained (asserted): attaches to `context`.
  virtual void SetAioContext(util::AioContext& context) = 0;
  virtual util::AioContext& context() const = 0;
};

}  // namespace kvmini::block

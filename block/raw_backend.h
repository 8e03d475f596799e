// RawBackend: the BlockBackend over a raw image file or block device.
//
// It validates requests (range, read-only), splits them into system calls
// on the engine of its context, and finishes what the engine leaves half
// done: short transfers are resubmitted for the rest, EAGAIN/EINTR retried,
// O_DIRECT requests with misaligned buffers go through a bounce buffer,
// discard and write-zeroes fall back from punch-hole to zero-range to
// writing zeroes as the file system allows. Reads and writes first try the
// page cache inline (RWF_NOWAIT; a plain call on tmpfs, which refuses that
// flag but never waits for a device) unless that is switched off.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "block/block_backend.h"
#include "block/image_file.h"
#include "block/io_engine.h"
#include "util/aio_context.h"

namespace kvmini::block {

class RawBackend final : public BlockBackend {
 public:
  RawBackend(std::string path, const ImageFile& image, const BlockOptions& options,
             util::AioContext& context, IoEngine& engine);
  ~RawBackend() override;
  RawBackend(const RawBackend&) = delete;
  RawBackend& operator=(const RawBackend&) = delete;

  const std::string& path() const override { return path_; }
  uint64_t size_bytes() const override { return size_bytes_; }
  bool read_only() const override { return read_only_; }
  uint32_t alignment() const override;
  AioEngine engine() const override;

  void Read(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Write(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Flush(Completion done) override;
  void Discard(uint64_t offset, uint64_t length, Completion done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap, Completion done) override;

  uint64_t in_flight() const override { return in_flight_.load(std::memory_order_acquire); }
  void Drain() override;
  void SetAioContext(util::AioContext& context) override;
  util::AioContext& context() const override {
    return *context_.load(std::memory_order_acquire);
  }

 private:
  class Request;
  enum class RequestType : uint8_t { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };
  // How a discard or write-zeroes is being carried out; each falls back to
  // the next when the file system does not support it.
  enum class ZeroMethod : uint8_t { kPunchHole, kZeroRange, kWriteBuffers };
  // How reads (or writes) are tried inline before going to the engine.
  enum class InlineMode : uint8_t {
    kOff,
    kNowait,  // preadv2/pwritev2 with RWF_NOWAIT: done if it needs no device I/O
    // A plain call, on tmpfs/ramfs only: the data is in memory, so it cannot
    // wait for a device, but the kernel refuses RWF_NOWAIT there.
    kMemory,
  };

  Request* NewRequest(RequestType type, uint64_t offset, uint64_t length, Completion done);
  void StartTransfer(RequestType type, uint64_t offset, std::vector<iovec> buffers,
                     Completion done);
  void StartZeroing(RequestType type, uint64_t offset, uint64_t length, ZeroMethod method,
                    Completion done);
  bool InRange(uint64_t offset, uint64_t length) const;
  bool NeedsBounce(uint64_t offset, uint64_t length, const std::vector<iovec>& buffers) const;
  // False if the request was failed instead.
  bool SetUpBounce(Request* request, std::vector<iovec> buffers);
  // True if the transfer was done (or failed) without the engine.
  bool TryInline(Request* request);
  void SubmitStep(Request* request);
  void OnFinished(Request* request, int64_t result);
  void OnTransferProgress(Request* request, int64_t result);
  void OnFallocateFinished(Request* request, int64_t result);
  void Finish(Request* request, int64_t status);
  // Delivers `result` to the request from a bottom half: the way anything
  // decided inside Read()/Write()/... reaches the caller, never re-entrantly.
  void Defer(Request* request, int64_t result);
  void RunDeferred();
  ZeroMethod FirstZeroMethod(bool may_unmap) const;

  const std::string path_;
  const int fd_;
  const uint64_t size_bytes_;
  const bool read_only_;
  const bool direct_;
  const bool memory_backed_;
  const uint32_t offset_alignment_;
  const uint32_t memory_alignment_;
  const AioEngine requested_engine_;

  std::atomic<util::AioContext*> context_;
  std::atomic<IoEngine*> engine_;
  std::atomic<uint64_t> in_flight_{0};

  // Touched only in the context's home thread (or while drained).
  InlineMode inline_reads_;
  InlineMode inline_writes_;
  bool punch_hole_works_ = true;
  bool zero_range_works_ = true;
  std::vector<std::pair<Request*, int64_t>> deferred_;
  std::unique_ptr<util::BottomHalf> deferred_bh_;
};

}  // namespace kvmini::block

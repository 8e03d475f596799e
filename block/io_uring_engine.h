// The io_uring engine: one ring per AioContext, shared by every backend
// attached to that context.
//
// Operations submitted while the loop handles one batch of work (say, all
// the requests a virtqueue kick made available) go out in a single
// io_uring_submit from a bottom half at the end of that loop iteration.
// Completions wake the loop through an eventfd registered with the ring.
// When the submission queue is full, or more operations are outstanding
// than the completion queue can hold, operations wait in a queue instead of
// failing, and go out as room frees up.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>

#include "absl/status/status.h"
#include "block/io_engine.h"
#include "util/aio_context.h"

namespace kvmini::block {

class IoUringEngine final : public util::AioContext::Extension, public IoEngine {
 public:
  // Submission queue size; the completion queue is twice as large.
  static constexpr unsigned kRingEntries = 256;

  // Sets up the ring; check setup_status() before using it.
  explicit IoUringEngine(util::AioContext& context);
  ~IoUringEngine() override;
  IoUringEngine(const IoUringEngine&) = delete;
  IoUringEngine& operator=(const IoUringEngine&) = delete;

  const absl::Status& setup_status() const { return setup_status_; }

  AioEngine kind() const override { return AioEngine::kIoUring; }
  void Submit(IoOperation* operation) override;

  // io_uring_submit calls made so far (read in the home thread): what shows
  // that a batch of operations went to the kernel together.
  uint64_t submit_calls() const { return submit_calls_; }

 private:
  absl::Status SetUp();
  // Fills an SQE for `operation`; false if the submission queue is full.
  bool Prepare(IoOperation* operation);
  void SubmitBatch();
  void ReapCompletions();
  bool HasRoom() const { return prepared_ + in_kernel_ < completion_capacity_; }

  util::AioContext& context_;
  absl::Status setup_status_;
  io_uring ring_{};
  bool ring_ready_ = false;
  int event_fd_ = -1;
  unsigned completion_capacity_ = 0;
  // Everything below is touched only in the context's home thread.
  unsigned prepared_ = 0;   // SQEs filled, not yet taken by the kernel
  unsigned in_kernel_ = 0;  // taken by the kernel, completion not reaped
  std::deque<IoOperation*> waiting_;  // no room in the ring yet
  std::unique_ptr<util::BottomHalf> submit_bh_;
  bool retry_timer_armed_ = false;
  uint64_t submit_calls_ = 0;
};

}  // namespace kvmini::block

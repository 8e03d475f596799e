// The io_uring engine: one ring per AioContext, shared by every backend
// attached to that context.
//
// Operations submitted while the loop handles one batch of work (say, all
// the requests a virtqueue kick made available) go out in a single
// io_uring_submit from a bottom half at the end of that loop iteration.
//
// Completions wake the loop through the ring's own file descriptor, which
// the loop's epoll watches: it is readable exactly while completions wait
// in the ring. That costs nothing per completion, where an eventfd
// registered with the ring needs a read() on every wake-up to re-arm it
// (one system call in three on the QD1 path). Completion callbacks that
// start more I/O (a benchmark keeping its queue full, a short transfer's
// remainder) have it submitted in the same wake-up, in chunks, and the ring
// is looked at again right after each submission, so completions that are
// already there are reaped without another trip through epoll, as fio's
// own loop does.
//
// Before the loop sleeps it spins for a while (AioContext's adaptive
// polling) on the completion queue's tail, so a busy backend's completions
// are reaped without the epoll wake-up.
//
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
  // Submits what is queued and reaps what has completed, alternately, until
  // neither is left (or a few rounds have gone by, so a busy ring cannot
  // starve the loop's other handlers). From the bottom half, the ring's fd
  // handler or the retry timer.
  void SubmitAndReap();
  // One io_uring_submit of everything prepared (and queued, room allowing).
  // Returns what io_uring_submit returned (0 if there was nothing to submit).
  int SubmitPrepared();
  // Runs the callbacks of the completions in the ring; false if none.
  bool ReapCompletions();
  bool HasRoom() const { return prepared_ + in_kernel_ < completion_capacity_; }
  // Completions wait as task work for our next system call (the ring was
  // set up with COOP_TASKRUN and TASKRUN_FLAG).
  bool TaskWorkPending() const;

  util::AioContext& context_;
  absl::Status setup_status_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool watching_ring_fd_ = false;
  bool cooperative_task_run_ = false;
  unsigned completion_capacity_ = 0;
  // Everything below is touched only in the context's home thread.
  unsigned prepared_ = 0;   // SQEs filled, not yet taken by the kernel
  unsigned in_kernel_ = 0;  // taken by the kernel, completion not reaped
  std::deque<IoOperation*> waiting_;  // no room in the ring yet
  std::unique_ptr<util::BottomHalf> submit_bh_;
  bool retry_timer_armed_ = false;
  bool submitting_and_reaping_ = false;
  uint64_t submit_calls_ = 0;
};

}  // namespace kvmini::block

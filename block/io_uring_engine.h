// The io_uring engine: one ring per AioContext, shared by every backend
// attached to that context.
//
// Operations submitted while the loop handles one batch of work (say, all
// the requests a virtqueue kick made available) go out in a single
// io_uring_submit from a bottom half at the end of that loop iteration.
//
// The ring completes requests as deferred task work (DEFER_TASKRUN, Linux
// 6.1): completions wait in the kernel until the loop asks for them, so
// neither the kernel's workers nor interrupts break into the loop thread
// with each one, and one system call posts a whole batch, as fio's ring
// does. SINGLE_ISSUER comes with it: only the context's home thread may
// use the ring, so the ring is created disabled and enabled by the first
// submission there (the engine may be made in another thread). Kernels
// without it get cooperative task run (COOP_TASKRUN, 5.19) instead.
//
// Completions wake the loop through an eventfd registered with the ring.
// The kernel signals it while the loop is not already busy with the ring:
// it is muted while submissions and completions are handled (no wake-up
// from the loop's own reaping), unmuted afterwards, and the ring is looked
// at once more after unmuting so that nothing posted in between is missed.
// Completion callbacks that start more I/O (a benchmark keeping its queue
// full, a short transfer's remainder) have it submitted in the same
// wake-up, each at once, and the ring is looked at again right after each
// submission, so completions that are already there are reaped without
// another trip through epoll, as fio's own loop does.
//
// Before the loop sleeps it spins for a while (AioContext's adaptive
// polling) on the completion queue's tail, so a busy backend's completions
// are reaped without the epoll wake-up.
//
// And it sleeps in the ring (the engine is the context's Sleeper, on
// DEFER_TASKRUN rings): one io_uring_enter waits for a completion, as
// fio's loop does, and runs the task work that posts it; a poll request
// on the context's epoll fd wakes it for everything else (bottom halves
// from other threads, virtqueue kicks, timers through the timeout). The
// eventfd is muted while it sleeps there. Through epoll, a completion
// cost an eventfd wake-up of epoll and one more system call (QD1 reads
// from /dev/shm through io-wq: 28.1 us, 21.3 us sleeping in the ring;
// bench/block/README.md, "Session 8").
//
// When the submission queue is full, or more operations are outstanding
// than the completion queue can hold, operations wait in a queue instead of
// failing, and go out as room frees up.
#pragma once

#include <liburing.h>

#include <deque>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "block/io_engine.h"
#include "util/aio_context.h"
#include "util/event_notifier.h"

namespace kvmini::block {

class IoUringEngine final : public util::AioContext::Extension,
                            public util::AioContext::Sleeper,
                            public IoEngine {
 public:
  // Submission queue size; the completion queue is twice as large.
  static constexpr unsigned kRingEntries = 256;

  // How completions that the kernel posts as task work reach the loop
  // thread (see above); what a kernel refuses falls back down this list.
  enum class TaskRun { kDeferred, kCooperative, kInterrupting };

  // Sets up the ring; check setup_status() before using it. `preferred`
  // is for tests of the fallbacks: kvmini always asks for kDeferred.
  explicit IoUringEngine(util::AioContext& context, TaskRun preferred = TaskRun::kDeferred);
  ~IoUringEngine() override;
  IoUringEngine(const IoUringEngine&) = delete;
  IoUringEngine& operator=(const IoUringEngine&) = delete;

  const absl::Status& setup_status() const { return setup_status_; }
  // What the kernel granted.
  TaskRun task_run() const { return task_run_; }

  AioEngine kind() const override { return AioEngine::kIoUring; }
  void Submit(IoOperation* operation) override;

  // io_uring_submit calls made so far (read in the home thread): what shows
  // that a batch of operations went to the kernel together.
  uint64_t submit_calls() const { return submit_calls_; }
  // Times the loop slept in the ring (read in the home thread).
  uint64_t sleeps() const { return sleeps_; }

  Woken Sleep(int epoll_fd, const timespec* timeout) override;

 private:
  absl::Status SetUp(TaskRun preferred);
  // Makes the calling (home) thread the ring's only submitter; once.
  void EnableInHomeThread();
  // Fills an SQE for `operation`; false if the submission queue is full.
  bool Prepare(IoOperation* operation);
  // Submits what is queued and reaps what has completed, alternately, until
  // neither is left (or a few rounds have gone by, so a busy ring cannot
  // starve the loop's other handlers), with the eventfd muted. From the
  // bottom half, the eventfd's handler or the retry timer.
  void SubmitAndReap();
  void SubmitAndReapRounds();
  // One io_uring_submit of everything prepared (and queued, room allowing).
  // Returns what io_uring_submit returned (0 if there was nothing to submit).
  int SubmitPrepared();
  // Runs the callbacks of the completions in the ring; false if none.
  bool ReapCompletions();
  bool HasRoom() const { return prepared_ + in_kernel_ < completion_capacity_; }
  // Completions wait as task work for our next system call (the ring was
  // set up with DEFER_TASKRUN or COOP_TASKRUN; both come with TASKRUN_FLAG).
  bool TaskWorkPending() const;
  // Whether the completion queue holds the epoll watch's completion.
  bool EpollWatchFired();
  bool CompletionsWaiting() { return io_uring_cq_ready(&ring_) > 0 || TaskWorkPending(); }

  util::AioContext& context_;
  absl::Status setup_status_;
  io_uring ring_{};
  bool ring_ready_ = false;
  // Set up disabled (R_DISABLED), until EnableInHomeThread.
  bool ring_enabled_ = false;
  std::optional<util::EventNotifier> completion_notifier_;
  bool watching_notifier_ = false;
  TaskRun task_run_ = TaskRun::kInterrupting;
  unsigned completion_capacity_ = 0;
  // Everything below is touched only in the context's home thread.
  unsigned prepared_ = 0;   // SQEs filled, not yet taken by the kernel
  unsigned in_kernel_ = 0;  // taken by the kernel, completion not reaped
  std::deque<IoOperation*> waiting_;  // no room in the ring yet
  std::unique_ptr<util::BottomHalf> submit_bh_;
  bool retry_timer_armed_ = false;
  bool submitting_and_reaping_ = false;
  uint64_t submit_calls_ = 0;
  uint64_t sleeps_ = 0;
  bool sleeper_installed_ = false;
  // The poll request on the context's epoll fd that wakes a loop sleeping
  // in the ring: in the ring (armed) until its completion is reaped; still
  // in the submission queue only if the system call that was to submit it
  // failed (the next submission takes it, before any operation).
  bool epoll_watch_armed_ = false;
  bool epoll_watch_unsubmitted_ = false;
};

}  // namespace kvmini::block

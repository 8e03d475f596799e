#include "block/io_uring_engine.h"

#include <linux/falloc.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "util/check.h"
#include "util/log.h"

namespace kvmini::block {
namespace {
// How long to wait before retrying a submission the kernel refused for lack
// of resources while nothing of ours was in flight to wake us up.
constexpr absl::Duration kSubmitRetryDelay = absl::Milliseconds(1);
constexpr unsigned kReapBatch = 64;
// Submit-then-reap rounds per wake-up before the loop's other handlers get
// their turn again.
constexpr unsigned kMaxRounds = 8;
// Requests that completion callbacks start go out in chunks of this many
// while the rest of the callbacks run, not all after the last one: a disk
// then gets new work while it still has some, instead of a whole queue's
// worth at once after going idle. A request waiting in a chunk is one the
// disk does not have. With COOP_TASKRUN (medians of 7 alternating runs
// against fio, randwrite QD32 O_DIRECT on this host's virtio disk): one
// submit per wake-up 0.68, chunks of 8 0.98, of 4 0.99, of 1 1.04. With
// DEFER_TASKRUN, chunks of 1 against 4: /dev/shm randread QD32 807k
// against 737k IOPS (9 runs, ranges apart), randwrite equal; on the disk
// fio and chunks of 1 both reach the host's faster mode (175-200k) in half
// their runs, chunks of 4 never did (15 runs). fio submits each request at
// once too. Requests a loop iteration starts (a virtqueue's batch) still
// go out together, from the bottom half.
constexpr unsigned kSubmitChunk = 1;
// Spinning for completions pays while few requests are in flight: each
// wake-up then costs a request's latency. With more, completions batch up
// while the loop sleeps, and a spinning loop takes a CPU from the kernel's
// io-wq workers doing the requests (on 2 cores, /dev/shm QD32 lost 15-20%
// and QD8 128 KiB reads 10% with the spin; QD1 doubled its IOPS).
constexpr unsigned kMostInFlightWorthSpinning = 4;
// user_data of the epoll watch's poll request; operations are pointers.
constexpr uint64_t kEpollWatchTag = 1;
}  // namespace

IoUringEngine::IoUringEngine(util::AioContext& context, TaskRun preferred)
    : context_(context) {
  setup_status_ = SetUp(preferred);
}

absl::Status IoUringEngine::SetUp(TaskRun preferred) {
  // SUBMIT_ALL: one bad SQE must not hold back the rest of the batch.
  // DEFER_TASKRUN (with SINGLE_ISSUER, which it needs, and R_DISABLED, see
  // the header): completions wait until the loop reaps them. Where it is
  // refused, COOP_TASKRUN: a completion that must be posted from our thread
  // (io-wq workers' on tmpfs, O_DIRECT's) waits for our next system call
  // instead of interrupting a busy loop with an IPI; a sleeping loop is
  // still woken. TASKRUN_FLAG says when such work waits, so the poll check
  // and the reaping can enter the kernel for it. Flags are dropped on
  // kernels that refuse them (DEFER_TASKRUN is 6.1, COOP_TASKRUN 5.19,
  // SUBMIT_ALL 5.18).
  constexpr unsigned kDeferred = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                                 IORING_SETUP_R_DISABLED | IORING_SETUP_TASKRUN_FLAG;
  constexpr unsigned kCooperative = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  const unsigned attempts[] = {IORING_SETUP_SUBMIT_ALL | kDeferred,
                               IORING_SETUP_SUBMIT_ALL | kCooperative, IORING_SETUP_SUBMIT_ALL,
                               0u};
  int result = -EINVAL;
  io_uring_params params{};
  for (unsigned flags :
       std::span(attempts).subspan(preferred == TaskRun::kDeferred      ? 0
                                   : preferred == TaskRun::kCooperative ? 1
                                                                        : 2)) {
    params = io_uring_params{};
    params.cq_entries = 2 * kRingEntries;
    params.flags = flags | IORING_SETUP_CQSIZE;
    result = io_uring_queue_init_params(kRingEntries, &ring_, &params);
    if (result != -EINVAL) break;
  }
  if (result < 0) {
    return absl::ErrnoToStatus(-result, "io_uring_setup");
  }
  task_run_ = (params.flags & IORING_SETUP_DEFER_TASKRUN) != 0  ? TaskRun::kDeferred
              : (params.flags & IORING_SETUP_COOP_TASKRUN) != 0 ? TaskRun::kCooperative
                                                                : TaskRun::kInterrupting;
  ring_ready_ = true;
  ring_enabled_ = (params.flags & IORING_SETUP_R_DISABLED) == 0;
  completion_capacity_ = params.cq_entries;

  absl::StatusOr<util::EventNotifier> notifier = util::EventNotifier::Create();
  if (!notifier.ok()) {
    return absl::Status(notifier.status().code(),
                        absl::StrCat("an eventfd for io_uring completions: ",
                                     notifier.status().message()));
  }
  completion_notifier_ = std::move(*notifier);
  result = io_uring_register_eventfd(&ring_, completion_notifier_->fd());
  if (result < 0) {
    return absl::ErrnoToStatus(-result, "registering an eventfd with the io_uring");
  }

  submit_bh_ = context_.NewBottomHalf([this] { SubmitAndReap(); });
  // The poll check reads the completion queue's tail and the ring's flags
  // from the shared ring: no system call. Completions that are still task
  // work show as IORING_SQ_TASKRUN; reaping enters the kernel to post them.
  // Edge-triggered: each signal wakes the loop once and the eventfd is
  // never read (that read was one system call in four at QD1).
  absl::Status watched = context_.SetFdHandler(
      completion_notifier_->fd(), [this] { SubmitAndReap(); }, nullptr,
      {.has_work = [this] { return CompletionsWaiting(); },
       .worth_spinning = [this] { return in_kernel_ <= kMostInFlightWorthSpinning; }},
      util::AioContext::Trigger::kEdge);
  if (!watched.ok()) {
    return absl::Status(watched.code(),
                        absl::StrCat("watching the io_uring for completions: ", watched.message()));
  }
  watching_notifier_ = true;
  // The timeout of a sleep needs EXT_ARG (5.11; liburing would otherwise
  // queue a timeout request of its own). Only DEFER_TASKRUN rings: the
  // wait runs their task work in the same system call.
  if (task_run_ == TaskRun::kDeferred && (params.features & IORING_FEAT_EXT_ARG) != 0) {
    sleeper_installed_ = context_.InstallSleeper(this);
  }
  return absl::OkStatus();
}

void IoUringEngine::EnableInHomeThread() {
  KVMINI_CHECK(context_.InHomeThread(),
               "the io_uring of event loop '" + context_.name() +
                   "' used outside the thread that runs that loop");
  // The system call itself: Debian 12's liburing (2.3) declares
  // io_uring_enable_rings but its shared library does not export it.
  long result = syscall(SYS_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                        nullptr, 0);
  // Fails only if the ring is already enabled or the sandbox forbids it:
  // both bugs, and a ring that cannot be enabled can do no I/O at all.
  KVMINI_CHECK(result >= 0, absl::StrCat("enabling the io_uring of event loop '",
                                         context_.name(), "': ", strerror(errno)));
  ring_enabled_ = true;
}

IoUringEngine::~IoUringEngine() {
  if (sleeper_installed_) context_.RemoveSleeper(this);
  if (watching_notifier_) context_.RemoveFdHandler(completion_notifier_->fd());
  submit_bh_.reset();
  if (in_kernel_ > 0 || prepared_ > 0 || !waiting_.empty()) {
    // A backend was destroyed (or its context torn down) without Drain():
    // the owners of these operations will never hear back.
    KVMINI_LOG(Error) << "io_uring of event loop '" << context_.name() << "' destroyed with "
                      << in_kernel_ + prepared_ + waiting_.size()
                      << " operations unfinished";
  }
  // Closing the ring also drops the eventfd's registration.
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

void IoUringEngine::Submit(IoOperation* operation) {
  if (!ring_enabled_) EnableInHomeThread();
  if (waiting_.empty() && HasRoom() && Prepare(operation)) {
    ++prepared_;
  } else {
    waiting_.push_back(operation);
  }
  // Inside SubmitAndReap (a completion callback starting the next request)
  // its next round submits this; otherwise the end of this loop iteration.
  if (!submitting_and_reaping_) submit_bh_->Schedule();
}

bool IoUringEngine::Prepare(IoOperation* operation) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) return false;
  // One buffer (most guest requests, every benchmark one) goes out as a
  // plain READ/WRITE, as fio's does: the kernel then has no iovec array to
  // copy in. Disk randwrite QD32 O_DIRECT, where the loop is CPU-bound in
  // the kernel's submission path: 0.1-0.3 us less CPU per request than
  // WRITEV in each of 4 same-mode pairs of runs (bench/block/README.md).
  // The length field is 32 bits: longer buffers stay vectored.
  const bool single_buffer =
      operation->iov_count == 1 &&
      operation->iov[0].iov_len <= std::numeric_limits<unsigned>::max();
  const bool write = operation->kind == IoOperation::Kind::kWritev;
  switch (operation->kind) {
    case IoOperation::Kind::kReadv:
    case IoOperation::Kind::kWritev:
      if (single_buffer) {
        io_uring_prep_rw(write ? IORING_OP_WRITE : IORING_OP_READ, sqe, operation->fd,
                         operation->iov[0].iov_base,
                         static_cast<unsigned>(operation->iov[0].iov_len), operation->offset);
      } else {
        io_uring_prep_rw(write ? IORING_OP_WRITEV : IORING_OP_READV, sqe, operation->fd,
                         operation->iov, static_cast<unsigned>(operation->iov_count),
                         operation->offset);
      }
      break;
    case IoOperation::Kind::kDataSync:
      io_uring_prep_fsync(sqe, operation->fd, IORING_FSYNC_DATASYNC);
      break;
    case IoOperation::Kind::kFallocate:
      io_uring_prep_fallocate(sqe, operation->fd, operation->fallocate_mode,
                              static_cast<off_t>(operation->offset),
                              static_cast<off_t>(operation->length));
      break;
  }
  io_uring_sqe_set_data(sqe, operation);
  return true;
}

void IoUringEngine::SubmitAndReap() {
  // Muted, the kernel does not signal the eventfd for completions this
  // loop is about to reap anyway (or posts itself, running task work).
  // The toggle fails only on kernels before 5.8, which have no flag to
  // mute with: there the loop just wakes up once more per batch, harmless
  // with the re-check below.
  (void)io_uring_cq_eventfd_toggle(&ring_, false);
  SubmitAndReapRounds();
  (void)io_uring_cq_eventfd_toggle(&ring_, true);
  // Whatever arrived while muted signalled nothing. The kernel sets
  // IORING_SQ_TASKRUN (a locked instruction) before it reads the mute flag;
  // the fence orders our unmute before our reading of the ring, so one of
  // the two sides sees the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (CompletionsWaiting()) submit_bh_->Schedule();
}

void IoUringEngine::SubmitAndReapRounds() {
  submitting_and_reaping_ = true;
  int submitted = 0;
  for (unsigned round = 0; round < kMaxRounds; ++round) {
    submitted = SubmitPrepared();
    if (!ReapCompletions()) break;
  }
  submitting_and_reaping_ = false;
  if (prepared_ == 0 && waiting_.empty()) return;
  // Left over: the submission queue was full, or the ring was still busy
  // after kMaxRounds, or the kernel refused the batch.
  if (in_kernel_ > 0) {
    // Each completion signals the eventfd, and its handler comes back here
    // to submit the rest.
    return;
  }
  if (submitted >= 0) {
    submit_bh_->Schedule();
  } else if (!retry_timer_armed_) {
    // The kernel is short of resources and nothing of ours is in flight
    // to make room: try again shortly rather than spin.
    retry_timer_armed_ = true;
    context_.AddTimer(absl::Now() + kSubmitRetryDelay, [this] {
      retry_timer_armed_ = false;
      SubmitAndReap();
    });
  }
}

int IoUringEngine::SubmitPrepared() {
  while (!waiting_.empty() && HasRoom() && Prepare(waiting_.front())) {
    waiting_.pop_front();
    ++prepared_;
  }
  if (prepared_ == 0) return 0;
  int result;
  do {
    result = io_uring_submit(&ring_);
    ++submit_calls_;
  } while (result == -EINTR);
  if (result >= 0) {
    unsigned operations = static_cast<unsigned>(result);
    // The kernel takes submissions in order, and the watch went in first.
    if (epoll_watch_unsubmitted_ && operations > 0) {
      epoll_watch_unsubmitted_ = false;
      --operations;
    }
    prepared_ -= operations;
    in_kernel_ += operations;
  } else {
    // Anything else means a broken ring (a bug), not a failed request:
    // per-request errors arrive in the completions.
    KVMINI_CHECK(result == -EAGAIN || result == -EBUSY,
                 absl::StrCat("io_uring_submit failed: ", strerror(-result)));
  }
  return result;
}

bool IoUringEngine::ReapCompletions() {
  std::array<io_uring_cqe*, kReapBatch> cqes;
  std::array<std::pair<IoOperation*, int>, kReapBatch> finished;
  bool reaped = false;
  while (true) {
    // Runs the task work that posts completions (see SetUp).
    if (TaskWorkPending()) {
      int result = io_uring_get_events(&ring_);
      // -EEXIST would be a thread other than the single issuer: a bug.
      KVMINI_CHECK(result >= 0 || result == -EINTR || result == -EAGAIN || result == -EBUSY,
                   absl::StrCat("io_uring_get_events failed: ", strerror(-result)));
    }
    unsigned count = io_uring_peek_batch_cqe(&ring_, cqes.data(), kReapBatch);
    if (count == 0) break;
    reaped = true;
    unsigned operations = 0;
    for (unsigned i = 0; i < count; ++i) {
      if (io_uring_cqe_get_data64(cqes[i]) == kEpollWatchTag) {
        // The loop collects the epoll events itself; the next sleep re-arms.
        epoll_watch_armed_ = false;
        continue;
      }
      finished[operations++] = {static_cast<IoOperation*>(io_uring_cqe_get_data(cqes[i])),
                                cqes[i]->res};
    }
    // Released before the callbacks run: they may submit more, or poll the
    // loop (and so come back here) themselves.
    io_uring_cq_advance(&ring_, count);
    in_kernel_ -= operations;
    bool refused = false;
    for (unsigned i = 0; i < operations; ++i) {
      finished[i].first->Finished(finished[i].second);
      if (prepared_ >= kSubmitChunk && !refused) refused = SubmitPrepared() < 0;
    }
  }
  return reaped;
}

util::AioContext::Sleeper::Woken IoUringEngine::Sleep(int epoll_fd, const timespec* timeout) {
  // Not before the home thread's first submission enabled the ring; and
  // what waits to be submitted is the submission bottom half's to send.
  if (!ring_enabled_ || prepared_ > 0 || !waiting_.empty()) return Woken::kNotSlept;
  if (!epoll_watch_armed_) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return Woken::kNotSlept;
    io_uring_prep_poll_add(sqe, epoll_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, kEpollWatchTag);
    epoll_watch_armed_ = true;
    epoll_watch_unsubmitted_ = true;
  }
  (void)io_uring_cq_eventfd_toggle(&ring_, false);
  int result;
  if (timeout == nullptr) {
    // Submits the watch if it is new and waits, in one system call.
    result = io_uring_submit_and_wait(&ring_, 1);
    if (result > 0) epoll_watch_unsubmitted_ = false;
  } else {
    result = 0;
    if (epoll_watch_unsubmitted_) {
      result = io_uring_submit(&ring_);
      if (result > 0) epoll_watch_unsubmitted_ = false;
    }
    if (result >= 0) {
      __kernel_timespec kernel_timeout{.tv_sec = timeout->tv_sec, .tv_nsec = timeout->tv_nsec};
      io_uring_cqe* cqe = nullptr;
      result = io_uring_wait_cqe_timeout(&ring_, &cqe, &kernel_timeout);
    }
  }
  // As in SubmitAndReap: unmuted before the caller looks at the ring.
  (void)io_uring_cq_eventfd_toggle(&ring_, true);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // The watch could not be submitted (the kernel is short of resources):
  // it stays queued for the next submission; epoll waits this time.
  if (epoll_watch_unsubmitted_) return Woken::kNotSlept;
  ++sleeps_;
  // -ETIME, -EINTR: woken all the same. Anything else would be a broken
  // ring, which the next submission reports.
  (void)result;
  return EpollWatchFired() ? Woken::kEpollReady : Woken::kOwnWork;
}

bool IoUringEngine::EpollWatchFired() {
  unsigned head;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    if (io_uring_cqe_get_data64(cqe) == kEpollWatchTag) return true;
  }
  return false;
}

bool IoUringEngine::TaskWorkPending() const {
  return task_run_ != TaskRun::kInterrupting &&
         (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

}  // namespace kvmini::block

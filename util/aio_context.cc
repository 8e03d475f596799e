#include "util/aio_context.h"

#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "util/check.h"

namespace kvmini::util {
namespace {
// epoll key of the context's own notifier; handler keys start at 1.
constexpr uint64_t kNotifierKey = 0;

thread_local AioContext* current_context = nullptr;
std::atomic<AioContext*> main_context{nullptr};

int64_t MonotonicNanoseconds() {
  timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// Tells the CPU (and a hypervisor watching for spin loops) that we spin.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
}  // namespace

int64_t PollWindowPolicy::Next(int64_t window_ns, int64_t slept_ns, int64_t max_ns) {
  if (max_ns <= 0) return 0;
  window_ns = std::min(window_ns, max_ns);
  // The event came inside the window: it is right as it is.
  if (slept_ns <= window_ns) return window_ns;
  if (slept_ns > max_ns) {
    // Idle: even the longest window would not have caught it.
    window_ns /= 2;
    return window_ns < kStartNs ? 0 : window_ns;
  }
  // Missed by less than the maximum: a longer window would have caught it.
  return window_ns == 0 ? std::min(kStartNs, max_ns) : std::min(window_ns * 2, max_ns);
}

struct BottomHalf::State {
  explicit State(AioContext::Callback cb) : callback(std::move(cb)) {}
  AioContext::Callback callback;
  std::atomic<bool> scheduled{false};
};

struct AioContext::FdHandler {
  int fd;
  Callback on_readable;
  Callback on_writable;
  PollHandler poll;
  // Set when the handler is replaced or removed, so an event already
  // collected by epoll_wait is not delivered to it any more.
  std::atomic<bool> removed{false};
};

BottomHalf::~BottomHalf() { Cancel(); }

void BottomHalf::Schedule() {
  if (!state_->scheduled.exchange(true)) {
    context_->Enqueue({nullptr, state_});
  }
}

void BottomHalf::Cancel() { state_->scheduled.store(false); }

absl::StatusOr<std::unique_ptr<AioContext>> AioContext::Create(std::string name) {
  absl::StatusOr<EventNotifier> notifier = EventNotifier::Create();
  if (!notifier.ok()) {
    return absl::Status(notifier.status().code(),
                        absl::StrCat("event loop '", name, "': ", notifier.status().message()));
  }
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("event loop '", name, "': epoll_create1"));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kNotifierKey;
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, notifier->fd(), &event) < 0) {
    int saved = errno;
    close(epoll_fd);
    return absl::ErrnoToStatus(saved, absl::StrCat("event loop '", name, "': epoll_ctl"));
  }
  return std::unique_ptr<AioContext>(
      new AioContext(std::move(name), std::move(*notifier), epoll_fd));
}

absl::StatusOr<std::unique_ptr<AioContext>> AioContext::CreateMain() {
  absl::StatusOr<std::unique_ptr<AioContext>> context = Create("main");
  if (!context.ok()) return context;
  AioContext* expected = nullptr;
  KVMINI_CHECK(main_context.compare_exchange_strong(expected, context->get()),
               "a main AioContext already exists");
  SetCurrent(context->get());
  return context;
}

AioContext::AioContext(std::string name, EventNotifier notifier, int epoll_fd)
    : name_(std::move(name)), notifier_(std::move(notifier)), epoll_fd_(epoll_fd) {}

AioContext::~AioContext() {
  {
    // Extensions (e.g. an io_uring) may still hold handlers on this loop.
    std::unordered_map<std::type_index, std::unique_ptr<Extension>> extensions;
    {
      MutexLock lock(&extensions_mutex_);
      extensions.swap(extensions_);
    }
  }
  AioContext* self = this;
  main_context.compare_exchange_strong(self, nullptr);
  if (current_context == this) current_context = nullptr;
  close(epoll_fd_);
}

AioContext* AioContext::Main() { return main_context.load(std::memory_order_acquire); }
AioContext* AioContext::Current() { return current_context; }
void AioContext::SetCurrent(AioContext* context) { current_context = context; }

absl::Status AioContext::SetFdHandler(int fd, Callback on_readable, Callback on_writable,
                                      PollHandler poll, Trigger trigger) {
  if (!on_readable && !on_writable) {
    RemoveFdHandler(fd);
    return absl::OkStatus();
  }
  auto handler = std::make_shared<FdHandler>();
  handler->fd = fd;
  epoll_event event{};
  event.events = (on_readable ? EPOLLIN : 0u) | (on_writable ? EPOLLOUT : 0u) |
                 (trigger == Trigger::kEdge ? EPOLLET : 0u);
  handler->on_readable = std::move(on_readable);
  handler->on_writable = std::move(on_writable);
  handler->poll = std::move(poll);
  if (handler->poll.has_work && !handler->poll.on_work) {
    KVMINI_CHECK(handler->on_readable != nullptr,
                 "a poll handler needs on_work or an on_readable callback");
  }

  std::shared_ptr<FdHandler> replaced;  // destroyed after the lock is released
  MutexLock lock(&handlers_mutex_);
  uint64_t key = next_handler_key_++;
  event.data.u64 = key;
  auto existing = key_by_fd_.find(fd);
  int op = existing == key_by_fd_.end() ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(epoll_fd_, op, fd, &event) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("event loop '", name_,
                                                   "': watching fd ", fd, " with epoll_ctl"));
  }
  if (existing != key_by_fd_.end()) {
    auto old = handlers_.find(existing->second);
    old->second->removed.store(true);
    std::erase(poll_handlers_, old->second);
    replaced = std::move(old->second);
    handlers_.erase(old);
    existing->second = key;
  } else {
    key_by_fd_.emplace(fd, key);
  }
  if (handler->poll.has_work) poll_handlers_.push_back(handler);
  handlers_.emplace(key, std::move(handler));
  return absl::OkStatus();
}

void AioContext::RemoveFdHandler(int fd) {
  std::shared_ptr<FdHandler> removed;
  {
    MutexLock lock(&handlers_mutex_);
    auto existing = key_by_fd_.find(fd);
    if (existing == key_by_fd_.end()) return;
    // The fd may already be closed by its owner: ignore EBADF/ENOENT, the
    // kernel then dropped it from the epoll set by itself.
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    auto handler = handlers_.find(existing->second);
    handler->second->removed.store(true);
    std::erase(poll_handlers_, handler->second);
    removed = std::move(handler->second);
    handlers_.erase(handler);
    key_by_fd_.erase(existing);
  }
  // `removed` (and the callbacks' captures) is destroyed here, outside the
  // lock, unless a dispatch in progress still holds it.
}

void AioContext::SetPollMaxNs(int64_t nanoseconds) {
  poll_max_ns_.store(std::max<int64_t>(nanoseconds, 0), std::memory_order_relaxed);
}

void AioContext::ScheduleOneshot(OneshotCallback callback) {
  Enqueue({std::move(callback), nullptr});
}

std::unique_ptr<BottomHalf> AioContext::NewBottomHalf(Callback callback) {
  return std::unique_ptr<BottomHalf>(
      new BottomHalf(this, std::make_shared<BottomHalf::State>(std::move(callback))));
}

void AioContext::Enqueue(QueuedBottomHalf entry) {
  {
    MutexLock lock(&bottom_halves_mutex_);
    bottom_halves_.push_back(std::move(entry));
    bottom_halves_pending_.store(true, std::memory_order_release);
  }
  // Pairs with the store in Poll(): either the poller sees the entry before
  // it blocks, or we see that it may block and wake it.
  if (poller_may_block_.load(std::memory_order_seq_cst)) notifier_.Set();
}

bool AioContext::HasPendingBottomHalves() {
  MutexLock lock(&bottom_halves_mutex_);
  return !bottom_halves_.empty();
}

bool AioContext::RunBottomHalves() {
  std::deque<QueuedBottomHalf> batch;
  {
    MutexLock lock(&bottom_halves_mutex_);
    batch.swap(bottom_halves_);
    bottom_halves_pending_.store(false, std::memory_order_relaxed);
  }
  bool progress = false;
  // BHs scheduled by these callbacks land in the fresh queue and run in the
  // next pass (the poll after this one does not block while it is non-empty).
  for (QueuedBottomHalf& entry : batch) {
    if (entry.oneshot) {
      std::move(entry.oneshot)();
      progress = true;
    } else if (entry.reusable->scheduled.exchange(false)) {
      entry.reusable->callback();
      progress = true;
    }
  }
  return progress;
}

AioContext::TimerId AioContext::AddTimer(absl::Time deadline, OneshotCallback callback) {
  TimerId id;
  bool earliest;
  {
    MutexLock lock(&timers_mutex_);
    id = next_timer_id_++;
    auto it = timers_.emplace(deadline, Timer{id, std::move(callback)});
    timer_by_id_.emplace(id, it);
    earliest = it == timers_.begin();
  }
  // A blocked poll computed its timeout from the old earliest deadline.
  if (earliest && !InHomeThread()) Notify();
  return id;
}

bool AioContext::CancelTimer(TimerId id) {
  OneshotCallback discarded;
  MutexLock lock(&timers_mutex_);
  auto it = timer_by_id_.find(id);
  if (it == timer_by_id_.end()) return false;
  discarded = std::move(it->second->second.callback);
  timers_.erase(it->second);
  timer_by_id_.erase(it);
  return true;
}

int64_t AioContext::NanosecondsUntilNextTimer() {
  MutexLock lock(&timers_mutex_);
  if (timers_.empty()) return -1;
  absl::Duration left = timers_.begin()->first - absl::Now();
  return left <= absl::ZeroDuration() ? 0 : absl::ToInt64Nanoseconds(left);
}

bool AioContext::RunExpiredTimers() {
  bool progress = false;
  absl::Time now = absl::Now();
  while (true) {
    OneshotCallback callback;
    {
      MutexLock lock(&timers_mutex_);
      if (timers_.empty() || timers_.begin()->first > now) break;
      auto it = timers_.begin();
      callback = std::move(it->second.callback);
      timer_by_id_.erase(it->second.id);
      timers_.erase(it);
    }
    std::move(callback)();
    progress = true;
  }
  return progress;
}

bool AioContext::DispatchFdEvent(uint64_t key, uint32_t events) {
  std::shared_ptr<FdHandler> handler;
  {
    MutexLock lock(&handlers_mutex_);
    auto it = handlers_.find(key);
    if (it == handlers_.end()) return false;
    handler = it->second;
  }
  bool progress = false;
  // Errors and hang-ups are reported to the callbacks, which find out what
  // happened from their own read or write.
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && handler->on_readable &&
      !handler->removed.load()) {
    handler->on_readable();
    progress = true;
  }
  if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && handler->on_writable &&
      !handler->removed.load()) {
    handler->on_writable();
    progress = true;
  }
  return progress;
}

bool AioContext::WorthSpinning() {
  MutexLock lock(&handlers_mutex_);
  for (const std::shared_ptr<FdHandler>& handler : poll_handlers_) {
    if (handler->poll.worth_spinning && !handler->poll.worth_spinning()) return false;
  }
  return true;
}

bool AioContext::RunReadyPollHandlers() {
  // Taken out of the member while in use: a handler may poll this context
  // again (AioWaitWhileUnlocked), and that nested call then finds it empty
  // instead of changing the list being walked here.
  std::vector<std::shared_ptr<FdHandler>> ready = std::move(ready_poll_handlers_);
  {
    // Under the lock: a handler removed from another thread is out of
    // poll_handlers_ once the removal returns, so its check is not called.
    MutexLock lock(&handlers_mutex_);
    for (const std::shared_ptr<FdHandler>& handler : poll_handlers_) {
      if (handler->poll.has_work()) ready.push_back(handler);
    }
  }
  bool ran = !ready.empty();
  for (const std::shared_ptr<FdHandler>& handler : ready) {
    if (handler->removed.load()) continue;
    if (handler->poll.on_work) {
      handler->poll.on_work();
    } else {
      handler->on_readable();
    }
  }
  // Emptied so the kept list does not keep removed handlers alive.
  ready.clear();
  ready_poll_handlers_ = std::move(ready);
  return ran;
}

AioContext::SpinResult AioContext::SpinForWork(int64_t until_ns) {
  while (true) {
    if (RunReadyPollHandlers()) return SpinResult::kRanPollHandler;
    if (bottom_halves_pending_.load(std::memory_order_acquire) ||
        notify_requested_.exchange(false, std::memory_order_acquire)) {
      return SpinResult::kOtherWork;
    }
    if (MonotonicNanoseconds() >= until_ns) return SpinResult::kNothing;
    // pause, not sched_yield, though yielding served a busy host better
    // (QD1 /dev/shm reads with one CPU hog: 8.3 us against 12.2 us). It was
    // taken back when the rig's nested guests triple-faulted in the disk
    // tests, and they have done so with pause as well since (QEMU TCG's
    // nested SVM; docs/TESTING.md), so the yield was likely not the cause:
    // bringing it back waits for a check on real KVM.
    CpuRelax();
  }
}

bool AioContext::Poll(bool blocking) {
  KVMINI_CHECK(current_context == nullptr || current_context == this,
               "AioContext::Poll called from a thread that runs another context");
  bool progress = RunBottomHalves();

  bool may_sleep = blocking && !progress;
  int64_t idle_since = 0;
  int64_t max_ns = poll_max_ns();
  int64_t window = poll_window_ns_.load(std::memory_order_relaxed);
  if (may_sleep && max_ns > 0 && window > 0 && WorthSpinning()) {
    idle_since = MonotonicNanoseconds();
    int64_t spin_ns = std::min(window, max_ns);
    int64_t timer_ns = NanosecondsUntilNextTimer();
    if (timer_ns >= 0) spin_ns = std::min(spin_ns, timer_ns);
    SpinResult spun = SpinForWork(idle_since + spin_ns);
    // Found work (or a wake-up) without sleeping: the window is right.
    if (spun != SpinResult::kNothing) may_sleep = false;
    if (spun == SpinResult::kRanPollHandler) progress = true;
  } else if (may_sleep && max_ns > 0) {
    idle_since = MonotonicNanoseconds();
  }

  timespec timeout{0, 0};
  timespec* timeout_pointer = &timeout;
  if (may_sleep) {
    poller_may_block_.store(true, std::memory_order_seq_cst);
    if (!HasPendingBottomHalves()) {
      int64_t nanos = NanosecondsUntilNextTimer();
      if (nanos < 0) {
        timeout_pointer = nullptr;
      } else {
        timeout.tv_sec = nanos / 1'000'000'000;
        timeout.tv_nsec = nanos % 1'000'000'000;
      }
    }
  }

  // A sleeper sleeps only for a real wait: with a zero timeout (bottom
  // halves pending) epoll's non-blocking look is all there is to do.
  Sleeper* sleeper = may_sleep && (timeout_pointer == nullptr || timeout.tv_sec > 0 ||
                                   timeout.tv_nsec > 0)
                         ? sleeper_.load(std::memory_order_acquire)
                         : nullptr;
  Sleeper::Woken woken = sleeper != nullptr ? sleeper->Sleep(epoll_fd_, timeout_pointer)
                                            : Sleeper::Woken::kNotSlept;
  std::array<epoll_event, 64> events;
  int count = 0;
  if (woken == Sleeper::Woken::kNotSlept) {
    count = epoll_pwait2(epoll_fd_, events.data(), events.size(), timeout_pointer, nullptr);
  } else if (woken == Sleeper::Woken::kEpollReady) {
    timespec now{0, 0};
    count = epoll_pwait2(epoll_fd_, events.data(), events.size(), &now, nullptr);
  }
  poller_may_block_.store(false, std::memory_order_relaxed);
  if (may_sleep) {
    int64_t slept = max_ns > 0 ? MonotonicNanoseconds() - idle_since : 0;
    poll_window_ns_.store(PollWindowPolicy::Next(window, slept, max_ns),
                          std::memory_order_relaxed);
  }
  // What woke the sleeper is found by its poll check (with polling off as
  // well: it is how the sleeper's own work is handled).
  if (woken != Sleeper::Woken::kNotSlept) progress |= RunReadyPollHandlers();
  if (count < 0) {
    KVMINI_CHECK(errno == EINTR, "epoll_pwait2 failed");
    count = 0;
    // What interrupts the wait is mostly io_uring task work (rings set up
    // with COOP_TASKRUN, on kernels without DEFER_TASKRUN, wake a sleeping
    // thread that way), which ran on the way out and has posted its
    // completions by now: the poll checks find them without a second epoll
    // round (one epoll call per QD1 O_DIRECT read instead of two). With
    // polling off (a cap of 0) the checks are never used.
    if (max_ns > 0) progress |= RunReadyPollHandlers();
  }
  for (int i = 0; i < count; ++i) {
    if (events[i].data.u64 == kNotifierKey) {
      // Before the read: a Notify() racing with it leaves the flag set,
      // which at worst ends one later spin early.
      notify_requested_.store(false, std::memory_order_relaxed);
      notifier_.TestAndClear();
      continue;
    }
    progress |= DispatchFdEvent(events[i].data.u64, events[i].events);
  }
  progress |= RunExpiredTimers();
  progress |= RunBottomHalves();
  return progress;
}

}  // namespace kvmini::util

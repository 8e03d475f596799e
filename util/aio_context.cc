#include "util/aio_context.h"

#include <sys/epoll.h>
#include <unistd.h>

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
}  // namespace

struct BottomHalf::State {
  explicit State(AioContext::Callback cb) : callback(std::move(cb)) {}
  AioContext::Callback callback;
  std::atomic<bool> scheduled{false};
};

struct AioContext::FdHandler {
  int fd;
  Callback on_readable;
  Callback on_writable;
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

absl::Status AioContext::SetFdHandler(int fd, Callback on_readable, Callback on_writable) {
  if (!on_readable && !on_writable) {
    RemoveFdHandler(fd);
    return absl::OkStatus();
  }
  auto handler = std::make_shared<FdHandler>();
  handler->fd = fd;
  epoll_event event{};
  event.events = (on_readable ? EPOLLIN : 0u) | (on_writable ? EPOLLOUT : 0u);
  handler->on_readable = std::move(on_readable);
  handler->on_writable = std::move(on_writable);

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
    replaced = std::move(old->second);
    handlers_.erase(old);
    existing->second = key;
  } else {
    key_by_fd_.emplace(fd, key);
  }
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
    removed = std::move(handler->second);
    handlers_.erase(handler);
    key_by_fd_.erase(existing);
  }
  // `removed` (and the callbacks' captures) is destroyed here, outside the
  // lock, unless a dispatch in progress still holds it.
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

bool AioContext::Poll(bool blocking) {
  KVMINI_CHECK(current_context == nullptr || current_context == this,
               "AioContext::Poll called from a thread that runs another context");
  bool progress = RunBottomHalves();

  timespec timeout{0, 0};
  timespec* timeout_pointer = &timeout;
  if (blocking && !progress) {
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

  std::array<epoll_event, 64> events;
  int count = epoll_pwait2(epoll_fd_, events.data(), events.size(), timeout_pointer, nullptr);
  poller_may_block_.store(false, std::memory_order_relaxed);
  if (count < 0) {
    KVMINI_CHECK(errno == EINTR, "epoll_pwait2 failed");
    count = 0;
  }
  for (int i = 0; i < count; ++i) {
    if (events[i].data.u64 == kNotifierKey) {
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

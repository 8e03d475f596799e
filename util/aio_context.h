// AioContext: the event loop that the main thread and every IOThread run.
//
// It multiplexes fd handlers (epoll), bottom halves (callbacks scheduled from
// any thread to run in this loop) and timers. epoll rather than io_uring
// polling: it works under every kernel and seccomp profile we support, and
// the block layer's io_uring completions reach the loop through an eventfd
// registered with the ring and watched here (edge-triggered, see Trigger),
// so little is lost by keeping the loop itself simple. A Sleeper (the
// io_uring engine, once a backend uses it) may take over the sleep itself:
// the loop then sleeps in io_uring_enter, watching the epoll fd from the
// ring, and a completion wakes it directly instead of through the eventfd
// and epoll.
//
// Adaptive polling (in the spirit of QEMU's poll-max-ns): an fd handler may
// also register a cheap "is there work?" check (no system call: a ring
// index in memory). Before Poll(true) sleeps in epoll, the home thread spins
// on those checks, the bottom-half queue and Notify() for up to the current
// poll window, and runs what is ready without sleeping. Waking a sleeping
// thread costs tens of microseconds on a virtualised host, so a loop that is
// kept busy should not sleep at all. The window adapts: it grows when the
// event came soon after the window ran out (spinning a little longer would
// have caught it), and shrinks when the thread slept longer than the
// maximum (the loop is idle; spinning only burns CPU). It never spins past
// the next timer. A sleep that a signal interrupts (io_uring task work
// wakes the thread that way on kernels without DEFER_TASKRUN) is followed
// by one look at the checks before the next epoll round.
//
// Threading: each context has one home thread that calls Poll(). Handlers,
// bottom halves and timers may be added or removed from any thread; their
// callbacks always run in the home thread. A handler removed from another
// thread may still be running when the removal returns; code that must know
// it has stopped removes it from the home thread (in a bottom half).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <typeindex>
#include <unordered_map>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "util/event_notifier.h"
#include "util/mutex.h"

namespace kvmini::util {

class AioContext;

// A reusable bottom half. Schedule() from any thread makes the owning
// context run the callback once, soon; scheduling an already scheduled BH
// does nothing. Destroying it cancels it; destroy it in the home thread (or
// while the context is not polling) so it cannot be running at that moment.
class BottomHalf {
 public:
  ~BottomHalf();
  BottomHalf(const BottomHalf&) = delete;
  BottomHalf& operator=(const BottomHalf&) = delete;

  void Schedule();
  // Unschedules it if it has not started running yet.
  void Cancel();

  struct State;

 private:
  friend class AioContext;
  BottomHalf(AioContext* context, std::shared_ptr<State> state)
      : context_(context), state_(std::move(state)) {}
  AioContext* context_;
  std::shared_ptr<State> state_;
};

// The policy of the adaptive poll window, on its own so it can be tested
// without timing anything.
struct PollWindowPolicy {
  // The first non-zero window: short enough to cost little when it misses.
  static constexpr int64_t kStartNs = 4096;
  // Window after a sleep of `slept_ns` (measured from when the loop had
  // nothing to do, including the spin) with `window_ns` and a cap of
  // `max_ns` (0: polling off).
  static int64_t Next(int64_t window_ns, int64_t slept_ns, int64_t max_ns);
};

// A poll handler, spun on before an AioContext's loop sleeps (see above).
// At namespace level so its members can have defaults that a default
// argument of AioContext's own functions may use.
struct PollHandler {
  // Whether its fd handler has work, without a system call. Runs in the
  // home thread while the context's handler lock is held: it must be cheap
  // and must not call into the context.
  absl::AnyInvocable<bool()> has_work = nullptr;
  // Run when `has_work` said yes; empty: the fd handler's on_readable.
  absl::AnyInvocable<void()> on_work = nullptr;
  // Optional, asked once before each spin: false when spinning would only
  // take a CPU from the work being waited for (say, many requests in
  // flight in kernel workers, whose completions batch up while the loop
  // sleeps). Any handler saying false makes the loop sleep at once.
  absl::AnyInvocable<bool()> worth_spinning = nullptr;
};

class AioContext {
 public:
  using Callback = absl::AnyInvocable<void()>;
  using PollHandler = util::PollHandler;
  // QEMU's default poll-max-ns.
  static constexpr int64_t kDefaultPollMaxNs = 32768;
  using OneshotCallback = absl::AnyInvocable<void() &&>;
  using TimerId = uint64_t;

  // Per-context services owned by other modules (e.g. block/'s io_uring):
  // created on first use, destroyed with the context before its handlers.
  class Extension {
   public:
    virtual ~Extension() = default;
  };

  // Something the home thread can sleep in instead of epoll, whose own
  // events then wake it directly: block/'s io_uring (its completions
  // would otherwise signal an eventfd that wakes epoll, and the loop would
  // enter the ring again to fetch them).
  class Sleeper {
   public:
    enum class Woken {
      kNotSlept,    // could not sleep now: the loop sleeps in epoll instead
      kOwnWork,     // its own events (or the timeout, or a signal)
      kEpollReady,  // the epoll fd became readable (perhaps its own too)
    };
    virtual ~Sleeper() = default;
    // In the home thread: sleeps until `epoll_fd` is readable, one of its
    // own events arrives or `timeout` (null: none) has passed. Its own
    // events are handled afterwards through its fd handler's poll check.
    virtual Woken Sleep(int epoll_fd, const timespec* timeout) = 0;
  };
  // Makes `sleeper` the context's sleeper unless it has one; any thread.
  // Whoever installed one removes it before destroying it, while the home
  // thread is not polling.
  bool InstallSleeper(Sleeper* sleeper) {
    Sleeper* none = nullptr;
    return sleeper_.compare_exchange_strong(none, sleeper, std::memory_order_acq_rel);
  }
  void RemoveSleeper(Sleeper* sleeper) {
    sleeper_.compare_exchange_strong(sleeper, nullptr, std::memory_order_acq_rel);
  }

  static absl::StatusOr<std::unique_ptr<AioContext>> Create(std::string name);
  // Creates the process's main context and makes it current in the calling
  // thread, which becomes the main loop thread. Only one may exist at a time.
  static absl::StatusOr<std::unique_ptr<AioContext>> CreateMain();
  ~AioContext();
  AioContext(const AioContext&) = delete;
  AioContext& operator=(const AioContext&) = delete;

  // The main context, or null if none exists.
  static AioContext* Main();
  // The context whose loop the calling thread runs, or null.
  static AioContext* Current();
  static void SetCurrent(AioContext* context);
  bool InHomeThread() const { return Current() == this; }
  static bool InMainThread() { return Main() != nullptr && Main()->InHomeThread(); }

  const std::string& name() const { return name_; }

  // When a callback runs: kLevel while the fd stays readable / writable
  // (the callback must consume what made it so), kEdge once each time the
  // fd's owner signals it (for an eventfd that need not be read: each
  // write wakes the loop once, and no read() is spent clearing it).
  enum class Trigger { kLevel, kEdge };

  // Sets (replacing any previous) the callbacks for `fd` becoming readable /
  // writable. Passing two empty callbacks removes the handler. Safe from
  // inside any callback, including the handler's own. `poll` (optional) is
  // spun on before the loop sleeps; it is removed with the fd handler.
  // Once RemoveFdHandler (or a replacing SetFdHandler) returns, its check
  // is never called again; its on_work follows the rule of the callbacks.
  absl::Status SetFdHandler(int fd, Callback on_readable, Callback on_writable = nullptr,
                            PollHandler poll = {}, Trigger trigger = Trigger::kLevel);
  void RemoveFdHandler(int fd);

  // Longest poll window in nanoseconds; 0 turns polling off. Any thread.
  void SetPollMaxNs(int64_t nanoseconds);
  int64_t poll_max_ns() const { return poll_max_ns_.load(std::memory_order_relaxed); }
  // The current window (adapted by the home thread). Any thread.
  int64_t poll_window_ns() const { return poll_window_ns_.load(std::memory_order_relaxed); }

  // Runs `callback` once in this context's loop. Safe from any thread.
  void ScheduleOneshot(OneshotCallback callback);
  std::unique_ptr<BottomHalf> NewBottomHalf(Callback callback);

  // Runs `callback` once at or after `deadline` (absl::Now() clock).
  TimerId AddTimer(absl::Time deadline, OneshotCallback callback);
  // Returns whether the timer was still pending.
  bool CancelTimer(TimerId id);

  // Runs pending bottom halves, ready fd handlers and expired timers. With
  // `blocking`, waits for something to do first. Returns whether any
  // callback ran (waking up through Notify() alone is not progress).
  bool Poll(bool blocking);
  // Wakes a blocked Poll() (or makes the next one return at once).
  void Notify() {
    notify_requested_.store(true, std::memory_order_release);
    notifier_.Set();
  }

  // The extension of type T, created with `make` on first use.
  template <typename T, typename Make>
  T& GetOrCreateExtension(Make make) {
    MutexLock lock(&extensions_mutex_);
    auto& slot = extensions_[std::type_index(typeid(T))];
    if (!slot) slot = make();
    return static_cast<T&>(*slot);
  }

 private:
  friend class BottomHalf;
  struct FdHandler;
  struct Timer {
    TimerId id;
    OneshotCallback callback;
  };
  struct QueuedBottomHalf {
    OneshotCallback oneshot;                     // either this,
    std::shared_ptr<BottomHalf::State> reusable;  // or this.
  };

  AioContext(std::string name, EventNotifier notifier, int epoll_fd);
  void Enqueue(QueuedBottomHalf entry);
  bool RunBottomHalves();
  bool HasPendingBottomHalves();
  bool RunExpiredTimers();
  // Nanoseconds until the next timer (0 if one is due), or -1 if none.
  int64_t NanosecondsUntilNextTimer();
  bool DispatchFdEvent(uint64_t key, uint32_t events);
  // Runs the handlers whose poll check finds work; false if none did.
  bool RunReadyPollHandlers();
  enum class SpinResult { kNothing, kRanPollHandler, kOtherWork };
  // Spins on the poll checks, bottom halves and Notify() until something
  // turns up or CLOCK_MONOTONIC reaches `until_ns`.
  SpinResult SpinForWork(int64_t until_ns);
  // Whether every poll handler finds spinning worthwhile now.
  bool WorthSpinning();

  const std::string name_;
  const EventNotifier notifier_;
  const int epoll_fd_;
  // Set while the home thread may be blocked in epoll: schedulers then write
  // the notifier. Checked after queueing, so no wake-up is lost.
  std::atomic<bool> poller_may_block_{false};
  // Set by Notify() so a spinning home thread stops at once.
  std::atomic<bool> notify_requested_{false};
  // Mirrors !bottom_halves_.empty() for the spin, which takes no lock for it.
  std::atomic<bool> bottom_halves_pending_{false};
  std::atomic<int64_t> poll_max_ns_{kDefaultPollMaxNs};
  std::atomic<int64_t> poll_window_ns_{0};  // written by the home thread only
  std::atomic<Sleeper*> sleeper_{nullptr};

  Mutex bottom_halves_mutex_;
  std::deque<QueuedBottomHalf> bottom_halves_ ABSL_GUARDED_BY(bottom_halves_mutex_);

  Mutex handlers_mutex_;
  uint64_t next_handler_key_ ABSL_GUARDED_BY(handlers_mutex_) = 1;
  std::unordered_map<int, uint64_t> key_by_fd_ ABSL_GUARDED_BY(handlers_mutex_);
  std::unordered_map<uint64_t, std::shared_ptr<FdHandler>> handlers_
      ABSL_GUARDED_BY(handlers_mutex_);
  // The handlers that have a poll check (a subset of handlers_).
  std::vector<std::shared_ptr<FdHandler>> poll_handlers_ ABSL_GUARDED_BY(handlers_mutex_);
  // Home thread only (RunReadyPollHandlers): the list of poll handlers
  // found ready, kept between uses so a poll hit does not allocate. Empty
  // between uses.
  std::vector<std::shared_ptr<FdHandler>> ready_poll_handlers_;

  Mutex timers_mutex_;
  TimerId next_timer_id_ ABSL_GUARDED_BY(timers_mutex_) = 1;
  std::multimap<absl::Time, Timer> timers_ ABSL_GUARDED_BY(timers_mutex_);
  std::unordered_map<TimerId, std::multimap<absl::Time, Timer>::iterator> timer_by_id_
      ABSL_GUARDED_BY(timers_mutex_);

  Mutex extensions_mutex_;
  std::unordered_map<std::type_index, std::unique_ptr<Extension>> extensions_
      ABSL_GUARDED_BY(extensions_mutex_);
};

}  // namespace kvmini::util

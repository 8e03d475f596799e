#include "util/aio_wait.h"

#include <atomic>
#include <utility>

#include "util/check.h"

namespace kvmini::util {
namespace {
// Threads currently inside AioWaitWhileUnlocked (only ever the main thread,
// possibly nested). One per process, like the main loop itself.
std::atomic<int> waiter_count{0};
}  // namespace

void AioWaitKick() {
  if (waiter_count.load(std::memory_order_seq_cst) > 0) {
    if (AioContext* main = AioContext::Main()) main->Notify();
  }
}

void AioWaitWhileUnlocked(absl::FunctionRef<bool()> keep_waiting) {
  AioContext* main = AioContext::Main();
  KVMINI_CHECK(main != nullptr && main->InHomeThread(),
               "AioWaitWhileUnlocked must be called from the main loop thread");
  KVMINI_CHECK(LocksHeldByThisThread() == 0,
               "AioWaitWhileUnlocked called while holding a lock");
  // Counted before the first test of the condition: a thread that changes
  // it afterwards sees the count and kicks.
  waiter_count.fetch_add(1, std::memory_order_seq_cst);
  while (keep_waiting()) {
    main->Poll(/*blocking=*/true);
  }
  waiter_count.fetch_sub(1, std::memory_order_seq_cst);
}

void AioWaitBhOneshot(AioContext& context, absl::AnyInvocable<void() &&> callback) {
  AioContext* main = AioContext::Main();
  KVMINI_CHECK(main != nullptr && main->InHomeThread(),
               "AioWaitBhOneshot must be called from the main loop thread");
  KVMINI_CHECK(LocksHeldByThisThread() == 0, "AioWaitBhOneshot called while holding a lock");
  if (&context == main) {
    std::move(callback)();
    return;
  }
  std::atomic<bool> done{false};
  context.ScheduleOneshot([&callback, &done] {
    std::move(callback)();
    done.store(true, std::memory_order_release);
    AioWaitKick();
  });
  AioWaitWhileUnlocked([&done] { return !done.load(std::memory_order_acquire); });
}

void AioWaitBhOneshot(AioContext& context, absl::AnyInvocable<void() &&> callback,
                      const Mutex& /*lock_the_callback_may_take*/) {
  AioWaitBhOneshot(context, std::move(callback));
}

}  // namespace kvmini::util

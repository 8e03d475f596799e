// Waiting in the main loop without blocking it, and the oneshot bottom-half
// wait through which device dataplanes are started and stopped.
//
// The rule these functions enforce is the lesson of QEMU's dataplane hangs:
// never block waiting for another thread while holding a lock that thread
// may need. So they are called from the main loop thread with no
// util::Mutex held (checked at run time), and while they wait they keep
// polling the main context, so vCPU requests, control clients and
// completions that the other thread may be waiting for are still served.
#pragma once

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "util/aio_context.h"
#include "util/mutex.h"

namespace kvmini::util {

// Wakes the main loop if a thread is waiting in AioWaitWhileUnlocked(). Call
// it after changing anything such a wait's condition may read.
void AioWaitKick();

// From the main loop thread only (asserted; never from an IOThread): polls
// the main context until `keep_waiting` returns false. No util::Mutex may be
// held (asserted).
void AioWaitWhileUnlocked(absl::FunctionRef<bool()> keep_waiting);

// Runs `callback` as a oneshot bottom half in `context` and returns once it
// has run. From the main loop thread, with no util::Mutex held (both
// asserted). If `context` is the main context, runs `callback` directly.
// `context` must be running (its thread polling).
void AioWaitBhOneshot(AioContext& context, absl::AnyInvocable<void() &&> callback);

// The same, for a caller that owns a lock the callback (or the thread it
// runs in) may take: naming it lets clang's thread-safety analysis reject,
// at compile time, a call made while that lock is held.
void AioWaitBhOneshot(AioContext& context, absl::AnyInvocable<void() &&> callback,
                      const Mutex& lock_the_callback_may_take)
    ABSL_LOCKS_EXCLUDED(lock_the_callback_may_take);

}  // namespace kvmini::util

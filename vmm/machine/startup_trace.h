// Start-up phase instants for bench/vmm/startup_bench: when the
// KVMINI_TRACE_STARTUP environment variable is set (to anything), each
// MarkStartupPhase("PHASE") records the CLOCK_MONOTONIC instant, and
// FlushStartupTrace() logs them all, one line each:
//   kvmini: startup: PHASE at CLOCK_MONOTONIC N ns
// so the bench can say which phase a slow start-up spent its time in, and
// the process's own peak RSS ("startup: peak RSS VmHWM N kB"). The
// lines are written at the end, not as they happen: a write per phase
// would wake the reading bench on our two shared cores mid-start-up.
// Without the variable a mark costs one load of a cached flag.
#pragma once

#include "absl/strings/string_view.h"

namespace kvmini::vmm {

inline constexpr const char* kTraceStartupVariable = "KVMINI_TRACE_STARTUP";

// Reads the environment variable once (the first call; make it from the
// main thread before other threads exist) and caches the answer.
bool StartupTraceEnabled();

// Records the phase with the current CLOCK_MONOTONIC instant when tracing
// is enabled. Any thread; no system call. Past the first 32 marks, and past
// 63 characters of a name, the rest is dropped.
void MarkStartupPhase(absl::string_view phase);

// Logs the peak RSS so far and the marks recorded so far that were not
// logged yet.
// Call it once every thread that marked has been joined (or from the
// thread that made all of them).
void FlushStartupTrace();

}  // namespace kvmini::vmm

// seccomp sandboxing: once a kvmini thread is set up, it installs the
// allow-list for its kind of thread (syscall_lists.h) on itself. Any other
// system call stops the whole process with one line on stderr naming the
// thread and the call:
//   kvmini: seccomp: thread 'io0' (IOThread) made forbidden system call socket (41); ...
//
// Filters are per thread (no TSYNC): each kind gets its own list, and a
// thread created later inherits its creator's filter (and may add its own,
// which can only restrict it further). See vmm/sandbox/README.md for where
// each kind of thread installs its filter and what set-up must be finished
// by then.
#pragma once


#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvmini::vmm::sandbox {

enum class ThreadKind {
  kMain,         // the main loop: control socket, signals, device life cycle
  kVcpu,         // KVM_RUN and the device register handlers it dispatches to
  kIoThread,     // an IOThread's event loop (dataplanes, io_uring completions)
  kBlockWorker,  // a worker of block/'s thread-pool I/O engine
  kStartupHelper,  // the start-up thread that measures the CPU frequency
};

// "main", "vCPU", "IOThread", "block worker", "start-up helper".
absl::string_view ThreadKindName(ThreadKind kind);

// The process-wide switch behind --seccomp=on|off; on by default. Set it
// before the first InstallSeccompFilter() call.
void SetSeccompEnabled(bool enabled);
bool SeccompEnabled();
// Parses a --seccomp value ("on" or "off") and sets the switch. Anything
// else is an InvalidArgument error that says what is accepted.
absl::Status SetSeccompMode(absl::string_view value);

// Installs `kind`'s filter on the calling thread, and only on it. Does
// nothing (and succeeds) when the switch is off. The first call in the
// process also compiles every kind's filter and installs the SIGSYS
// handler that reports violations, so make it before the process's first
// filter exists (in practice: the machine's set-up is done, the main thread
// has not installed its own filter yet). Errors say what failed and why
// (e.g. a kernel without seccomp filters); the caller should stop then
// rather than run unprotected.
absl::Status InstallSeccompFilter(ThreadKind kind);

// Compiles the filters and installs the violation handler now (what the
// first InstallSeccompFilter() does), so that later installs are a single
// system call each. Idempotent; does nothing when the switch is off.
absl::Status PrepareSeccompFilters();

// The once-per-process lazy set-up of libc and Abseil that would otherwise
// happen on first use, under a filter, with calls no filter allows (see
// seccomp.cc): quick (well under a millisecond). PrepareSeccompFilters()
// does it too. Thread-safe; later calls return at once.
void WarmUpLazyLibraryState();

// Abseil's once-per-process CPU-frequency measurement, which absl::Mutex
// needs the first time a thread queues on a contended lock: it sleeps 1 ms
// and then 2 ms (longer when the two disagree). Run it early on a helper
// thread so that no vCPU stalls on it; nothing waits for it. It works under
// any filter: it first tries to read a /sys file, and every filter answers
// plain read-only opens with ENOENT (syscall_lists.h), so it measures.
void MeasureCpuFrequency();

}  // namespace kvmini::vmm::sandbox

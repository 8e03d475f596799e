// Reporting a seccomp violation. The filters answer a forbidden call with
// SECCOMP_RET_TRAP; the SIGSYS handler installed here writes one line
// naming the thread and the system call, then ends the process with SIGSYS
// (default action: terminate, core dump where enabled).
//
// The handler runs inside a sandboxed thread, so it only uses write(2),
// getpid/gettid, rt_sigaction(SIGSYS) and tgkill, all on every allow-list,
// and strings prepared before any filter existed: the system-call name
// table and each thread's label.
#pragma once

#include "absl/status/status.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {

// Once per process, before the first filter: fills the name table and
// installs the SIGSYS handler.
absl::Status InstallViolationHandler();

// Records the calling thread's name (as pthread_setname_np set it) and
// kind for the report. Call before installing its filter.
void LabelThisThread(ThreadKind kind);

}  // namespace kvmini::vmm::sandbox

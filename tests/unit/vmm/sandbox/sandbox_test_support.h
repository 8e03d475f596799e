// Helpers for the seccomp tests: running code in a fresh thread that has
// installed one kind's filter (the test's own main thread never gets one,
// except inside a death-test child), and the pattern a violation report
// must match.
#pragma once

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "util/iothread.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox::testing {

// Starts a thread named `thread_name`, installs `kind`'s filter in it, runs
// `body` there and joins it. Returns the install's status (the body does
// not run if it failed).
absl::Status RunInFilteredThread(ThreadKind kind, const std::string& thread_name,
                                 absl::AnyInvocable<void() &&> body);

// Starts an IOThread named `name` that has installed the IOThread filter
// (through a oneshot bottom half, as the machine does it). From the main
// loop thread.
absl::StatusOr<std::unique_ptr<util::IOThread>> StartFilteredIoThread(const std::string& name);

// The regular expression (gtest death-test syntax) of the report for
// `syscall_name` made by a thread named `thread_name` of `kind`.
std::string ViolationPattern(absl::string_view thread_name, ThreadKind kind,
                             absl::string_view syscall_name);

}  // namespace kvmini::vmm::sandbox::testing

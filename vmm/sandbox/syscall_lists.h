// The seccomp allow-lists as data: which system calls each kind of kvmini
// thread may make once it is set up, and for a few of them which argument
// values. seccomp.cc compiles them into BPF; README.md explains each entry.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {

// Holds when (argument[index] & mask) == value; with `differs`, when
// argument[index] != value (libseccomp has no masked inequality, so the
// mask must then be all ones).
struct ArgumentCondition {
  unsigned index = 0;
  uint64_t mask = ~uint64_t{0};
  uint64_t value = 0;
  bool differs = false;
};

struct AllowedSyscall {
  long number = -1;  // x86-64 system call number (SYS_...)
  // All must hold; empty means any arguments. A call listed several times
  // is allowed when any one of its entries matches.
  std::vector<ArgumentCondition> conditions;
};

// A call refused with an error instead of a trap.
struct RefusedSyscall {
  long number = -1;
  int error = 0;  // errno the caller gets
  // All must hold for the refusal; empty means any arguments.
  std::vector<ArgumentCondition> conditions;
};

// `pid` is the process's id: signals may only be sent within the process.
// Sanitizer builds (ASan, TSan) add what their run-time needs.
std::vector<AllowedSyscall> AllowList(ThreadKind kind, pid_t pid);

// Plain read-only opens (flags exactly O_RDONLY) fail with ENOENT on every
// list, for Abseil's lazy CPU-frequency probe (seccomp.h,
// MeasureCpuFrequency); every other open traps.
// Thread and process creation (clone, clone3) fail with EPERM on every
// list rather than trap: glibc makes them with every signal blocked, and
// the kernel turns a trap with SIGSYS blocked into a silent SIGSYS death,
// while EPERM reaches the caller, whose error says what it was doing.
// The one exception: LeakSanitizer's helper in an ASan build's main
// thread (AllowList).
std::vector<RefusedSyscall> RefusedList(ThreadKind kind);

// Which sanitizer this build has: GCC says so with __SANITIZE_*__, clang
// with __has_feature. 1 or 0, for #if as well as for the functions below.
#if defined(__has_feature)
#define KVMINI_SANDBOX_HAS_FEATURE(feature) __has_feature(feature)
#else
#define KVMINI_SANDBOX_HAS_FEATURE(feature) 0
#endif
#if defined(__SANITIZE_ADDRESS__) || KVMINI_SANDBOX_HAS_FEATURE(address_sanitizer)
#define KVMINI_SANDBOX_ASAN_BUILD 1
#else
#define KVMINI_SANDBOX_ASAN_BUILD 0
#endif
#if defined(__SANITIZE_THREAD__) || KVMINI_SANDBOX_HAS_FEATURE(thread_sanitizer)
#define KVMINI_SANDBOX_TSAN_BUILD 1
#else
#define KVMINI_SANDBOX_TSAN_BUILD 0
#endif

// True in ASan and TSan builds.
constexpr bool IsSanitizerBuild() { return KVMINI_SANDBOX_ASAN_BUILD || KVMINI_SANDBOX_TSAN_BUILD; }

// True in ASan builds, whose LeakSanitizer checks for leaks at exit.
constexpr bool IsLeakCheckBuild() { return KVMINI_SANDBOX_ASAN_BUILD; }

}  // namespace kvmini::vmm::sandbox

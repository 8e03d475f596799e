// The seccomp allow-lists as data: which system calls each kind of kvmini
// thread may make once it is set up, and for a few of them which argument
// values. seccomp.cc compiles them into BPF; README.md explains each entry.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {

// Holds when (argument[index] & mask) == value.
struct ArgumentCondition {
  unsigned index = 0;
  uint64_t mask = ~uint64_t{0};
  uint64_t value = 0;
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
};

// `pid` is the process's id: signals may only be sent within the process.
// Sanitizer builds (ASan, TSan) add what their run-time needs.
std::vector<AllowedSyscall> AllowList(ThreadKind kind, pid_t pid);

// Thread and process creation (clone, clone3) fail with EPERM on every
// list rather than trap: glibc makes them with every signal blocked, and
// the kernel turns a trap with SIGSYS blocked into a silent SIGSYS death,
// while EPERM reaches the caller, whose error says what it was doing.
std::vector<RefusedSyscall> RefusedList();

// True in ASan and TSan builds.
constexpr bool IsSanitizerBuild() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

}  // namespace kvmini::vmm::sandbox

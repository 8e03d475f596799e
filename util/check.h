// KVMINI_CHECK: invariants whose violation is a bug in kvmini itself (never
// guest or user input, which are reported as errors). A failed check prints
// the condition, the place and a reason, then aborts.
#pragma once

#include "absl/strings/string_view.h"

namespace kvmini::util {
[[noreturn]] void CheckFailed(const char* condition, const char* file, int line,
                              absl::string_view reason);
}  // namespace kvmini::util

#define KVMINI_CHECK(condition, reason)                                          \
  do {                                                                           \
    if (!(condition)) [[unlikely]] {                                             \
      ::kvmini::util::CheckFailed(#condition, __FILE__, __LINE__, (reason));     \
    }                                                                            \
  } while (0)

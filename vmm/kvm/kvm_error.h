// Turning a failed KVM ioctl into an absl::Status that names the call, the
// object it was made on and errno, so a user (or a bug report) can tell
// which step of the machine set-up failed and why.
#pragma once

#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace kvmini::vmm {

// `call` is the ioctl's name (e.g. "KVM_CREATE_VM"); `detail` says what it
// was applied to ("vCPU 1", "slot 0 [0x0, +0x8000000)"), may be empty.
absl::Status KvmCallError(absl::string_view call, int error_number, absl::string_view detail = {});

}  // namespace kvmini::vmm

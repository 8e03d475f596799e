// Checks of the launch options that read the file system, run after
// ValidateLaunchFlags and before kvmini opens /dev/kvm or creates anything
// (serial log, control socket): a kernel that is not a bzImage or is
// truncated, a kernel command line longer than the bzImage accepts, a
// --serial file:PATH in a directory that does not exist or naming the
// kernel, initrd or a disk image (which the log would overwrite). Failing
// here means a usage error (exit 2) that leaves nothing behind and does not
// depend on the host having KVM. The loader checks everything again (and
// more: PVH ELF details, whether the initrd fits) when it loads.
#pragma once

#include "absl/status/status.h"
#include "vmm/machine/launch_options.h"

namespace kvmini::vmm {

// InvalidArgument, one line naming the flag, the file and the problem.
absl::Status CheckLaunchFiles(const LaunchOptions& options);

}  // namespace kvmini::vmm

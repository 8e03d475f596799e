// A minimal bzImage for running the whole kvmini binary on the local
// /dev/kvm: a valid boot-protocol 2.15 setup header and, at the 64-bit
// entry, a few instructions that print the kernel command line (read through
// boot_params.cmd_line_ptr in RSI) on COM1 and then write `exit_status` to
// the exit port - or spin forever, for tests that stop kvmini with a signal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace kvmini::vmm::testing {

enum class TinyKernelEnd { kExitPort, kSpin };

std::vector<uint8_t> TinyBzImage(uint8_t exit_status, TinyKernelEnd end = TinyKernelEnd::kExitPort);

// Writes TinyBzImage(...) to `path`.
absl::Status WriteTinyBzImage(const std::string& path, uint8_t exit_status,
                              TinyKernelEnd end = TinyKernelEnd::kExitPort);

}  // namespace kvmini::vmm::testing

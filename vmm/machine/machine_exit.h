// MachineExit: why a machine stopped, and the process exit status that
// follows from it (0 power-off/reset, V for a write of V to the exit port,
// 128+N for signal N, 1 for a guest or VMM failure).
#pragma once

#include <string>

namespace kvmini::vmm {

struct MachineExit {
  enum class Cause {
    kPowerOff,      // guest powered off (ACPI sleep register)
    kReset,         // guest rebooted (i8042 reset, ACPI reset register)
    kExitPort,      // guest wrote its result to the exit port
    kSignal,        // SIGINT/SIGTERM/... asked kvmini to stop
    kGuestFailure,  // triple fault, emulation failure, bad state: the guest cannot go on
    kVmmFailure,    // a KVM call or kvmini itself failed
  };
  Cause cause;
  int status;
  std::string reason;
};

const char* MachineExitCauseName(MachineExit::Cause cause);

}  // namespace kvmini::vmm

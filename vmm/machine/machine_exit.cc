#include "vmm/machine/machine_exit.h"

namespace kvmini::vmm {

const char* MachineExitCauseName(MachineExit::Cause cause) {
  switch (cause) {
    case MachineExit::Cause::kPowerOff:
      return "power-off";
    case MachineExit::Cause::kReset:
      return "reset";
    case MachineExit::Cause::kExitPort:
      return "exit port";
    case MachineExit::Cause::kSignal:
      return "signal";
    case MachineExit::Cause::kGuestFailure:
      return "guest failure";
    case MachineExit::Cause::kVmmFailure:
      return "VMM failure";
  }
  return "unknown";
}

}  // namespace kvmini::vmm

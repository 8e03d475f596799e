// PowerControl: how legacy devices end the machine. The i8042 reset line,
// the guest exit port and the ACPI power port call it from vCPU threads;
// the machine (vmm/) implements it by stopping the run with the matching
// exit status.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace kvmini::hw {

class PowerControl {
 public:
  virtual ~PowerControl() = default;
  // The guest turned itself off (exit status 0). `source` names the device.
  virtual void PowerOff(absl::string_view source) = 0;
  // The guest asked for a reset; kvmini treats a reboot as the end of the
  // run (exit status 0).
  virtual void Reset(absl::string_view source) = 0;
  // The guest reported a result through the exit port (exit status `value`).
  virtual void ExitWithStatus(uint8_t value) = 0;
};

}  // namespace kvmini::hw

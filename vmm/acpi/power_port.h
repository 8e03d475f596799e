// The one I/O port through which an ACPI hardware-reduced guest powers off
// and resets the machine. The FADT names it as SLEEP_CONTROL, SLEEP_STATUS
// and RESET_REG; the machine registers a handler for it and asks
// DecodePowerPortWrite() what a written byte means.
#pragma once

#include <cstdint>

namespace kvmini::vmm::acpi {

inline constexpr uint16_t kPowerPort = 0x600;
// What the guest writes to RESET_REG to reset the machine.
inline constexpr uint8_t kResetValue = 0x01;
// SLP_TYP of the DSDT's _S5_ object (soft off).
inline constexpr uint8_t kSoftOffSleepType = 5;

enum class PowerPortAction { kNone, kPowerOff, kReset };

// Linux writes WAK_STS (0x80) to SLEEP_STATUS first, then
// (SLP_TYP << 2) | SLP_EN (0x20) to SLEEP_CONTROL; both are this port, so
// only a write with SLP_EN set and the S5 type powers off.
constexpr PowerPortAction DecodePowerPortWrite(uint8_t value) {
  constexpr uint8_t kSleepEnable = 0x20;
  if (value == kResetValue) return PowerPortAction::kReset;
  if ((value & kSleepEnable) != 0 && ((value >> 2) & 0x7) == kSoftOffSleepType) {
    return PowerPortAction::kPowerOff;
  }
  return PowerPortAction::kNone;
}

}  // namespace kvmini::vmm::acpi

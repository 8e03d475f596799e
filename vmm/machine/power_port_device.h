// AcpiPowerPortDevice: the I/O port the FADT names as SLEEP_CONTROL,
// SLEEP_STATUS and RESET_REG (vmm/acpi/power_port.h). Writing the S5 sleep
// command powers the machine off, writing the reset value resets it; both
// end the run with exit status 0. It lives in vmm/ rather than hw/legacy/
// because its meaning comes from the ACPI tables vmm/ generates.
#pragma once

#include <cstdint>
#include <span>

#include "hw/bus_device.h"
#include "hw/legacy/power_control.h"
#include "vmm/acpi/power_port.h"

namespace kvmini::vmm {

class AcpiPowerPortDevice final : public hw::BusDevice {
 public:
  explicit AcpiPowerPortDevice(hw::PowerControl* power) : power_(power) {}

  // SLEEP_STATUS: never woken from a sleep state, nothing to report.
  void Read(uint64_t, std::span<uint8_t> data) override {
    for (uint8_t& byte : data) byte = 0;
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset != 0 || data.empty()) return;
    switch (acpi::DecodePowerPortWrite(data[0])) {
      case acpi::PowerPortAction::kPowerOff:
        power_->PowerOff("ACPI sleep control (S5)");
        return;
      case acpi::PowerPortAction::kReset:
        power_->Reset("ACPI reset register");
        return;
      case acpi::PowerPortAction::kNone:
        return;
    }
  }

 private:
  hw::PowerControl* const power_;
};

}  // namespace kvmini::vmm

// PlatformDevices: the fixed x86 devices of every kvmini machine, wired to
// their ports - COM1 (16550A at 0x3f8, IRQ 4) connected to the serial
// console, the i8042 (reset line), the CMOS RTC, the guest exit port 0xf4,
// the ACPI power port the FADT declares, and inert answers for port 0x80
// and the PCI configuration ports. Their power and exit requests end the
// machine's run with the matching exit status.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "hw/legacy/cmos_rtc.h"
#include "hw/legacy/exit_port.h"
#include "hw/legacy/i8042.h"
#include "hw/legacy/inert_device.h"
#include "hw/legacy/power_control.h"
#include "hw/serial/serial_console.h"
#include "hw/serial/uart_16550.h"
#include "vmm/machine/machine.h"
#include "vmm/machine/power_port_device.h"

namespace kvmini::vmm {

class PlatformDevices final : public hw::PowerControl {
 public:
  // `console` (may be null: serial output dropped) must outlive the machine
  // run. The devices are registered on `machine`'s buses.
  static absl::StatusOr<std::unique_ptr<PlatformDevices>> Create(Machine& machine,
                                                                 hw::SerialConsole* console);

  hw::Uart16550& uart() { return *uart_; }

  // hw::PowerControl, called from vCPU threads.
  void PowerOff(absl::string_view source) override;
  void Reset(absl::string_view source) override;
  void ExitWithStatus(uint8_t value) override;

 private:
  explicit PlatformDevices(Machine& machine) : machine_(machine) {}
  absl::Status Wire(hw::SerialConsole* console);

  Machine& machine_;
  std::unique_ptr<hw::InterruptLine> uart_interrupt_;
  std::unique_ptr<hw::Uart16550> uart_;
  std::unique_ptr<hw::I8042> i8042_;
  std::unique_ptr<hw::CmosRtc> cmos_;
  std::unique_ptr<hw::ExitPort> exit_port_;
  std::unique_ptr<AcpiPowerPortDevice> power_port_;
  hw::InertDevice post_port_{0xFF};
  hw::InertDevice pci_config_ports_{0xFF};
};

}  // namespace kvmini::vmm

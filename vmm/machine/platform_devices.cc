#include "vmm/machine/platform_devices.h"

#include "absl/strings/str_cat.h"
#include "vmm/acpi/power_port.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm {
namespace {
constexpr uint16_t kPostPort = 0x80;
constexpr uint16_t kPciConfigBase = 0xCF8;
constexpr uint16_t kPciConfigPortCount = 8;
// 0x60 data .. 0x64 command/status; 0x61 inside the window is the PIT
// speaker port, which KVM's PIT answers before it ever reaches us.
constexpr uint16_t kI8042WindowSize = 5;
// Before rebooting, x86 Linux stores its reboot mode at this address (the
// BIOS data area's reset flag): 0x1234 for a warm reboot. The default
// command line makes only a panic reboot warm (reboot=panic_warm).
constexpr uint64_t kRebootModeAddress = 0x472;
constexpr uint16_t kWarmRebootFlag = 0x1234;
}  // namespace

absl::StatusOr<std::unique_ptr<PlatformDevices>> PlatformDevices::Create(
    Machine& machine, hw::SerialConsole* console) {
  std::unique_ptr<PlatformDevices> devices(new PlatformDevices(machine));
  if (absl::Status status = devices->Wire(console); !status.ok()) return status;
  return devices;
}

absl::Status PlatformDevices::Wire(hw::SerialConsole* console) {
  uart_interrupt_ = machine_.CreateInterruptLine(x86::kCom1Irq);
  hw::Uart16550::OutputFunction output;
  if (console != nullptr) output = [console](uint8_t byte) { console->Output(byte); };
  uart_ = std::make_unique<hw::Uart16550>(uart_interrupt_.get(), std::move(output));
  i8042_ = std::make_unique<hw::I8042>(this);
  cmos_ = std::make_unique<hw::CmosRtc>();
  exit_port_ = std::make_unique<hw::ExitPort>(this);
  power_port_ = std::make_unique<AcpiPowerPortDevice>(this);

  struct Window {
    uint16_t base;
    uint16_t size;
    hw::BusDevice* device;
    const char* name;
  };
  const Window windows[] = {
      {x86::kCom1Port, hw::Uart16550::kRegisterCount, uart_.get(), "COM1 16550A"},
      {hw::I8042::kDataPort, kI8042WindowSize, i8042_.get(), "i8042"},
      {hw::CmosRtc::kBasePort, hw::CmosRtc::kPortCount, cmos_.get(), "CMOS RTC"},
      {kPostPort, 1, &post_port_, "POST port"},
      {hw::ExitPort::kDefaultPort, 1, exit_port_.get(), "guest exit port"},
      {acpi::kPowerPort, 1, power_port_.get(), "ACPI power port"},
      {kPciConfigBase, kPciConfigPortCount, &pci_config_ports_, "PCI config ports (no PCI)"},
  };
  for (const Window& window : windows) {
    if (absl::Status status =
            machine_.AddPortIoDevice(window.base, window.size, window.device, window.name);
        !status.ok()) {
      return status;
    }
  }
  if (console != nullptr) return console->ConnectInput(uart_.get(), &machine_.main_context());
  return absl::OkStatus();
}

void PlatformDevices::PowerOff(absl::string_view source) {
  machine_.RequestStop(
      {MachineExit::Cause::kPowerOff, 0, absl::StrCat("guest powered off (", source, ")")});
}

void PlatformDevices::Reset(absl::string_view source) {
  absl::StatusOr<uint16_t> reboot_mode =
      machine_.memory().ReadObject<uint16_t>(kRebootModeAddress);
  if (reboot_mode.ok() && *reboot_mode == kWarmRebootFlag) {
    machine_.RequestStop({MachineExit::Cause::kGuestFailure, 1,
                          absl::StrCat("guest kernel panicked (it rebooted in the warm mode that "
                                       "reboot=panic_warm reserves for panics, through the ",
                                       source, "); the panic message is on the serial console")});
    return;
  }
  machine_.RequestStop(
      {MachineExit::Cause::kReset, 0, absl::StrCat("guest rebooted (", source, ")")});
}

void PlatformDevices::ExitWithStatus(uint8_t value) {
  machine_.RequestStop({MachineExit::Cause::kExitPort, value,
                        absl::StrCat("guest wrote ", value, " to the exit port")});
}

}  // namespace kvmini::vmm

// Tiny guests for tests on the local /dev/kvm: a Machine with the platform
// devices, a hand-assembled payload in guest RAM and vCPU 0 set up to run
// it in real mode (or long mode), the serial console going to a temporary
// file the test can read. Real-mode code is assembled with RealModeCode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/serial/serial_console.h"
#include "vmm/machine/machine.h"
#include "vmm/machine/platform_devices.h"

namespace kvmini::vmm::testing {

// True if /dev/kvm exists; tests skip only when it does not.
bool KvmAvailable();

// A few 16-bit instructions, encoded by hand.
class RealModeCode {
 public:
  RealModeCode& MovAl(uint8_t value) { return Emit({0xB0, value}); }
  RealModeCode& MovDx(uint16_t value) { return Emit({0xBA, Low(value), High(value)}); }
  RealModeCode& MovSi(uint16_t value) { return Emit({0xBE, Low(value), High(value)}); }
  RealModeCode& MovCx(uint16_t value) { return Emit({0xB9, Low(value), High(value)}); }
  RealModeCode& OutDxAl() { return Emit({0xEE}); }
  RealModeCode& InAlDx() { return Emit({0xEC}); }
  RealModeCode& OutAl(uint8_t port) { return Emit({0xE6, port}); }
  RealModeCode& InAl(uint8_t port) { return Emit({0xE4, port}); }
  RealModeCode& RepOutsb() { return Emit({0xF3, 0x6E}); }
  // mov dword [ds:address], value
  RealModeCode& StoreDword(uint16_t address, uint32_t value);
  // mov word [ds:address], value
  RealModeCode& StoreWord(uint16_t address, uint16_t value);
  // mov al, [ds:address]
  RealModeCode& LoadAl(uint16_t address) { return Emit({0xA0, Low(address), High(address)}); }
  RealModeCode& Cli() { return Emit({0xFA}); }
  RealModeCode& Sti() { return Emit({0xFB}); }
  RealModeCode& Hlt() { return Emit({0xF4}); }
  // jmp to itself: a busy loop.
  RealModeCode& Spin() { return Emit({0xEB, 0xFE}); }
  // Prints `text` on COM1, one out per byte.
  RealModeCode& Print(const std::string& text);
  // Writes `status` to the exit port.
  RealModeCode& Exit(uint8_t status) { return MovAl(status).OutAl(0xF4); }
  RealModeCode& Emit(std::initializer_list<uint8_t> bytes) {
    bytes_.insert(bytes_.end(), bytes);
    return *this;
  }
  RealModeCode& EmitBytes(const std::vector<uint8_t>& bytes) {
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  // Address the next instruction will have (code is loaded at kCodeAddress).
  uint16_t here() const;
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  static uint8_t Low(uint16_t value) { return value & 0xFF; }
  static uint8_t High(uint16_t value) { return value >> 8; }
  std::vector<uint8_t> bytes_;
};

struct TinyGuestOptions {
  uint32_t vcpu_count = 1;
  uint64_t memory_bytes = 16 << 20;
  // Base of DS in real mode: lets 16-bit code reach MMIO above 1 MiB.
  uint64_t data_segment_base = 0;
  // The console: by default a temporary file (SerialOutput() reads it);
  // stdio connects the process's stdin to the guest's UART.
  bool serial_stdio = false;
};

class TinyGuest {
 public:
  static constexpr uint64_t kCodeAddress = 0x1000;
  static constexpr uint64_t kStackTop = 0x8000;

  // Real-mode payload `code` at kCodeAddress, CS:IP = 0:kCodeAddress.
  static absl::StatusOr<std::unique_ptr<TinyGuest>> CreateRealMode(
      const std::vector<uint8_t>& code, const TinyGuestOptions& options = {});
  // 64-bit payload at kLongModeCodeAddress, identity-mapped long mode as
  // the Linux boot path sets it up.
  static constexpr uint64_t kLongModeCodeAddress = 0x10000;
  static absl::StatusOr<std::unique_ptr<TinyGuest>> CreateLongMode(
      const std::vector<uint8_t>& code, const TinyGuestOptions& options = {});
  ~TinyGuest();

  Machine& machine() { return *machine_; }
  PlatformDevices& devices() { return *devices_; }
  MachineExit Run() { return machine_->Run(); }
  // Everything the guest wrote to COM1 so far.
  std::string SerialOutput() const;

 private:
  TinyGuest() = default;
  absl::Status Build(const TinyGuestOptions& options);

  std::string serial_path_;
  std::unique_ptr<Machine> machine_;
  std::unique_ptr<hw::SerialConsole> console_;
  std::unique_ptr<PlatformDevices> devices_;
};

}  // namespace kvmini::vmm::testing

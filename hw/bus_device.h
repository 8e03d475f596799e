// BusDevice: a device's register window on the guest's port-I/O or MMIO
// bus. The machine (vmm/) maps windows to addresses and calls these from
// vCPU threads on each access, with `offset` relative to the window's base.
#pragma once

#include <cstdint>
#include <span>

namespace kvmini::hw {

class BusDevice {
 public:
  virtual ~BusDevice() = default;
  // Fills `data` (1, 2, 4 or 8 bytes) with the register contents.
  virtual void Read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void Write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

// An interrupt line the device drives (e.g. the UART's IRQ 4), implemented
// by the machine with KVM_IRQ_LINE and by tests with a recorder.
class InterruptLine {
 public:
  virtual ~InterruptLine() = default;
  virtual void SetLevel(bool high) = 0;
};

}  // namespace kvmini::hw

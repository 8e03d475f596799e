// I8042: the PS/2 controller, reduced to what a guest without a keyboard
// needs. Its reason to exist is the reset line: command 0xFE on port 0x64
// (Linux's reboot=k, and the fallback of most reboot paths) resets the
// machine, which kvmini turns into a normal end of the run. Status, the
// command byte, self-tests and the output port behave like the real
// controller, so a probe concludes "controller present, no devices".
//
// Register window: 5 ports starting at 0x60 (offset 0 = data, offset 4 =
// status/command); offsets 1-3 (0x61 is the in-kernel PIT's speaker port,
// 0x62/0x63 nothing) read all-ones.
#pragma once

#include <cstdint>
#include <deque>
#include <span>

#include "hw/bus_device.h"
#include "hw/legacy/power_control.h"
#include "util/mutex.h"

namespace kvmini::hw {

class I8042 final : public BusDevice {
 public:
  static constexpr uint16_t kDataPort = 0x60;
  static constexpr uint16_t kCommandPort = 0x64;

  explicit I8042(PowerControl* power) : power_(power) {}

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  void Command(uint8_t command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void DataWrite(uint8_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  PowerControl* const power_;
  util::Mutex mutex_;
  std::deque<uint8_t> output_ ABSL_GUARDED_BY(mutex_);
  // Interrupts off, system flag set, translation on: what firmware leaves.
  uint8_t command_byte_ ABSL_GUARDED_BY(mutex_) = 0x44;
  // The command waiting for its data byte on port 0x60 (0 = none).
  uint8_t pending_command_ ABSL_GUARDED_BY(mutex_) = 0;
  bool reset_requested_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace kvmini::hw

// ExitPort: the guest's way to hand back a result. A byte V written to the
// port (0xf4, as QEMU's isa-debug-exit uses it) ends kvmini with exit status
// V; an integration test inside the guest writes its status here. Wider
// writes use their low byte; reads return 0.
#pragma once

#include <cstdint>
#include <span>

#include "hw/bus_device.h"
#include "hw/legacy/power_control.h"

namespace kvmini::hw {

class ExitPort final : public BusDevice {
 public:
  static constexpr uint16_t kDefaultPort = 0xF4;

  explicit ExitPort(PowerControl* power) : power_(power) {}
  void Read(uint64_t, std::span<uint8_t> data) override {
    for (uint8_t& byte : data) byte = 0;
  }
  void Write(uint64_t, std::span<const uint8_t> data) override {
    if (!data.empty()) power_->ExitWithStatus(data[0]);
  }

 private:
  PowerControl* const power_;
};

}  // namespace kvmini::hw

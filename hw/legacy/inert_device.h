// InertDevice: a register window that is deliberately there but does
// nothing - reads return a fixed byte, writes are dropped, nothing is logged.
// For ports Linux pokes as a matter of course: the POST/delay port 0x80, and
// the PCI configuration ports 0xCF8-0xCFF, whose all-ones answer makes both
// of Linux's PCI config-space probes conclude there is no PCI (spec digest
// 8.1).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>

#include "hw/bus_device.h"

namespace kvmini::hw {

class InertDevice final : public BusDevice {
 public:
  explicit InertDevice(uint8_t read_value) : read_value_(read_value) {}
  void Read(uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), read_value_);
  }
  void Write(uint64_t, std::span<const uint8_t>) override {}

 private:
  const uint8_t read_value_;
};

}  // namespace kvmini::hw

// AddressBus: window mapping, dispatch offsets, the answer for unclaimed
// addresses and its log-once bookkeeping.
#include "vmm/machine/address_bus.h"

#include <vector>

#include "gtest/gtest.h"
#include "hw/legacy/power_control.h"
#include "vmm/machine/power_port_device.h"

namespace kvmini::vmm {
namespace {

class EchoDevice : public hw::BusDevice {
 public:
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    for (uint8_t& byte : data) byte = static_cast<uint8_t>(offset);
    last_offset = offset;
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    last_offset = offset;
    last_size = data.size();
  }
  uint64_t last_offset = ~0ull;
  size_t last_size = 0;
};

TEST(AddressBusTest, DispatchesWithOffsetsRelativeToTheWindow) {
  AddressBus bus("port");
  EchoDevice device;
  ASSERT_TRUE(bus.Add(0x3F8, 8, &device, "uart").ok());
  uint8_t value = 0;
  EXPECT_TRUE(bus.Read(0x3FD, std::span<uint8_t>(&value, 1)));
  EXPECT_EQ(value, 5);
  uint8_t two[2] = {1, 2};
  EXPECT_TRUE(bus.Write(0x3FE, two));
  EXPECT_EQ(device.last_offset, 6u);
  EXPECT_EQ(device.last_size, 2u);
}

TEST(AddressBusTest, RejectsOverlappingAndEmptyWindows) {
  AddressBus bus("MMIO");
  EchoDevice a, b;
  ASSERT_TRUE(bus.Add(0x1000, 0x100, &a, "a").ok());
  EXPECT_FALSE(bus.Add(0x10FF, 0x10, &b, "b").ok());
  EXPECT_FALSE(bus.Add(0x0FF0, 0x11, &b, "b").ok());
  EXPECT_FALSE(bus.Add(0x2000, 0, &b, "b").ok());
  EXPECT_FALSE(bus.Add(~0ull - 4, 0x10, &b, "b").ok());
  EXPECT_TRUE(bus.Add(0x1100, 0x10, &b, "b").ok());
  bus.Freeze();
  EXPECT_FALSE(bus.Add(0x3000, 0x10, &b, "late").ok());
}

TEST(AddressBusTest, UnclaimedReadsAreAllOnesAndEachAddressIsRememberedOnce) {
  AddressBus bus("port");
  EchoDevice device;
  ASSERT_TRUE(bus.Add(0x60, 1, &device, "one").ok());
  uint8_t data[4] = {};
  EXPECT_FALSE(bus.Read(0x99, data));
  EXPECT_EQ(data[0], 0xFF);
  EXPECT_EQ(data[3], 0xFF);
  EXPECT_FALSE(bus.Write(0x99, data));
  EXPECT_FALSE(bus.Read(0x9A, data));
  EXPECT_EQ(bus.unclaimed_address_count(), 2u);
  // An access running past the end of a window is not the device's.
  uint8_t wide[2] = {};
  EXPECT_FALSE(bus.Read(0x60, wide));
  EXPECT_EQ(device.last_offset, ~0ull);
}

class RecordingPower : public hw::PowerControl {
 public:
  void PowerOff(absl::string_view) override { ++power_offs; }
  void Reset(absl::string_view) override { ++resets; }
  void ExitWithStatus(uint8_t) override {}
  int power_offs = 0;
  int resets = 0;
};

TEST(AcpiPowerPortDeviceTest, S5SleepPowersOffAndResetValueResets) {
  RecordingPower power;
  AcpiPowerPortDevice port(&power);
  auto write = [&port](uint8_t value) { port.Write(0, std::span<const uint8_t>(&value, 1)); };
  write(0x80);  // WAK_STS clear, as Linux does first
  write(0x14);  // S5 type without SLP_EN
  EXPECT_EQ(power.power_offs, 0);
  write(0x34);
  EXPECT_EQ(power.power_offs, 1);
  write(acpi::kResetValue);
  EXPECT_EQ(power.resets, 1);
}

}  // namespace
}  // namespace kvmini::vmm

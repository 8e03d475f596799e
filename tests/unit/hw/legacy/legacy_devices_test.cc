// The legacy ports: i8042 reset paths and probe answers, the CMOS clock,
// the exit port and the inert ports.
#include <string>
#include <vector>

#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "hw/legacy/cmos_rtc.h"
#include "hw/legacy/exit_port.h"
#include "hw/legacy/i8042.h"
#include "hw/legacy/inert_device.h"

namespace kvmini::hw {
namespace {

class RecordingPower : public PowerControl {
 public:
  void PowerOff(absl::string_view source) override { events.push_back("off"); }
  void Reset(absl::string_view source) override { events.push_back("reset"); }
  void ExitWithStatus(uint8_t value) override { events.push_back("exit " + std::to_string(value)); }
  std::vector<std::string> events;
};

uint8_t In(BusDevice& device, uint64_t offset) {
  uint8_t value = 0;
  device.Read(offset, std::span<uint8_t>(&value, 1));
  return value;
}
void Out(BusDevice& device, uint64_t offset, uint8_t value) {
  device.Write(offset, std::span<const uint8_t>(&value, 1));
}

constexpr uint64_t kI8042Data = 0, kI8042Command = 4;

TEST(I8042Test, ResetCommandResetsTheMachine) {
  RecordingPower power;
  I8042 controller(&power);
  EXPECT_EQ(In(controller, kI8042Command) & 0x02, 0);  // input buffer empty: ready
  Out(controller, kI8042Command, 0xFE);
  EXPECT_EQ(power.events, std::vector<std::string>{"reset"});
}

TEST(I8042Test, PulseCommandsWithoutTheResetBitDoNothing) {
  RecordingPower power;
  I8042 controller(&power);
  Out(controller, kI8042Command, 0xFF);
  Out(controller, kI8042Command, 0xAD);
  EXPECT_TRUE(power.events.empty());
}

TEST(I8042Test, WritingTheOutputPortWithResetLowResets) {
  RecordingPower power;
  I8042 controller(&power);
  Out(controller, kI8042Command, 0xD1);
  Out(controller, kI8042Data, 0x03);  // reset line high: nothing
  EXPECT_TRUE(power.events.empty());
  Out(controller, kI8042Command, 0xD1);
  Out(controller, kI8042Data, 0x02);
  EXPECT_EQ(power.events, std::vector<std::string>{"reset"});
}

TEST(I8042Test, AnswersSelfTestAndCommandByte) {
  RecordingPower power;
  I8042 controller(&power);
  Out(controller, kI8042Command, 0xAA);
  EXPECT_EQ(In(controller, kI8042Command) & 0x01, 0x01);  // output buffer full
  EXPECT_EQ(In(controller, kI8042Data), 0x55);
  EXPECT_EQ(In(controller, kI8042Command) & 0x01, 0x00);
  Out(controller, kI8042Command, 0x60);
  Out(controller, kI8042Data, 0x65);
  Out(controller, kI8042Command, 0x20);
  EXPECT_EQ(In(controller, kI8042Data), 0x65);
  // A byte for the absent keyboard times out.
  Out(controller, kI8042Data, 0xF4);
  EXPECT_EQ(In(controller, kI8042Data), 0xFE);
  EXPECT_TRUE(power.events.empty());
}

class CmosTest : public ::testing::Test {
 protected:
  uint8_t Register(uint8_t index) {
    Out(cmos_, 0, index);
    return In(cmos_, 1);
  }
  // 2026-11-26 15:07:09 UTC, a Thursday.
  CmosRtc cmos_{[] {
    return absl::FromCivil(absl::CivilSecond(2026, 11, 26, 15, 7, 9), absl::UTCTimeZone());
  }};
};

TEST_F(CmosTest, ReportsTheClockInBcdAndTwentyFourHourMode) {
  EXPECT_EQ(Register(0x00), 0x09);
  EXPECT_EQ(Register(0x02), 0x07);
  EXPECT_EQ(Register(0x04), 0x15);
  EXPECT_EQ(Register(0x06), 0x05);  // Sunday = 1
  EXPECT_EQ(Register(0x07), 0x26);
  EXPECT_EQ(Register(0x08), 0x11);
  EXPECT_EQ(Register(0x09), 0x26);
  EXPECT_EQ(Register(0x32), 0x20);
}

TEST_F(CmosTest, StatusRegistersSayValidAndNotUpdating) {
  EXPECT_EQ(Register(0x0A) & 0x80, 0);  // no update in progress
  EXPECT_EQ(Register(0x0B), 0x02);
  EXPECT_EQ(Register(0x0D), 0x80);
  Out(cmos_, 0, 0x0A);
  Out(cmos_, 1, 0xA6);  // the guest cannot set UIP
  EXPECT_EQ(Register(0x0A), 0x26);
}

TEST_F(CmosTest, HonoursBinaryAndTwelveHourModes) {
  Out(cmos_, 0, 0x0B);
  Out(cmos_, 1, 0x04);  // binary, 12-hour
  EXPECT_EQ(Register(0x07), 26);
  EXPECT_EQ(Register(0x04), 0x80 | 3);  // 3 PM
}

TEST_F(CmosTest, NmiMaskBitDoesNotChangeTheIndexAndRamKeepsWrites) {
  Out(cmos_, 0, 0x80 | 0x40);
  Out(cmos_, 1, 0xAB);
  EXPECT_EQ(Register(0x40), 0xAB);
}

TEST(ExitPortTest, WrittenByteBecomesTheExitStatus) {
  RecordingPower power;
  ExitPort port(&power);
  Out(port, 0, 7);
  uint8_t wide[4] = {3, 1, 1, 1};
  port.Write(0, wide);
  EXPECT_EQ(power.events, (std::vector<std::string>{"exit 7", "exit 3"}));
}

TEST(InertDeviceTest, ReadsItsValueAndIgnoresWrites) {
  InertDevice pci_config(0xFF);
  uint8_t address[4] = {0, 0, 0, 0x80};
  pci_config.Write(0, address);
  uint8_t back[4] = {};
  pci_config.Read(0, back);
  // Never 0x80000000 read back: Linux's conf1 probe finds no PCI.
  EXPECT_EQ(back[3], 0xFF);
  EXPECT_EQ(back[0], 0xFF);
}

}  // namespace
}  // namespace kvmini::hw

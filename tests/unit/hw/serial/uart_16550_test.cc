// The 16550A as Linux's 8250 driver probes and drives it: register
// readback, interrupt identification and the interrupt line, the receive
// FIFO and host input flow control, loopback.
#include "hw/serial/uart_16550.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace kvmini::hw {
namespace {

constexpr uint64_t kData = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5,
                   kMsr = 6, kScratch = 7;

class RecordingLine : public InterruptLine {
 public:
  void SetLevel(bool high) override {
    level = high;
    ++changes;
  }
  bool level = false;
  int changes = 0;
};

class UartTest : public ::testing::Test {
 protected:
  uint8_t In(uint64_t offset) {
    uint8_t value = 0;
    uart_.Read(offset, std::span<uint8_t>(&value, 1));
    return value;
  }
  void Out(uint64_t offset, uint8_t value) {
    uart_.Write(offset, std::span<const uint8_t>(&value, 1));
  }
  size_t Receive(const std::string& text) {
    return uart_.ReceiveInput(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

  RecordingLine line_;
  std::string output_;
  Uart16550 uart_{&line_, [this](uint8_t byte) { output_.push_back(static_cast<char>(byte)); }};
};

TEST_F(UartTest, InterruptEnableReadsBackItsLowNibble) {
  Out(kIer, 0xFF);
  EXPECT_EQ(In(kIer), 0x0F);
  Out(kIer, 0x00);
  EXPECT_EQ(In(kIer), 0x00);
}

TEST_F(UartTest, TransmitterIsAlwaysEmpty) {
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);
  Out(kData, 'x');
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);
  EXPECT_EQ(output_, "x");
}

TEST_F(UartTest, NoInterruptPendingAfterReset) {
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_FALSE(line_.level);
}

TEST_F(UartTest, EnablingTransmitEmptyInterruptRaisesItUntilIirIsRead) {
  Out(kIer, 0x02);
  EXPECT_TRUE(line_.level);
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_FALSE(line_.level);
  // Reported once per THR-empty event.
  EXPECT_EQ(In(kIir), 0x01);
  // Writing a byte empties THR again at once: a new interrupt.
  Out(kData, 'a');
  EXPECT_TRUE(line_.level);
  EXPECT_EQ(In(kIir), 0x02);
  // Disabling and re-enabling raises it again (8250's THRE test relies on it).
  Out(kIer, 0x00);
  Out(kIer, 0x02);
  EXPECT_EQ(In(kIir), 0x02);
}

TEST_F(UartTest, ReceivedDataRaisesInterruptAndLsrDataReady) {
  Out(kFcr, 0x01);  // FIFO on
  Out(kIer, 0x01);
  EXPECT_EQ(Receive("hi"), 2u);
  EXPECT_TRUE(line_.level);
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kIir), 0xC4);  // FIFOs enabled | received data
  EXPECT_EQ(In(kData), 'h');
  EXPECT_TRUE(line_.level);
  EXPECT_EQ(In(kData), 'i');
  EXPECT_FALSE(line_.level);
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  EXPECT_EQ(In(kIir), 0xC1);
}

TEST_F(UartTest, ReceivedDataWithoutInterruptEnabledKeepsTheLineLow) {
  Receive("x");
  EXPECT_FALSE(line_.level);
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
}

TEST_F(UartTest, ReceiveFifoHoldsSixteenBytesWithFifoOnAndOneWithout) {
  EXPECT_EQ(Receive("ab"), 1u);
  EXPECT_EQ(In(kData), 'a');
  Out(kFcr, 0x01);
  EXPECT_EQ(Receive(std::string(20, 'z')), 16u);
}

TEST_F(UartTest, InputSpaceCallbackFiresWhenTheGuestDrainsAFullFifo) {
  int calls = 0;
  uart_.SetInputSpaceCallback([&calls] { ++calls; });
  Out(kFcr, 0x01);
  EXPECT_EQ(Receive(std::string(20, 'z')), 16u);
  EXPECT_EQ(calls, 0);
  In(kData);
  EXPECT_EQ(calls, 1);
  In(kData);
  EXPECT_EQ(calls, 1);  // only once per full FIFO
}

TEST_F(UartTest, FifoControlShowsInIirAndClearsReceiveFifo) {
  Out(kFcr, 0x01);
  EXPECT_EQ(In(kIir) & 0xC0, 0xC0);
  Receive("abc");
  Out(kFcr, 0x03);  // clear receive FIFO
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  Out(kFcr, 0x00);
  EXPECT_EQ(In(kIir) & 0xC0, 0x00);
}

TEST_F(UartTest, LoopbackWiresModemLinesAndReturnsTransmittedBytes) {
  Out(kMcr, 0x10 | 0x0A);  // loop, RTS, OUT2
  EXPECT_EQ(In(kMsr) & 0xF0, 0x90);
  Out(kData, 'L');
  EXPECT_EQ(output_, "");
  EXPECT_EQ(In(kData), 'L');
  Out(kMcr, 0x00);
  EXPECT_EQ(In(kMsr) & 0xF0, 0xB0);  // DCD, DSR, CTS: a terminal is there
}

TEST_F(UartTest, LoopbackOverrunIsReportedOnceInLsr) {
  Out(kMcr, 0x10);
  Out(kData, '1');
  Out(kData, '2');  // FIFO off: one byte of room
  EXPECT_EQ(In(kLsr) & 0x02, 0x02);
  EXPECT_EQ(In(kLsr) & 0x02, 0x00);
}

TEST_F(UartTest, DivisorLatchAndScratchKeepWhatIsWritten) {
  Out(kLcr, 0x83);
  Out(kData, 0x01);
  Out(kIer, 0x00);
  EXPECT_EQ(In(kData), 0x01);
  EXPECT_EQ(In(kIer), 0x00);
  Out(kLcr, 0x03);
  EXPECT_EQ(output_, "");  // divisor writes are not output
  Out(kScratch, 0x5A);
  EXPECT_EQ(In(kScratch), 0x5A);
  EXPECT_EQ(In(kLcr), 0x03);
}

TEST_F(UartTest, WideAccessTouchesConsecutiveRegisters) {
  Out(kScratch, 0x77);
  uint8_t two[2];
  uart_.Read(kMsr, two);
  EXPECT_EQ(two[1], 0x77);
}

}  // namespace
}  // namespace kvmini::hw

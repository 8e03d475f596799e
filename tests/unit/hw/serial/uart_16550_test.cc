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
    if (high && !level) ++rises;
    level = high;
    ++changes;
  }
  bool level = false;
  int changes = 0;
  // ISA IRQ 4 is edge-triggered at the IOAPIC: only a rise delivers.
  int rises = 0;
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

TEST_F(UartTest, TransmitEmptyStaysPendingBehindReceivedData) {
  Out(kFcr, 0x01);
  Out(kIer, 0x03);  // received data + THR empty
  Receive("x");
  EXPECT_EQ(In(kIir), 0xC4);  // received data has priority...
  EXPECT_EQ(In(kData), 'x');
  EXPECT_TRUE(line_.level);
  EXPECT_EQ(In(kIir), 0xC2);  // ...and reading IIR then did not lose THRE
  EXPECT_FALSE(line_.level);
}

// The 8250 driver's interrupt handler: it loops until IIR says "no
// interrupt", sending up to 16 bytes per THR-empty and disabling the
// THR-empty interrupt when its buffer is empty. Every byte must come out,
// and the line must be low when the handler returns, or the next rise that
// an edge-triggered IOAPIC needs would never come.
TEST_F(UartTest, DriverInterruptLoopSendsEverythingAndEndsWithTheLineLow) {
  Out(kFcr, 0x01);
  Out(kIer, 0x01);
  const std::string text(100, 'q');
  size_t sent = 0;
  // start_tx: enabling THR-empty raises the interrupt.
  Out(kIer, 0x03);
  EXPECT_TRUE(line_.level);
  int passes = 0;
  while (passes++ < 512) {
    uint8_t iir = In(kIir);
    if (iir & 0x01) break;
    ASSERT_NE(In(kLsr) & 0x20, 0);
    for (int burst = 0; burst < 16 && sent < text.size(); ++burst) {
      Out(kData, static_cast<uint8_t>(text[sent++]));
    }
    if (sent == text.size()) Out(kIer, 0x01);  // __stop_tx
  }
  EXPECT_EQ(output_, text);
  EXPECT_FALSE(line_.level);
  // More output later: start_tx again delivers a fresh rise.
  int rises_before = line_.rises;
  Out(kIer, 0x03);
  EXPECT_EQ(line_.rises, rises_before + 1);
  EXPECT_EQ(In(kIir), 0xC2);
}

// The kernel's console write (printk) polls: it saves IER, clears it, sends
// by polling LSR, then restores IER. Restoring the THR-empty enable must
// raise the interrupt again, or the tty's queued output would stall until
// the next write.
TEST_F(UartTest, ConsoleWriteRestoringInterruptEnableRaisesTransmitEmptyAgain) {
  Out(kIer, 0x03);
  EXPECT_EQ(In(kIir), 0x02);  // the handler took it, output still queued
  uint8_t saved = In(kIer);
  Out(kIer, 0x00);
  EXPECT_FALSE(line_.level);
  for (char c : std::string("printk\n")) {
    ASSERT_NE(In(kLsr) & 0x20, 0);
    Out(kData, static_cast<uint8_t>(c));
  }
  EXPECT_FALSE(line_.level);  // THR-empty is masked while polling
  int rises_before = line_.rises;
  Out(kIer, saved);
  EXPECT_EQ(line_.rises, rises_before + 1);
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_EQ(output_, "printk\n");
}

TEST_F(UartTest, WideAccessTouchesConsecutiveRegisters) {
  Out(kScratch, 0x77);
  uint8_t two[2];
  uart_.Read(kMsr, two);
  EXPECT_EQ(two[1], 0x77);
}

}  // namespace
}  // namespace kvmini::hw

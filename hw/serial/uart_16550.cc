#include "hw/serial/uart_16550.h"

namespace kvmini::hw {
namespace {

// Register offsets (DLAB = line control bit 7 selects the divisor latches).
constexpr uint64_t kData = 0;             // RBR (read) / THR (write) / DLL
constexpr uint64_t kInterruptEnable = 1;  // IER / DLM
constexpr uint64_t kInterruptId = 2;      // IIR (read) / FCR (write)
constexpr uint64_t kLineControl = 3;
constexpr uint64_t kModemControl = 4;
constexpr uint64_t kLineStatus = 5;
constexpr uint64_t kModemStatus = 6;
constexpr uint64_t kScratch = 7;

constexpr uint8_t kIerReceivedData = 0x01;
constexpr uint8_t kIerTransmitEmpty = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerWritableBits = 0x0F;

constexpr uint8_t kIirNoInterrupt = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirReceivedData = 0x04;
constexpr uint8_t kIirTransmitEmpty = 0x02;
constexpr uint8_t kIirFifoEnabled = 0xC0;

constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearReceive = 0x02;

constexpr uint8_t kLcrDivisorLatch = 0x80;

constexpr uint8_t kMcrLoopback = 0x10;
constexpr uint8_t kMcrWritableBits = 0x1F;

constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrTransmitHoldingEmpty = 0x20;
constexpr uint8_t kLsrTransmitterEmpty = 0x40;

// Modem status lines: CTS, DSR, RI, DCD.
constexpr uint8_t kMsrClearToSend = 0x10;
constexpr uint8_t kMsrDataSetReady = 0x20;
constexpr uint8_t kMsrRingIndicator = 0x40;
constexpr uint8_t kMsrCarrierDetect = 0x80;

}  // namespace

Uart16550::Uart16550(InterruptLine* interrupt, OutputFunction output)
    : interrupt_(interrupt), output_(std::move(output)) {}

void Uart16550::SetInputSpaceCallback(absl::AnyInvocable<void()> callback) {
  input_space_callback_ = std::move(callback);
}

size_t Uart16550::ReceiveCapacity() const { return fifo_enabled_ ? kFifoSize : 1; }

bool Uart16550::PushReceived(uint8_t byte) {
  if (receive_fifo_.size() >= ReceiveCapacity()) {
    overrun_ = true;
    return false;
  }
  receive_fifo_.push_back(byte);
  return true;
}

uint8_t Uart16550::ModemStatus() const {
  if ((modem_control_ & kMcrLoopback) == 0) {
    // A terminal is always connected and ready.
    return kMsrCarrierDetect | kMsrDataSetReady | kMsrClearToSend;
  }
  // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD (the 8250
  // driver's probe checks this).
  uint8_t status = 0;
  if (modem_control_ & 0x01) status |= kMsrDataSetReady;
  if (modem_control_ & 0x02) status |= kMsrClearToSend;
  if (modem_control_ & 0x04) status |= kMsrRingIndicator;
  if (modem_control_ & 0x08) status |= kMsrCarrierDetect;
  return status;
}

uint8_t Uart16550::PendingInterrupt() const {
  if ((interrupt_enable_ & kIerLineStatus) && overrun_) return kIirLineStatus;
  if ((interrupt_enable_ & kIerReceivedData) && !receive_fifo_.empty()) return kIirReceivedData;
  if ((interrupt_enable_ & kIerTransmitEmpty) && transmit_empty_pending_) {
    return kIirTransmitEmpty;
  }
  return kIirNoInterrupt;
}

void Uart16550::UpdateInterrupt() {
  bool high = PendingInterrupt() != kIirNoInterrupt;
  // OUT2 gates the interrupt on PC serial ports, but Linux sets it and some
  // guests do not: like most VMMs, ignore it.
  if (high == line_high_) return;
  line_high_ = high;
  interrupt_->SetLevel(high);
}

uint8_t Uart16550::ReadRegister(uint64_t offset) {
  const bool divisor_latch = (line_control_ & kLcrDivisorLatch) != 0;
  switch (offset) {
    case kData: {
      if (divisor_latch) return divisor_low_;
      if (receive_fifo_.empty()) return 0;
      uint8_t byte = receive_fifo_.front();
      receive_fifo_.pop_front();
      UpdateInterrupt();
      return byte;
    }
    case kInterruptEnable:
      return divisor_latch ? divisor_high_ : interrupt_enable_;
    case kInterruptId: {
      uint8_t pending = PendingInterrupt();
      if (pending == kIirTransmitEmpty) {
        // Reading IIR acknowledges a THR-empty interrupt it reports.
        transmit_empty_pending_ = false;
        UpdateInterrupt();
      }
      return pending | (fifo_enabled_ ? kIirFifoEnabled : 0);
    }
    case kLineControl:
      return line_control_;
    case kModemControl:
      return modem_control_;
    case kLineStatus: {
      uint8_t status = kLsrTransmitHoldingEmpty | kLsrTransmitterEmpty;
      if (!receive_fifo_.empty()) status |= kLsrDataReady;
      if (overrun_) status |= kLsrOverrun;
      overrun_ = false;  // error bits clear on read
      UpdateInterrupt();
      return status;
    }
    case kModemStatus:
      return ModemStatus();
    case kScratch:
      return scratch_;
    default:
      return 0xFF;
  }
}

bool Uart16550::WriteRegister(uint64_t offset, uint8_t value) {
  const bool divisor_latch = (line_control_ & kLcrDivisorLatch) != 0;
  switch (offset) {
    case kData:
      if (divisor_latch) {
        divisor_low_ = value;
        return false;
      }
      if (modem_control_ & kMcrLoopback) {
        PushReceived(value);
      }
      // The byte leaves at once: THR is empty again right away.
      transmit_empty_pending_ = true;
      UpdateInterrupt();
      return (modem_control_ & kMcrLoopback) == 0;
    case kInterruptEnable: {
      if (divisor_latch) {
        divisor_high_ = value;
        return false;
      }
      uint8_t previous = interrupt_enable_;
      interrupt_enable_ = value & kIerWritableBits;
      // Enabling the THR-empty interrupt while THR is empty raises it (the
      // 8250 driver relies on this to start transmitting).
      if ((interrupt_enable_ & kIerTransmitEmpty) && !(previous & kIerTransmitEmpty)) {
        transmit_empty_pending_ = true;
      }
      UpdateInterrupt();
      return false;
    }
    case kInterruptId: {  // FCR
      bool enable = (value & kFcrEnable) != 0;
      if (enable != fifo_enabled_ || (value & kFcrClearReceive)) {
        // Changing FIFO mode resets the FIFOs, as on the chip.
        receive_fifo_.clear();
      }
      fifo_enabled_ = enable;
      UpdateInterrupt();
      return false;
    }
    case kLineControl:
      line_control_ = value;
      return false;
    case kModemControl:
      modem_control_ = value & kMcrWritableBits;
      return false;
    case kScratch:
      scratch_ = value;
      return false;
    default:  // LSR and MSR are read-only
      return false;
  }
}

bool Uart16550::TakeInputSpaceFreed() {
  if (!receive_was_full_ || receive_fifo_.size() >= ReceiveCapacity()) return false;
  receive_was_full_ = false;
  return true;
}

void Uart16550::Read(uint64_t offset, std::span<uint8_t> data) {
  bool input_space_freed;
  {
    util::MutexLock lock(&mutex_);
    // A wider access reads consecutive registers, as an 8-bit ISA device
    // answers a split 16-bit cycle.
    for (size_t i = 0; i < data.size(); ++i) {
      data[i] = offset + i < kRegisterCount ? ReadRegister(offset + i) : 0xFF;
    }
    input_space_freed = TakeInputSpaceFreed();
  }
  if (input_space_freed && input_space_callback_) input_space_callback_();
}

void Uart16550::Write(uint64_t offset, std::span<const uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i >= kRegisterCount) break;
    bool send;
    bool input_space_freed;
    {
      util::MutexLock lock(&mutex_);
      send = WriteRegister(offset + i, data[i]);
      input_space_freed = TakeInputSpaceFreed();
    }
    // Outside the lock: the output may block (a slow terminal).
    if (send && output_) output_(data[i]);
    if (input_space_freed && input_space_callback_) input_space_callback_();
  }
}

size_t Uart16550::ReceiveInput(std::span<const uint8_t> bytes) {
  util::MutexLock lock(&mutex_);
  size_t accepted = 0;
  while (accepted < bytes.size() && receive_fifo_.size() < ReceiveCapacity()) {
    receive_fifo_.push_back(bytes[accepted++]);
  }
  if (receive_fifo_.size() >= ReceiveCapacity()) receive_was_full_ = true;
  UpdateInterrupt();
  return accepted;
}

}  // namespace kvmini::hw

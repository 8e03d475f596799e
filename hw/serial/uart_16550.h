// Uart16550: the 16550A UART the guest's console uses (COM1, 8 registers at
// 0x3f8, ISA IRQ 4). Enough of the chip for Linux's 8250 driver to detect a
// 16550A and use it interrupt-driven: 16-byte receive FIFO, IER readback,
// THR-empty and received-data interrupts through IIR, LSR THRE|TEMT (output
// is never slowed down, so the transmitter is always empty), loopback for the
// driver's probe, scratch and divisor latches kept as written.
//
// Threads: vCPU threads call Read()/Write(); the main loop feeds host input
// through ReceiveInput(). One small mutex guards the registers; output and
// the input-space callback run outside it.
#pragma once

#include <cstdint>
#include <deque>
#include <span>

#include "absl/functional/any_invocable.h"
#include "hw/bus_device.h"
#include "util/mutex.h"

namespace kvmini::hw {

class Uart16550 final : public BusDevice {
 public:
  static constexpr uint64_t kRegisterCount = 8;
  static constexpr size_t kFifoSize = 16;

  using OutputFunction = absl::AnyInvocable<void(uint8_t byte)>;
  // `interrupt` (not owned) is driven high while an enabled interrupt is
  // pending. `output` receives each byte the guest transmits.
  Uart16550(InterruptLine* interrupt, OutputFunction output);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Host input for the guest. Returns how many bytes fit into the receive
  // FIFO; the rest should be offered again after the space callback.
  size_t ReceiveInput(std::span<const uint8_t> bytes);
  // Called (from a vCPU thread, no lock held) when the guest has read from a
  // FIFO that ReceiveInput() had filled completely. Set before the guest runs.
  void SetInputSpaceCallback(absl::AnyInvocable<void()> callback);

 private:
  // The IIR value (without the FIFO-enabled bits) for the highest-priority
  // pending interrupt, or kIirNoInterrupt.
  uint8_t PendingInterrupt() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Drives the interrupt line to match the register state.
  void UpdateInterrupt() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  uint8_t ReadRegister(uint64_t offset) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // True once after the guest made room in a FIFO that input had filled.
  bool TakeInputSpaceFreed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Returns whether the written byte goes to the output (a THR write
  // outside loopback mode).
  bool WriteRegister(uint64_t offset, uint8_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool PushReceived(uint8_t byte) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  size_t ReceiveCapacity() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  uint8_t ModemStatus() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  InterruptLine* const interrupt_;
  OutputFunction output_;
  absl::AnyInvocable<void()> input_space_callback_;

  util::Mutex mutex_;
  std::deque<uint8_t> receive_fifo_ ABSL_GUARDED_BY(mutex_);
  bool receive_was_full_ ABSL_GUARDED_BY(mutex_) = false;
  uint8_t interrupt_enable_ ABSL_GUARDED_BY(mutex_) = 0;
  uint8_t line_control_ ABSL_GUARDED_BY(mutex_) = 0x03;  // 8N1
  uint8_t modem_control_ ABSL_GUARDED_BY(mutex_) = 0;
  uint8_t scratch_ ABSL_GUARDED_BY(mutex_) = 0;
  uint8_t divisor_low_ ABSL_GUARDED_BY(mutex_) = 0x0C;  // 9600 baud
  uint8_t divisor_high_ ABSL_GUARDED_BY(mutex_) = 0;
  bool fifo_enabled_ ABSL_GUARDED_BY(mutex_) = false;
  bool overrun_ ABSL_GUARDED_BY(mutex_) = false;
  // THR-empty interrupt: raised when THR becomes (or is enabled while)
  // empty, cleared by reading IIR while it is the one shown, or writing THR.
  bool transmit_empty_pending_ ABSL_GUARDED_BY(mutex_) = false;
  bool line_high_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace kvmini::hw

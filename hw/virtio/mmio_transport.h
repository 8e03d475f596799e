// MmioTransport: a virtio-mmio (version 2) device as the guest sees it: the
// register window (a BusDevice), feature negotiation, the status state
// machine, queue set-up, the interrupt, and the device's life cycle
// (activation on DRIVER_OK, reset, dataplane start/stop/move).
//
// How it plugs into the machine: map the BusDevice at an MMIO base with
// mmio::kWindowSize bytes; register each QueueNotifier as a KVM ioeventfd
// (address base + offset, length 4, datamatch) and interrupt_fd() as a KVM
// irqfd (edge: each write pulses the GSI; InterruptStatus is set before the
// write). A QueueNotify write that reaches the MMIO path anyway (another
// size or value) signals the same eventfd.
//
// Threads: Read/Write come from vCPU threads. The register file is guarded
// by a small mutex never held across a wait. Life-cycle work (activate,
// reset, dataplane moves) runs in the main loop, one operation at a time per
// device; a vCPU that triggers it (writing Status) posts it to the main loop
// and waits for it with no lock held, so when the write returns the guest
// sees the device reset (in-flight requests completed, nothing written to
// guest memory afterwards) or started.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hw/bus_device.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/dataplane.h"
#include "hw/virtio/virtio_device.h"
#include "hw/virtio/virtqueue.h"
#include "util/aio_context.h"
#include "util/event_notifier.h"
#include "util/log.h"
#include "util/mutex.h"

namespace kvmini::hw::virtio {

class MmioTransport final : public BusDevice {
 public:
  struct Options {
    // The IOThread context serving the queues while the dataplane runs;
    // null: the main loop always serves them.
    util::AioContext* iothread = nullptr;
  };
  struct QueueNotifier {
    uint64_t offset;     // within the register window (QueueNotify)
    uint32_t datamatch;  // the queue index
    int fd;
  };
  struct DataplaneStatus {
    bool has_iothread;
    bool running;  // queues served by the IOThread right now
    uint64_t in_flight;
    absl::Duration last_stop;
    absl::Duration last_start;
  };
  using Done = absl::AnyInvocable<void() &&>;

  static absl::StatusOr<std::unique_ptr<MmioTransport>> Create(
      const GuestMemory& memory, std::unique_ptr<VirtioDevice> device, Options options);
  // Main loop thread, with the IOThread still running: stops the queues.
  ~MmioTransport() override;
  MmioTransport(const MmioTransport&) = delete;
  MmioTransport& operator=(const MmioTransport&) = delete;

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  std::vector<QueueNotifier> queue_notifiers() const;
  int interrupt_fd() const { return interrupt_.fd(); }
  VirtioDevice& device() { return *device_; }
  const std::string& name() const { return device_->name(); }

  // Dataplane control (the control socket, tests). Main loop thread only.
  // Each is queued behind this device's running life-cycle operation, if
  // any, and `done` runs in the main loop when it has finished (before the
  // call returns if nothing else was running). Idempotent; safe while the
  // guest resets the device. Stop: the queues go to the main loop, and
  // every request in flight has completed and been signalled. Start: back
  // to the IOThread. Move: to another IOThread (null = none).
  void StopDataplane(Done done = nullptr);
  void StartDataplane(Done done = nullptr);
  void MoveDataplane(util::AioContext* iothread, Done done = nullptr);
  // Main loop thread: the same, returning when done (polling the main loop
  // meanwhile). Not from inside a callback of this device's operations.
  void StopDataplaneAndWait();
  void StartDataplaneAndWait();
  void MoveDataplaneAndWait(util::AioContext* iothread);
  DataplaneStatus dataplane_status() const;

 private:
  struct QueueRegisters {
    uint32_t size = 0;
    bool ready = false;
    uint64_t descriptor_table = 0;
    uint64_t avail_ring = 0;
    uint64_t used_ring = 0;
  };
  struct Activation {
    uint64_t features;
    std::vector<QueueRegisters> queues;
  };
  using Operation = absl::AnyInvocable<void() &&>;

  MmioTransport(const GuestMemory& memory, std::unique_ptr<VirtioDevice> device,
                Options options, std::vector<util::EventNotifier> notifiers,
                util::EventNotifier interrupt);

  uint64_t offered_features() const;
  uint32_t ReadRegister(uint64_t offset);
  // Returns the life-cycle operation the write asks for, if any.
  Operation WriteRegister(uint64_t offset, uint32_t value);
  Operation WriteStatus(uint8_t value) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  QueueRegisters* SelectedQueue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void NotifyQueue(uint64_t value);
  void RaiseInterrupt(uint32_t cause);
  void OnQueueBroken();
  // Kinds of driver mistakes, each with its own log rate limit, so that a
  // guest repeating one of them (say, writes to legacy registers) cannot
  // hide the others from the log.
  enum class GuestError { kRegisterAccess, kFeatures, kStatus, kQueueSetup, kNotify, kCount };
  static constexpr size_t kGuestErrorKinds = static_cast<size_t>(GuestError::kCount);
  template <typename... Args>
  void LogGuestError(GuestError kind, const Args&... args);
  // One limiter per kind, each allowing 10 messages per 10 seconds. Built
  // in place (a RateLimiter cannot be copied or moved).
  template <size_t... Kinds>
  static std::array<util::RateLimiter, sizeof...(Kinds)> MakeGuestErrorLogLimiters(
      std::index_sequence<Kinds...>) {
    return {{(static_cast<void>(Kinds), util::RateLimiter(10, absl::Seconds(10)))...}};
  }

  // Life cycle (mmio_transport_lifecycle.cc), main loop thread.
  void Submit(Operation operation);
  void RunFromVcpu(Operation operation);
  void SubmitAndWait(Operation operation);
  // Starts an operation with `start` and polls the main loop until it is done.
  void WaitFor(absl::FunctionRef<void(Done)> start);
  // Applies `change` to the dataplane wishes, then moves the queues.
  void ChangeDataplane(absl::AnyInvocable<void()> change, Done done);
  void Activate(Activation activation);
  void Reset();
  util::AioContext* DataplaneTarget() const;
  void MoveQueues(bool process_leftovers);

  const GuestMemory& memory_;
  const std::unique_ptr<VirtioDevice> device_;
  const std::vector<util::EventNotifier> notifiers_;
  const util::EventNotifier interrupt_;
  std::vector<std::unique_ptr<Virtqueue>> queues_;

  mutable util::Mutex mutex_;
  uint32_t device_features_select_ ABSL_GUARDED_BY(mutex_) = 0;
  uint32_t driver_features_select_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t driver_features_ ABSL_GUARDED_BY(mutex_) = 0;
  uint8_t status_ ABSL_GUARDED_BY(mutex_) = 0;
  uint32_t queue_select_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<QueueRegisters> queue_registers_ ABSL_GUARDED_BY(mutex_);

  // Outside the mutex: set by the threads that complete requests.
  std::atomic<uint32_t> interrupt_status_{0};
  std::atomic<bool> needs_reset_{false};
  std::array<util::RateLimiter, kGuestErrorKinds> guest_error_log_limiters_ =
      MakeGuestErrorLogLimiters(std::make_index_sequence<kGuestErrorKinds>());

  // Main loop thread only.
  Dataplane dataplane_;
  std::deque<Operation> pending_operations_;
  bool operation_running_ = false;
  bool active_ = false;  // DRIVER_OK processed, queues configured
  bool dataplane_wanted_ = true;
  util::AioContext* iothread_;
  absl::Duration last_stop_ = absl::ZeroDuration();
  absl::Duration last_start_ = absl::ZeroDuration();
};

}  // namespace kvmini::hw::virtio

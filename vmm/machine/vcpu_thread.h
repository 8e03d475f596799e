// VcpuThread: the thread that runs one vCPU. It loops on KVM_RUN and
// dispatches port-I/O and MMIO exits to the machine's buses; every other
// exit ends the machine with a report that includes the vCPU's registers.
//
// Stopping: Kick() sets the stop flag, sets kvm_run.immediate_exit and
// sends the vCPU thread a real-time signal (its handler does nothing), so
// KVM_RUN returns EINTR whether the thread was in the guest or about to
// enter it. Signal first-or-flag-first races are closed by immediate_exit,
// which KVM checks on entry.
//
// Pausing (the control socket's `stop`): RequestPause() makes the thread
// leave KVM_RUN the same way and park outside it, between two exits, until
// Resume() or a stop. A parked vCPU is never inside a device handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/machine/address_bus.h"
#include "vmm/machine/machine_exit.h"

namespace kvmini::vmm {

// One line with the registers that tell where a vCPU was: RIP, RSP,
// RFLAGS, CR0/3/4, EFER, CS. Says so if they cannot be read.
std::string DescribeVcpuRegisters(const KvmVcpu& vcpu);

class VcpuThread {
 public:
  // Called (from the vCPU thread) with the exit that ends the machine.
  using StopCallback = absl::AnyInvocable<void(MachineExit)>;

  // `machine_stopping` is the machine-wide flag checked before each KVM_RUN.
  VcpuThread(KvmVcpu* vcpu, AddressBus* ports, AddressBus* mmio,
             const std::atomic<bool>* machine_stopping, StopCallback on_stop);
  ~VcpuThread();  // kicks and joins if still running
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;

  void Start();
  // Logs the CLOCK_MONOTONIC time just before this vCPU's first KVM_RUN
  // (for the start-up benchmark; see startup_trace.h).
  void set_trace_first_run(bool trace) { trace_first_run_ = trace; }
  // Asks the thread to leave KVM_RUN and return. Any thread; idempotent.
  void Kick();
  // Asks the thread to park outside KVM_RUN; parked() tells when it has.
  // Any thread.
  void RequestPause();
  // Lets a parked (or about to park) thread run the guest again.
  void Resume();
  bool parked() const { return parked_.load(std::memory_order_acquire); }
  // Called in the vCPU thread when it has parked and when it finishes (so a
  // pause waiting for it can complete). Set before Start().
  void set_park_listener(absl::AnyInvocable<void()> listener) {
    park_listener_ = std::move(listener);
  }
  // Whether the thread installs the vCPU seccomp filter on itself before
  // its first KVM_RUN. Set before Start().
  void set_sandboxed(bool sandboxed) { sandboxed_ = sandboxed; }
  // Whether the thread function has returned (Join() will not block).
  bool finished() const { return finished_.load(std::memory_order_acquire); }
  void Join();

  // Installs the no-op handler for the kick signal (once per process).
  static void InstallKickSignalHandler();
  static int KickSignal();

 private:
  void Loop();
  // Waits, parked, until the pause is lifted or the thread must stop.
  void Park();
  void Wake();
  // Handles the exit in kvm_run; returns false if it ends the machine (after
  // reporting through on_stop_).
  bool HandleExit();
  bool HandlePortIo(kvm_run& run);
  void Fail(MachineExit::Cause cause, std::string what);

  KvmVcpu* const vcpu_;
  AddressBus* const ports_;
  AddressBus* const mmio_;
  const std::atomic<bool>* const machine_stopping_;
  StopCallback on_stop_;
  bool trace_first_run_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  std::atomic<bool> pause_requested_{false};
  std::atomic<bool> parked_{false};
  // Bumped (and waited on with atomic wait) to wake a parked thread.
  std::atomic<uint32_t> wake_generation_{0};
  absl::AnyInvocable<void()> park_listener_;
  bool sandboxed_ = false;
  std::thread thread_;
};

}  // namespace kvmini::vmm

// Machine: one virtual machine and its run loop. It owns /dev/kvm, the VM,
// guest RAM, the vCPUs and their threads, the port-I/O and MMIO buses and
// the main event loop (util::AioContext main context).
//
// Life cycle (all on the main thread): Create() -> add devices, load the
// guest, ConfigureVcpu() each vCPU -> Run(), which returns how the guest
// ended -> destroy. Create() blocks SIGINT/SIGTERM/SIGHUP/SIGQUIT in the
// calling thread so every thread created afterwards inherits the mask and
// those signals reach only the main loop's signalfd: create the Machine
// before starting any other thread (a BackgroundTask, which blocks every
// signal, is the exception).
//
// Create() makes the KVM calls in an order that keeps them fast: guest RAM
// is registered before the irqchip exists (see Initialize()). The PIT, whose
// creation waits for a grace period, is created on a helper thread while
// the caller loads the guest and adds devices; Run() waits for it before
// the first KVM_RUN (see background_task.h).
#pragma once

#include <linux/kvm.h>
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "hw/bus_device.h"
#include "hw/memory/guest_memory.h"
#include "util/aio_context.h"
#include "util/mutex.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/machine/address_bus.h"
#include "vmm/machine/background_task.h"
#include "vmm/machine/machine_exit.h"
#include "vmm/machine/vcpu_thread.h"

namespace kvmini::vmm {

// The architectural state a vCPU starts with, applied by ConfigureVcpu in
// the order KVM needs (spec digest 8, step 8): CPUID, MSRs, registers, FPU,
// special registers, then the LAPIC's LINT0/LINT1 (ExtINT/NMI, set by the
// machine itself). Unset optionals keep KVM's reset state.
struct VcpuBootState {
  std::vector<kvm_cpuid_entry2> cpuid;  // empty: keep KVM's (no KVM_SET_CPUID2)
  std::vector<kvm_msr_entry> msrs;
  std::optional<kvm_regs> registers;
  std::optional<kvm_fpu> fpu;
  // Segments, descriptor tables, CR0/2/3/4 and EFER are taken from here;
  // apic_base, CR8 and the pending-interrupt bitmap stay as KVM has them,
  // so a loader cannot disable the LAPIC by leaving them zero.
  std::optional<kvm_sregs> special_registers;
};

class Machine {
 public:
  struct Config {
    uint64_t memory_bytes = 0;  // multiple of 4 KiB, at least x86::kMinimumMemoryBytes
    uint32_t vcpu_count = 1;
    std::string kvm_path = KvmSystem::kDefaultPath;
    // Run() installs the seccomp filters (vmm/sandbox) on each vCPU thread
    // and then on the calling thread, once they are started. Off for tests
    // that go on in the same process.
    bool sandbox = false;
  };

  static absl::StatusOr<std::unique_ptr<Machine>> Create(const Config& config);

  ~Machine();
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  const Config& config() const { return config_; }
  const KvmSystem& kvm() const { return *kvm_; }
  KvmVm& vm() { return *vm_; }
  hw::GuestMemory& memory() { return *memory_; }
  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus_.size()); }
  // For running a vCPU outside Run() (tests): first waits for the KVM
  // set-up still running in the background, so that guest RAM is in place.
  // A failure there shows up in the vCPU's KVM_RUN (and in Run()).
  KvmVcpu& vcpu(uint32_t index);
  // vCPU `index`'s special registers as KVM has them now, for a loader to
  // fill in (see VcpuBootState). Does not wait for the background set-up.
  absl::StatusOr<kvm_sregs> GetSpecialRegisters(uint32_t index);
  util::AioContext& main_context() { return *main_context_; }
  AddressBus& port_bus() { return port_bus_; }
  AddressBus& mmio_bus() { return mmio_bus_; }

  // Device windows; `device` is not owned and must outlive Run(). Only
  // before Run().
  absl::Status AddPortIoDevice(uint16_t base, uint16_t size, hw::BusDevice* device,
                               std::string name);
  absl::Status AddMmioDevice(uint64_t base, uint64_t size, hw::BusDevice* device,
                             std::string name = "mmio device");

  // A `length`-byte MMIO write of `datamatch` to `address` signals `fd`
  // inside KVM, without an exit. Any thread, any time.
  absl::Status RegisterIoEventFd(uint64_t address, uint32_t length, uint64_t datamatch, int fd);
  absl::Status UnregisterIoEventFd(uint64_t address, uint32_t length, uint64_t datamatch,
                                   int fd);
  // Every write to `fd` raises `gsi` (edge-triggered). Any thread, any time.
  absl::Status RegisterIrqFd(uint32_t gsi, int fd);
  absl::Status UnregisterIrqFd(uint32_t gsi, int fd);
  // A line driven with KVM_IRQ_LINE (do not also attach an irqfd to `gsi`).
  std::unique_ptr<hw::InterruptLine> CreateInterruptLine(uint32_t gsi);

  absl::Status ConfigureVcpu(uint32_t index, const VcpuBootState& state);

  // Ends the run with `exit` (the first request wins). Any thread; a vCPU
  // thread's request reaches the main loop as a bottom half.
  void RequestStop(MachineExit exit);
  // Whether a stop has been requested (vCPU threads stop entering the guest).
  bool stopping() const { return stopping_.load(); }

  // Starts the vCPU threads and runs the main loop until the guest, a
  // failure or a signal ends it; then stops every vCPU and returns why.
  // Main thread only; once.
  MachineExit Run();

  // Pause and resume (the control socket's stop/cont), from the main loop
  // thread while Run() runs. PauseVcpus kicks every vCPU out of KVM_RUN and
  // parks it there; `parked` runs in the main loop once every vCPU is
  // parked (or has finished). It does not wait: a vCPU may need the main
  // loop (a register write waiting for a device operation) before it parks.
  void PauseVcpus(absl::AnyInvocable<void() &&> parked);
  void ResumeVcpus();
  bool vcpus_paused() const { return vcpus_paused_; }
  // Time since Run() started the vCPUs (zero before).
  absl::Duration uptime() const;

 private:
  explicit Machine(const Config& config) : config_(config) {}
  absl::Status Initialize();
  // Waits for the PIT's creation on its helper thread; its status. Run()
  // calls it before starting the vCPUs.
  absl::Status FinishBackgroundSetUp();
  absl::Status StartSignalHandling();
  void StopSignalHandling();
  void StopVcpuThreads();
  // Runs the pause waiters if every vCPU is parked or finished.
  void CheckVcpusParked();

  const Config config_;
  sigset_t saved_signal_mask_{};
  bool signals_blocked_ = false;
  std::unique_ptr<util::AioContext> owned_main_context_;
  util::AioContext* main_context_ = nullptr;
  std::unique_ptr<KvmSystem> kvm_;
  std::unique_ptr<KvmVm> vm_;
  std::unique_ptr<hw::GuestMemory> memory_;
  std::vector<std::unique_ptr<KvmVcpu>> vcpus_;
  // After vm_, which it uses: destroyed (joined) before it.
  std::optional<BackgroundTask> pit_creation_;
  AddressBus port_bus_{"port"};
  AddressBus mmio_bus_{"MMIO"};
  std::vector<std::unique_ptr<VcpuThread>> vcpu_threads_;
  // Scheduled by vCPU threads when they park or finish; destroyed after
  // they are joined (member order).
  std::unique_ptr<util::BottomHalf> park_check_;
  std::vector<absl::AnyInvocable<void() &&>> pause_waiters_;  // main thread only
  bool vcpus_paused_ = false;                                  // main thread only
  absl::Time run_start_ = absl::InfinitePast();

  int signal_fd_ = -1;
  bool ran_ = false;
  bool main_loop_done_ = false;  // main thread only
  std::atomic<bool> stopping_{false};
  util::Mutex exit_mutex_;
  std::optional<MachineExit> exit_ ABSL_GUARDED_BY(exit_mutex_);
};

}  // namespace kvmini::vmm

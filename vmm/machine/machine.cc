#include "vmm/machine/machine.h"

#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/aio_wait.h"
#include "util/check.h"
#include "util/log.h"
#include "vmm/kvm/kvm_error.h"
#include "vmm/machine/startup_trace.h"
#include "vmm/sandbox/seccomp.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm {
namespace {

// LAPIC register offsets in kvm_lapic_state and the LVT delivery modes.
constexpr size_t kLapicLvt0 = 0x350;
constexpr size_t kLapicLvt1 = 0x360;
constexpr uint32_t kDeliveryModeMask = 0x700;
constexpr uint32_t kDeliveryModeExtInt = 0x700;
constexpr uint32_t kDeliveryModeNmi = 0x400;

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&set, signal_number);
  return set;
}

uint32_t ReadLapicRegister(const kvm_lapic_state& lapic, size_t offset) {
  uint32_t value;
  std::memcpy(&value, lapic.regs + offset, sizeof(value));
  return value;
}

void WriteLapicRegister(kvm_lapic_state& lapic, size_t offset, uint32_t value) {
  std::memcpy(lapic.regs + offset, &value, sizeof(value));
}

absl::Status NoSuchVcpu(uint32_t index, size_t count) {
  return absl::InvalidArgumentError(
      absl::StrCat("vCPU ", index, " does not exist (machine has ", count, ")"));
}

class KvmInterruptLine final : public hw::InterruptLine {
 public:
  KvmInterruptLine(KvmVm* vm, uint32_t gsi) : vm_(vm), gsi_(gsi) {}
  void SetLevel(bool high) override {
    absl::Status status = vm_->SetIrqLine(gsi_, high);
    if (!status.ok() && limiter_.Allow()) {
      KVMINI_LOG(Error) << status.message();
    }
  }

 private:
  KvmVm* const vm_;
  const uint32_t gsi_;
  util::RateLimiter limiter_{5, absl::Seconds(10)};
};

}  // namespace

absl::StatusOr<std::unique_ptr<Machine>> Machine::Create(const Config& config) {
  if (config.vcpu_count == 0) return absl::InvalidArgumentError("a machine needs at least 1 vCPU");
  std::unique_ptr<Machine> machine(new Machine(config));
  absl::Status status = machine->Initialize();
  if (!status.ok()) return status;
  return machine;
}

absl::Status Machine::Initialize() {
  // Before any thread exists (see the header): the termination signals are
  // then delivered only through the main loop's signalfd.
  sigset_t termination = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &termination, &saved_signal_mask_);
  signals_blocked_ = true;

  main_context_ = util::AioContext::Main();
  if (main_context_ == nullptr) {
    absl::StatusOr<std::unique_ptr<util::AioContext>> context = util::AioContext::CreateMain();
    if (!context.ok()) return context.status();
    owned_main_context_ = std::move(*context);
    main_context_ = owned_main_context_.get();
  }
  park_check_ = main_context_->NewBottomHalf([this] { CheckVcpusParked(); });

  absl::StatusOr<std::unique_ptr<KvmSystem>> kvm = KvmSystem::Open(config_.kvm_path);
  if (!kvm.ok()) return kvm.status();
  kvm_ = std::move(*kvm);
  if (config_.vcpu_count > static_cast<uint32_t>(kvm_->max_vcpus())) {
    return absl::InvalidArgumentError(absl::StrCat(config_.vcpu_count, " vCPUs requested but ",
                                                   config_.kvm_path, " allows at most ",
                                                   kvm_->max_vcpus()));
  }
  absl::StatusOr<std::unique_ptr<KvmVm>> vm = kvm_->CreateVm();
  if (!vm.ok()) return vm.status();
  vm_ = std::move(*vm);
  MarkStartupPhase("KVM VM created");

  // Order from the KVM API: TSS and identity map before the first vCPU,
  // the irqchip before the vCPUs (their LAPICs) and the PIT.
  if (absl::Status s = vm_->SetTssAddress(x86::kKvmTssAddress); !s.ok()) return s;
  if (absl::Status s = vm_->SetIdentityMapAddress(x86::kKvmIdentityMapAddress); !s.ok()) return s;

  absl::StatusOr<std::vector<hw::GuestMemory::Range>> ranges =
      x86::GuestRamRanges(config_.memory_bytes);
  if (!ranges.ok()) return ranges.status();
  absl::StatusOr<std::unique_ptr<hw::GuestMemory>> memory = hw::GuestMemory::Allocate(*ranges);
  if (!memory.ok()) return memory.status();
  memory_ = std::move(*memory);
  // Guest RAM goes in before the irqchip, as Firecracker does: on the 6.18
  // host kernel a memory slot added after KVM_CREATE_IRQCHIP waits until
  // about 6 ms after the irqchip was created (5-10 ms in all), one added
  // before it takes 0.2-0.4 ms, and the irqchip, vCPUs and PIT that follow
  // stay as fast (under 0.1 ms each). Measured with bare ioctls; see
  // docs/PERFORMANCE.md "VMM start-up and RSS".
  if (absl::Status s = vm_->RegisterGuestMemory(*memory_); !s.ok()) return s;
  MarkStartupPhase("guest memory registered");

  if (absl::Status s = vm_->CreateIrqchip(); !s.ok()) return s;
  MarkStartupPhase("irqchip created");
  for (uint32_t id = 0; id < config_.vcpu_count; ++id) {
    absl::StatusOr<std::unique_ptr<KvmVcpu>> vcpu = vm_->CreateVcpu(id);
    if (!vcpu.ok()) return vcpu.status();
    vcpus_.push_back(std::move(*vcpu));
  }
  MarkStartupPhase("vCPUs created");
  // After the vCPUs, as QEMU does: KVM holds the VM lock while the PIT's
  // I/O-bus update waits for an SRCU grace period, and creating a vCPU needs
  // that lock. The wait is 0.05 ms on an idle host but 1-5 ms on a busy one
  // (the grace period's worker has to get a CPU), so it overlaps loading
  // the guest on a helper thread; Run() waits for it.
  pit_creation_.emplace([this] {
    absl::Status status = vm_->CreatePit2();
    MarkStartupPhase("PIT created");
    return status;
  });
  return absl::OkStatus();
}

absl::Status Machine::FinishBackgroundSetUp() {
  return pit_creation_ ? pit_creation_->Finish() : absl::OkStatus();
}

KvmVcpu& Machine::vcpu(uint32_t index) {
  return *vcpus_.at(index);
}

absl::StatusOr<kvm_sregs> Machine::GetSpecialRegisters(uint32_t index) {
  if (index >= vcpus_.size()) {
    return NoSuchVcpu(index, vcpus_.size());
  }
  return vcpus_[index]->GetSpecialRegisters();
}

Machine::~Machine() {
  // A machine whose creation failed half-way, or that never ran.
  (void)FinishBackgroundSetUp();
  StopVcpuThreads();
  StopSignalHandling();
  if (signals_blocked_) pthread_sigmask(SIG_SETMASK, &saved_signal_mask_, nullptr);
}

absl::Status Machine::AddPortIoDevice(uint16_t base, uint16_t size, hw::BusDevice* device,
                                      std::string name) {
  if (static_cast<uint32_t>(base) + size > 0x10000) {
    return absl::InvalidArgumentError(
        absl::StrFormat("port window %s [%#x, +%#x) runs past port 0xffff", name, base, size));
  }
  return port_bus_.Add(base, size, device, std::move(name));
}

absl::Status Machine::AddMmioDevice(uint64_t base, uint64_t size, hw::BusDevice* device,
                                    std::string name) {
  for (const hw::GuestMemory::Region& region : memory_->regions()) {
    if (base < region.guest_address + region.size && region.guest_address < base + size) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MMIO window %s [%#x, +%#x) overlaps guest RAM [%#x, +%#x)", name, base, size,
          region.guest_address, region.size));
    }
  }
  return mmio_bus_.Add(base, size, device, std::move(name));
}

absl::Status Machine::RegisterIoEventFd(uint64_t address, uint32_t length, uint64_t datamatch,
                                        int fd) {
  return vm_->AssignIoEventFd({address, length, datamatch, /*port_io=*/false, fd});
}

absl::Status Machine::UnregisterIoEventFd(uint64_t address, uint32_t length, uint64_t datamatch,
                                          int fd) {
  return vm_->DeassignIoEventFd({address, length, datamatch, /*port_io=*/false, fd});
}

absl::Status Machine::RegisterIrqFd(uint32_t gsi, int fd) { return vm_->AssignIrqFd(gsi, fd); }
absl::Status Machine::UnregisterIrqFd(uint32_t gsi, int fd) {
  return vm_->DeassignIrqFd(gsi, fd);
}

std::unique_ptr<hw::InterruptLine> Machine::CreateInterruptLine(uint32_t gsi) {
  return std::make_unique<KvmInterruptLine>(vm_.get(), gsi);
}

absl::Status Machine::ConfigureVcpu(uint32_t index, const VcpuBootState& state) {
  if (index >= vcpus_.size()) {
    return NoSuchVcpu(index, vcpus_.size());
  }
  KvmVcpu& vcpu = *vcpus_[index];
  // KVM validates some MSRs against CPUID, and refuses CPUID changes once
  // the vCPU has run: CPUID first.
  if (!state.cpuid.empty()) {
    if (absl::Status s = vcpu.SetCpuid(state.cpuid); !s.ok()) return s;
  }
  if (!state.msrs.empty()) {
    if (absl::Status s = vcpu.SetMsrs(state.msrs); !s.ok()) return s;
  }
  if (state.registers) {
    if (absl::Status s = vcpu.SetRegisters(*state.registers); !s.ok()) return s;
  }
  if (state.fpu) {
    if (absl::Status s = vcpu.SetFpu(*state.fpu); !s.ok()) return s;
  }
  if (state.special_registers) {
    absl::StatusOr<kvm_sregs> current = vcpu.GetSpecialRegisters();
    if (!current.ok()) return current.status();
    kvm_sregs merged = *state.special_registers;
    merged.apic_base = current->apic_base;
    merged.cr8 = current->cr8;
    std::memcpy(merged.interrupt_bitmap, current->interrupt_bitmap,
                sizeof(merged.interrupt_bitmap));
    if (absl::Status s = vcpu.SetSpecialRegisters(merged); !s.ok()) return s;
  }
  absl::StatusOr<kvm_lapic_state> lapic = vcpu.GetLapic();
  if (!lapic.ok()) return lapic.status();
  // LINT0 delivers the PIC's ExtINT, LINT1 NMIs; only the mode bits change.
  uint32_t lvt0 = ReadLapicRegister(*lapic, kLapicLvt0);
  uint32_t lvt1 = ReadLapicRegister(*lapic, kLapicLvt1);
  WriteLapicRegister(*lapic, kLapicLvt0, (lvt0 & ~kDeliveryModeMask) | kDeliveryModeExtInt);
  WriteLapicRegister(*lapic, kLapicLvt1, (lvt1 & ~kDeliveryModeMask) | kDeliveryModeNmi);
  return vcpu.SetLapic(*lapic);
}

void Machine::RequestStop(MachineExit exit) {
  {
    util::MutexLock lock(&exit_mutex_);
    if (exit_) return;
    exit_ = std::move(exit);
  }
  stopping_.store(true);
  main_context_->ScheduleOneshot([this] { main_loop_done_ = true; });
}

absl::Status Machine::StartSignalHandling() {
  sigset_t termination = TerminationSignals();
  signal_fd_ = signalfd(-1, &termination, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) return absl::ErrnoToStatus(errno, "signalfd for SIGINT/SIGTERM");
  return main_context_->SetFdHandler(signal_fd_, [this] {
    signalfd_siginfo info;
    while (read(signal_fd_, &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
      int signal_number = static_cast<int>(info.ssi_signo);
      const char* name = sigabbrev_np(signal_number);
      RequestStop({MachineExit::Cause::kSignal, 128 + signal_number,
                   absl::StrCat("received SIG", name != nullptr ? name : "?", " (",
                                signal_number, "), shutting down")});
    }
  });
}

void Machine::StopSignalHandling() {
  if (signal_fd_ < 0) return;
  main_context_->RemoveFdHandler(signal_fd_);
  close(signal_fd_);
  signal_fd_ = -1;
}

void Machine::StopVcpuThreads() {
  for (auto& thread : vcpu_threads_) thread->Kick();
  // A vCPU thread may be waiting for a request it posted to the main loop:
  // keep serving the main context until every thread has left its loop.
  if (main_context_ != nullptr && main_context_->InHomeThread()) {
    util::AioWaitWhileUnlocked([this] {
      for (auto& thread : vcpu_threads_) {
        if (!thread->finished()) return true;
      }
      return false;
    });
  }
  for (auto& thread : vcpu_threads_) thread->Join();
  vcpu_threads_.clear();
}

void Machine::PauseVcpus(absl::AnyInvocable<void() &&> parked) {
  KVMINI_CHECK(main_context_->InHomeThread(), "PauseVcpus runs in the main loop thread");
  vcpus_paused_ = true;
  pause_waiters_.push_back(std::move(parked));
  for (auto& thread : vcpu_threads_) thread->RequestPause();
  CheckVcpusParked();
}

void Machine::ResumeVcpus() {
  KVMINI_CHECK(main_context_->InHomeThread(), "ResumeVcpus runs in the main loop thread");
  vcpus_paused_ = false;
  for (auto& thread : vcpu_threads_) thread->Resume();
}

void Machine::CheckVcpusParked() {
  if (pause_waiters_.empty()) return;
  for (auto& thread : vcpu_threads_) {
    if (!thread->parked() && !thread->finished()) return;
  }
  std::vector<absl::AnyInvocable<void() &&>> waiters = std::move(pause_waiters_);
  pause_waiters_.clear();
  for (auto& waiter : waiters) std::move(waiter)();
}

absl::Duration Machine::uptime() const {
  if (run_start_ == absl::InfinitePast()) return absl::ZeroDuration();
  return absl::Now() - run_start_;
}

MachineExit Machine::Run() {
  KVMINI_CHECK(main_context_->InHomeThread(), "Machine::Run must run on the main loop thread");
  KVMINI_CHECK(!ran_, "Machine::Run may be called once");
  ran_ = true;
  port_bus_.Freeze();
  mmio_bus_.Freeze();
  // A stop requested before the vCPU threads start keeps them out of the
  // guest.
  if (absl::Status status = FinishBackgroundSetUp(); !status.ok()) {
    RequestStop({MachineExit::Cause::kVmmFailure, 1, std::string(status.message())});
  }
  MarkStartupPhase("KVM set-up finished");
  if (absl::Status status = StartSignalHandling(); !status.ok()) {
    RequestStop({MachineExit::Cause::kVmmFailure, 1, std::string(status.message())});
  }
  for (auto& vcpu : vcpus_) {
    vcpu_threads_.push_back(std::make_unique<VcpuThread>(
        vcpu.get(), &port_bus_, &mmio_bus_, &stopping_,
        [this](MachineExit exit) { RequestStop(std::move(exit)); }));
    vcpu_threads_.back()->set_park_listener([this] { park_check_->Schedule(); });
    vcpu_threads_.back()->set_sandboxed(config_.sandbox);
  }
  run_start_ = absl::Now();
  vcpu_threads_.front()->set_trace_first_run(StartupTraceEnabled());
  for (auto& thread : vcpu_threads_) thread->Start();
  MarkStartupPhase("vCPU threads started");
  // Last: every thread kvmini needs exists, and threads inherit filters.
  if (config_.sandbox) {
    if (absl::Status status = sandbox::InstallSeccompFilter(sandbox::ThreadKind::kMain);
        !status.ok()) {
      RequestStop({MachineExit::Cause::kVmmFailure, 1, std::string(status.message())});
    }
    MarkStartupPhase("main thread filter installed");
  }
  while (!main_loop_done_) main_context_->Poll(/*blocking=*/true);
  StopVcpuThreads();
  StopSignalHandling();
  util::MutexLock lock(&exit_mutex_);
  return *exit_;
}

}  // namespace kvmini::vmm

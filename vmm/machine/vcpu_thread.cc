#include "vmm/machine/vcpu_thread.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <cstring>
#include <mutex>
#include <span>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/aio_wait.h"
#include "util/log.h"
#include "vmm/machine/startup_trace.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm {
namespace {

void IgnoreKick(int) {}

const char* SystemEventName(uint32_t type) {
  switch (type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
      return "shutdown";
    case KVM_SYSTEM_EVENT_RESET:
      return "reset";
    case KVM_SYSTEM_EVENT_CRASH:
      return "crash";
    default:
      return "unknown";
  }
}

}  // namespace

std::string DescribeVcpuRegisters(const KvmVcpu& vcpu) {
  absl::StatusOr<kvm_regs> regs = vcpu.GetRegisters();
  absl::StatusOr<kvm_sregs> sregs = vcpu.GetSpecialRegisters();
  if (!regs.ok() || !sregs.ok()) {
    return absl::StrCat("vCPU ", vcpu.id(), " registers unavailable: ",
                        (!regs.ok() ? regs.status() : sregs.status()).message());
  }
  return absl::StrFormat(
      "vCPU %u: RIP=%#x RSP=%#x RFLAGS=%#x RAX=%#x CR0=%#x CR2=%#x CR3=%#x CR4=%#x EFER=%#x "
      "CS=%#x(base %#x, L=%d D=%d)",
      vcpu.id(), regs->rip, regs->rsp, regs->rflags, regs->rax, sregs->cr0, sregs->cr2,
      sregs->cr3, sregs->cr4, sregs->efer, sregs->cs.selector, sregs->cs.base, sregs->cs.l,
      sregs->cs.db);
}

int VcpuThread::KickSignal() { return SIGRTMIN; }

void VcpuThread::InstallKickSignalHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    // A real handler: SIG_IGN would not interrupt KVM_RUN. No SA_RESTART, so
    // a device handler's blocking call also returns and the loop sees the stop.
    action.sa_handler = IgnoreKick;
    sigemptyset(&action.sa_mask);
    sigaction(KickSignal(), &action, nullptr);
  });
}

VcpuThread::VcpuThread(KvmVcpu* vcpu, AddressBus* ports, AddressBus* mmio,
                       const std::atomic<bool>* machine_stopping, StopCallback on_stop)
    : vcpu_(vcpu),
      ports_(ports),
      mmio_(mmio),
      machine_stopping_(machine_stopping),
      on_stop_(std::move(on_stop)) {}

VcpuThread::~VcpuThread() {
  Kick();
  Join();
}

void VcpuThread::Start() {
  InstallKickSignalHandler();
  thread_ = std::thread([this] { Loop(); });
}

void VcpuThread::Kick() {
  // Order matters: the thread clears immediate_exit after an interrupted
  // KVM_RUN and only then reads stop_, so it cannot miss this kick.
  stop_.store(true);
  vcpu_->RequestImmediateExit(true);
  if (thread_.joinable()) pthread_kill(thread_.native_handle(), KickSignal());
  Wake();
}

void VcpuThread::RequestPause() {
  // The same order as Kick(): the flag before immediate_exit.
  pause_requested_.store(true);
  vcpu_->RequestImmediateExit(true);
  if (thread_.joinable()) pthread_kill(thread_.native_handle(), KickSignal());
}

void VcpuThread::Resume() {
  pause_requested_.store(false);
  Wake();
}

void VcpuThread::Wake() {
  wake_generation_.fetch_add(1);
  wake_generation_.notify_all();
}

void VcpuThread::Park() {
  parked_.store(true, std::memory_order_release);
  if (park_listener_) park_listener_();
  while (true) {
    // Read before testing the conditions: a Wake() after the test changes it.
    uint32_t seen = wake_generation_.load();
    if (!pause_requested_.load() || stop_.load() || machine_stopping_->load()) break;
    wake_generation_.wait(seen);
  }
  parked_.store(false, std::memory_order_release);
}

void VcpuThread::Join() {
  if (thread_.joinable()) thread_.join();
}

void VcpuThread::Loop() {
  if (trace_first_run_) MarkStartupPhase(absl::StrCat("vCPU ", vcpu_->id(), " thread running"));
  // "vcpu0", ... in top, perf and gdb.
  pthread_setname_np(pthread_self(), absl::StrCat("vcpu", vcpu_->id()).substr(0, 15).c_str());
  sigset_t kick;
  sigemptyset(&kick);
  sigaddset(&kick, KickSignal());
  pthread_sigmask(SIG_UNBLOCK, &kick, nullptr);
  bool may_run = true;
  if (sandboxed_) {
    if (absl::Status status = sandbox::InstallSeccompFilter(sandbox::ThreadKind::kVcpu);
        !status.ok()) {
      Fail(MachineExit::Cause::kVmmFailure, std::string(status.message()));
      may_run = false;
    }
  }
  if (trace_first_run_) MarkStartupPhase(absl::StrCat("vCPU ", vcpu_->id(), " first KVM_RUN"));
  while (may_run && !stop_.load() && !machine_stopping_->load()) {
    if (pause_requested_.load()) {
      Park();
      continue;
    }
    absl::StatusOr<KvmVcpu::RunResult> result = vcpu_->Run();
    if (!result.ok()) {
      Fail(MachineExit::Cause::kVmmFailure,
           absl::StrCat(result.status().message(), "; ", DescribeVcpuRegisters(*vcpu_)));
      break;
    }
    if (*result == KvmVcpu::RunResult::kInterrupted) {
      vcpu_->RequestImmediateExit(false);
      continue;
    }
    if (!HandleExit()) break;
  }
  finished_.store(true, std::memory_order_release);
  // The main loop may be waiting (polling) for this thread to finish.
  util::AioWaitKick();
  if (park_listener_) park_listener_();
}

void VcpuThread::Fail(MachineExit::Cause cause, std::string what) {
  on_stop_(MachineExit{cause, 1, std::move(what)});
}

bool VcpuThread::HandlePortIo(kvm_run& run) {
  auto* base = reinterpret_cast<uint8_t*>(&run) + run.io.data_offset;
  const size_t size = run.io.size;
  // count > 1 for rep ins/outs: every element goes to the same port.
  for (uint32_t i = 0; i < run.io.count; ++i) {
    std::span<uint8_t> element(base + i * size, size);
    if (run.io.direction == KVM_EXIT_IO_OUT) {
      ports_->Write(run.io.port, element);
    } else {
      ports_->Read(run.io.port, element);
    }
  }
  return true;
}

bool VcpuThread::HandleExit() {
  kvm_run& run = *vcpu_->run_state();
  switch (run.exit_reason) {
    case KVM_EXIT_IO:
      return HandlePortIo(run);
    case KVM_EXIT_MMIO: {
      size_t length = std::min<size_t>(run.mmio.len, sizeof(run.mmio.data));
      if (run.mmio.is_write) {
        mmio_->Write(run.mmio.phys_addr, std::span<const uint8_t>(run.mmio.data, length));
      } else {
        mmio_->Read(run.mmio.phys_addr, std::span<uint8_t>(run.mmio.data, length));
      }
      return true;
    }
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_SHUTDOWN:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrCat("guest triple fault (KVM_EXIT_SHUTDOWN); ", DescribeVcpuRegisters(*vcpu_)));
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrFormat("unexpected guest system event %u (%s) (KVM_EXIT_SYSTEM_EVENT); %s",
                           run.system_event.type, SystemEventName(run.system_event.type),
                           DescribeVcpuRegisters(*vcpu_)));
      return false;
    case KVM_EXIT_FAIL_ENTRY:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrFormat("KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason "
                           "%#x, cpu %u): invalid initial vCPU state; %s",
                           run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu,
                           DescribeVcpuRegisters(*vcpu_)));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string data;
      for (uint32_t i = 0; i < std::min<uint32_t>(run.internal.ndata, 16); ++i) {
        absl::StrAppendFormat(&data, " %#x", run.internal.data[i]);
      }
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrFormat("KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror %u%s, data:%s); "
                           "%s",
                           run.internal.suberror,
                           run.internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                               ? " = instruction emulation failed"
                               : "",
                           data, DescribeVcpuRegisters(*vcpu_)));
      return false;
    }
    case KVM_EXIT_HLT:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrCat("unexpected KVM_EXIT_HLT (the in-kernel irqchip should keep halted vCPUs); ",
                        DescribeVcpuRegisters(*vcpu_)));
      return false;
    case KVM_EXIT_UNKNOWN:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrFormat("KVM_EXIT_UNKNOWN (hardware exit reason %#x); %s",
                           run.hw.hardware_exit_reason, DescribeVcpuRegisters(*vcpu_)));
      return false;
    default:
      Fail(MachineExit::Cause::kGuestFailure,
           absl::StrFormat("unhandled KVM exit reason %u; %s", run.exit_reason,
                           DescribeVcpuRegisters(*vcpu_)));
      return false;
  }
}

}  // namespace kvmini::vmm

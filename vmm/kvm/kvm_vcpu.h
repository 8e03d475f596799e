// KvmVcpu: one virtual CPU (the vCPU fd and its mmapped kvm_run area).
// Register and CPUID/MSR/LAPIC state set-up, and KVM_RUN. Only the vCPU's
// own thread calls Run(); another thread may RequestImmediateExit() to kick
// it out (together with a signal, see vmm/machine/vcpu_thread.h).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/kvm/scoped_fd.h"

namespace kvmini::vmm {

class KvmVcpu {
 public:
  // Takes the fd from KVM_CREATE_VCPU and maps `mmap_size` bytes of it.
  static absl::StatusOr<std::unique_ptr<KvmVcpu>> Create(uint32_t id, ScopedFd fd,
                                                         int mmap_size);
  ~KvmVcpu();
  KvmVcpu(const KvmVcpu&) = delete;
  KvmVcpu& operator=(const KvmVcpu&) = delete;

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  kvm_run* run_state() const { return run_; }

  enum class RunResult {
    kExit,         // run_state()->exit_reason says why
    kInterrupted,  // a signal (or immediate_exit) ended KVM_RUN: no exit to handle
  };
  absl::StatusOr<RunResult> Run();

  // Makes the next (or the current, once a signal interrupts it) KVM_RUN
  // return at once. Safe from any thread.
  void RequestImmediateExit(bool value);

  absl::StatusOr<kvm_regs> GetRegisters() const;
  absl::Status SetRegisters(const kvm_regs& registers);
  absl::StatusOr<kvm_sregs> GetSpecialRegisters() const;
  absl::Status SetSpecialRegisters(const kvm_sregs& registers);
  absl::Status SetFpu(const kvm_fpu& fpu);
  absl::Status SetCpuid(std::span<const kvm_cpuid_entry2> entries);
  // Fails unless KVM accepted every entry; the error names the first refused MSR.
  absl::Status SetMsrs(std::span<const kvm_msr_entry> entries);
  absl::StatusOr<kvm_lapic_state> GetLapic() const;
  absl::Status SetLapic(const kvm_lapic_state& lapic);

 private:
  KvmVcpu(uint32_t id, ScopedFd fd, kvm_run* run, int mmap_size)
      : id_(id), fd_(std::move(fd)), run_(run), mmap_size_(mmap_size) {}

  // One KVM_GET_* / KVM_SET_* ioctl on a fixed-size struct; `name` is the
  // ioctl's name for the error.
  template <typename State>
  absl::StatusOr<State> GetState(unsigned long request, const char* name) const;
  template <typename State>
  absl::Status SetState(unsigned long request, const char* name, const State& state);

  const uint32_t id_;
  ScopedFd fd_;
  kvm_run* const run_;
  const int mmap_size_;
};

}  // namespace kvmini::vmm

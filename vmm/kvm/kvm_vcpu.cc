#include "vmm/kvm/kvm_vcpu.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/kvm/kvm_abi.h"
#include "vmm/kvm/kvm_error.h"

namespace kvmini::vmm {

absl::StatusOr<std::unique_ptr<KvmVcpu>> KvmVcpu::Create(uint32_t id, ScopedFd fd,
                                                         int mmap_size) {
  void* mapping = mmap(nullptr, static_cast<size_t>(mmap_size), PROT_READ | PROT_WRITE,
                       MAP_SHARED, fd.get(), 0);
  if (mapping == MAP_FAILED) {
    return KvmCallError("mmap of kvm_run", errno, absl::StrFormat("vCPU %u", id));
  }
  return std::unique_ptr<KvmVcpu>(
      new KvmVcpu(id, std::move(fd), static_cast<kvm_run*>(mapping), mmap_size));
}

KvmVcpu::~KvmVcpu() { munmap(run_, static_cast<size_t>(mmap_size_)); }

absl::StatusOr<KvmVcpu::RunResult> KvmVcpu::Run() {
  while (true) {
    if (ioctl(fd_.get(), KVM_RUN, 0) == 0) return RunResult::kExit;
    if (errno == EINTR) return RunResult::kInterrupted;
    // EAGAIN: KVM asks to be called again (e.g. after a pending signal race).
    if (errno == EAGAIN) continue;
    return KvmCallError("KVM_RUN", errno, absl::StrFormat("vCPU %u", id_));
  }
}

void KvmVcpu::RequestImmediateExit(bool value) {
  __atomic_store_n(&run_->immediate_exit, value ? 1 : 0, __ATOMIC_SEQ_CST);
}

template <typename State>
absl::StatusOr<State> KvmVcpu::GetState(unsigned long request, const char* name) const {
  State state{};
  if (ioctl(fd_.get(), request, &state) < 0) {
    return KvmCallError(name, errno, absl::StrFormat("vCPU %u", id_));
  }
  return state;
}

template <typename State>
absl::Status KvmVcpu::SetState(unsigned long request, const char* name, const State& state) {
  if (ioctl(fd_.get(), request, &state) < 0) {
    return KvmCallError(name, errno, absl::StrFormat("vCPU %u", id_));
  }
  return absl::OkStatus();
}

absl::StatusOr<kvm_regs> KvmVcpu::GetRegisters() const {
  return GetState<kvm_regs>(KVM_GET_REGS, "KVM_GET_REGS");
}
absl::Status KvmVcpu::SetRegisters(const kvm_regs& registers) {
  return SetState(KVM_SET_REGS, "KVM_SET_REGS", registers);
}
absl::StatusOr<kvm_sregs> KvmVcpu::GetSpecialRegisters() const {
  return GetState<kvm_sregs>(KVM_GET_SREGS, "KVM_GET_SREGS");
}
absl::Status KvmVcpu::SetSpecialRegisters(const kvm_sregs& registers) {
  return SetState(KVM_SET_SREGS, "KVM_SET_SREGS", registers);
}
absl::Status KvmVcpu::SetFpu(const kvm_fpu& fpu) { return SetState(KVM_SET_FPU, "KVM_SET_FPU", fpu); }
absl::StatusOr<kvm_lapic_state> KvmVcpu::GetLapic() const {
  return GetState<kvm_lapic_state>(KVM_GET_LAPIC, "KVM_GET_LAPIC");
}
absl::Status KvmVcpu::SetLapic(const kvm_lapic_state& lapic) {
  return SetState(KVM_SET_LAPIC, "KVM_SET_LAPIC", lapic);
}

namespace {
// A kvm_abi header followed by `count` entries, in one aligned buffer.
template <typename Header, typename Entry>
std::vector<uint64_t> HeaderAndEntries(Header header, std::span<const Entry> entries) {
  static_assert(sizeof(Header) % alignof(Entry) == 0);
  std::vector<uint64_t> buffer((sizeof(Header) + entries.size_bytes()) / sizeof(uint64_t) + 1);
  std::memcpy(buffer.data(), &header, sizeof(header));
  std::memcpy(reinterpret_cast<uint8_t*>(buffer.data()) + sizeof(header), entries.data(),
              entries.size_bytes());
  return buffer;
}
}  // namespace

absl::Status KvmVcpu::SetCpuid(std::span<const kvm_cpuid_entry2> entries) {
  std::vector<uint64_t> buffer = HeaderAndEntries(
      kvm_abi::CpuidHeader{static_cast<uint32_t>(entries.size()), 0}, entries);
  if (ioctl(fd_.get(), kvm_abi::kSetCpuid2, buffer.data()) < 0) {
    return KvmCallError("KVM_SET_CPUID2", errno,
                        absl::StrFormat("vCPU %u, %u entries", id_, entries.size()));
  }
  return absl::OkStatus();
}

absl::Status KvmVcpu::SetMsrs(std::span<const kvm_msr_entry> entries) {
  std::vector<uint64_t> buffer = HeaderAndEntries(
      kvm_abi::MsrsHeader{static_cast<uint32_t>(entries.size()), 0}, entries);
  int written = ioctl(fd_.get(), kvm_abi::kSetMsrs, buffer.data());
  if (written < 0) return KvmCallError("KVM_SET_MSRS", errno, absl::StrFormat("vCPU %u", id_));
  // KVM stops at the first MSR it refuses and returns how many it wrote.
  if (static_cast<size_t>(written) != entries.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "KVM_SET_MSRS (vCPU %u) wrote %d of %u MSRs: KVM refused MSR %#x = %#x", id_, written,
        entries.size(), entries[static_cast<size_t>(written)].index,
        entries[static_cast<size_t>(written)].data));
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm

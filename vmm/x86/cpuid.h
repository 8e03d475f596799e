// Per-vCPU CPUID and boot MSRs. NormalizeCpuid() turns the list KVM reports
// (KVM_GET_SUPPORTED_CPUID) into what one vCPU of this machine should see:
// its own APIC ID, a topology of `vcpu_count` single-threaded cores in one
// package (matching the MADT), the hypervisor bit, TSC-deadline if KVM can
// emulate it, and KVM's paravirtual leaves passed through unchanged.
// BootMsrs() lists the MSR values the BSP and APs start with.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace kvmini::vmm::x86 {

// `vcpu_index` is the vCPU's KVM id, which is also its APIC ID (as in the
// MADT). Leaves KVM did not report are not invented, except that leaf 0xB
// (and 0x1F, when present) are rewritten as a complete two-level topology.
void NormalizeCpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t vcpu_index,
                    uint32_t vcpu_count, bool tsc_deadline_supported);

// MSR values written with KVM_SET_MSRS before the first KVM_RUN (after
// KVM_SET_CPUID2: KVM checks some MSRs against CPUID).
std::vector<kvm_msr_entry> BootMsrs();

namespace msr {
inline constexpr uint32_t kTsc = 0x10;
inline constexpr uint32_t kSysenterCs = 0x174;
inline constexpr uint32_t kSysenterEsp = 0x175;
inline constexpr uint32_t kSysenterEip = 0x176;
inline constexpr uint32_t kMiscEnable = 0x1A0;
inline constexpr uint32_t kMtrrDefType = 0x2FF;
inline constexpr uint32_t kStar = 0xC0000081;
inline constexpr uint32_t kLstar = 0xC0000082;
inline constexpr uint32_t kCstar = 0xC0000083;
inline constexpr uint32_t kSyscallMask = 0xC0000084;
inline constexpr uint32_t kKernelGsBase = 0xC0000102;

inline constexpr uint64_t kMiscEnableFastString = 1 << 0;
inline constexpr uint64_t kMtrrEnable = 1 << 11;
inline constexpr uint64_t kMtrrTypeWriteBack = 6;
}  // namespace msr

}  // namespace kvmini::vmm::x86

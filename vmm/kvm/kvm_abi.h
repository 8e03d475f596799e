// Correct C++ layouts for the KVM ioctls whose structs end in a flexible
// array. Debian 12's linux-libc-dev (6.1) declares those arrays with
// __DECLARE_FLEX_ARRAY, which wraps them in a struct holding an empty
// struct; in C++ an empty struct takes a byte, so sizeof(kvm_cpuid2) is 12
// instead of 8, `entries` moves, and the ioctl numbers derived from the size
// (KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2, KVM_SET_MSRS) are ones the
// kernel rejects with EINVAL. These headers and ioctl numbers follow the
// kernel's C layout; the element structs themselves are unaffected.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace kvmini::vmm::kvm_abi {

// struct kvm_cpuid2 without its entries; kvm_cpuid_entry2[nent] follow.
struct CpuidHeader {
  uint32_t nent;
  uint32_t padding;
};
// struct kvm_msrs without its entries; kvm_msr_entry[nmsrs] follow.
struct MsrsHeader {
  uint32_t nmsrs;
  uint32_t pad;
};
static_assert(sizeof(CpuidHeader) == 8 && sizeof(MsrsHeader) == 8);
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, CpuidHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, CpuidHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
static_assert(kGetSupportedCpuid == 0xC008AE05, "KVM_GET_SUPPORTED_CPUID as the kernel defines it");

}  // namespace kvmini::vmm::kvm_abi

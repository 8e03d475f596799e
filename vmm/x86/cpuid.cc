#include "vmm/x86/cpuid.h"

#include <algorithm>
#include <bit>

#include "util/check.h"

namespace kvmini::vmm::x86 {
namespace {

enum class Vendor { kIntel, kAmd, kOther };

// Leaf 0 EBX holds the first four vendor-string characters.
constexpr uint32_t kGenu = 0x756E6547;  // "Genu"ineIntel
constexpr uint32_t kAuth = 0x68747541;  // "Auth"enticAMD
constexpr uint32_t kHygo = 0x6F677948;  // "Hygo"nGenuine, AMD's topology leaves

Vendor VendorOf(const std::vector<kvm_cpuid_entry2>& entries) {
  for (const kvm_cpuid_entry2& entry : entries) {
    if (entry.function != 0) continue;
    if (entry.ebx == kGenu) return Vendor::kIntel;
    if (entry.ebx == kAuth || entry.ebx == kHygo) return Vendor::kAmd;
  }
  return Vendor::kOther;
}

constexpr uint32_t Bit(int n) { return 1u << n; }

// Leaf 1.
constexpr uint32_t kClflushLineSizeIn8Bytes = 8;  // 64-byte lines
constexpr int kEcxPdcm = 15;                      // perf capabilities MSR: not emulated
constexpr int kEcxTscDeadline = 24;
constexpr int kEcxHypervisor = 31;
constexpr int kEdxHtt = 28;
// Leaf 6.
constexpr int kEaxTurboBoost = 1;
// Leaf 0xB/0x1F level types (ECX[15:8]).
constexpr uint32_t kLevelInvalid = 0;
constexpr uint32_t kLevelSmt = 1;
constexpr uint32_t kLevelCore = 2;
// KVM_CPUID_FLAG_SIGNIFICANT_INDEX (spelled SIGNIFCANT in older headers).
constexpr uint32_t kSignificantIndex = 1;
// Leaf 0x80000001 ECX.
constexpr int kEcxCmpLegacy = 1;  // HTT counts cores, not threads

void NormalizeLeaf1(kvm_cpuid_entry2& entry, uint32_t apic_id, uint32_t vcpu_count,
                    bool tsc_deadline_supported) {
  const uint32_t logical_ids = std::min<uint32_t>(std::bit_ceil(vcpu_count), 0xFF);
  entry.ebx =
      (entry.ebx & 0xFF) | (kClflushLineSizeIn8Bytes << 8) | (logical_ids << 16) | (apic_id << 24);
  entry.ecx &= ~Bit(kEcxPdcm);
  entry.ecx =
      tsc_deadline_supported ? entry.ecx | Bit(kEcxTscDeadline) : entry.ecx & ~Bit(kEcxTscDeadline);
  entry.ecx |= Bit(kEcxHypervisor);
  entry.edx = vcpu_count > 1 ? entry.edx | Bit(kEdxHtt) : entry.edx & ~Bit(kEdxHtt);
}

// Intel deterministic cache parameters: every core of the package shares
// L3, L1/L2 are private (we model one thread per core).
void NormalizeLeaf4(kvm_cpuid_entry2& entry, uint32_t vcpu_count) {
  if ((entry.eax & 0x1F) == 0) return;  // "no more caches" terminator
  const uint32_t level = (entry.eax >> 5) & 0x7;
  const uint32_t cores_minus_one = std::min<uint32_t>(std::bit_ceil(vcpu_count) - 1, 0x3F);
  const uint32_t sharing_minus_one = level >= 3 ? std::min<uint32_t>(cores_minus_one, 0xFFF) : 0;
  entry.eax = (entry.eax & 0x3FFF) | (sharing_minus_one << 14) | (cores_minus_one << 26);
}

kvm_cpuid_entry2 TopologyEntry(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx,
                               uint32_t level_type, uint32_t apic_id) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.flags = kSignificantIndex;
  entry.eax = eax;
  entry.ebx = ebx;
  entry.ecx = (level_type << 8) | index;
  entry.edx = apic_id;
  return entry;
}

// Replaces every subleaf of `function` (0xB or 0x1F), if KVM reported it,
// with: SMT level (1 thread per core), core level (vcpu_count cores), end.
void RewriteTopologyLeaf(std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                         uint32_t apic_id, uint32_t vcpu_count) {
  auto is_leaf = [function](const kvm_cpuid_entry2& entry) { return entry.function == function; };
  if (std::none_of(entries.begin(), entries.end(), is_leaf)) return;
  std::erase_if(entries, is_leaf);
  const uint32_t core_bits = std::bit_width(vcpu_count - 1);  // log2, rounded up
  entries.push_back(TopologyEntry(function, 0, 0, 1, kLevelSmt, apic_id));
  entries.push_back(TopologyEntry(function, 1, core_bits, vcpu_count, kLevelCore, apic_id));
  entries.push_back(TopologyEntry(function, 2, 0, 0, kLevelInvalid, apic_id));
}

}  // namespace

void NormalizeCpuid(std::vector<kvm_cpuid_entry2>& entries, uint32_t vcpu_index,
                    uint32_t vcpu_count, bool tsc_deadline_supported) {
  KVMINI_CHECK(vcpu_count >= 1 && vcpu_index < vcpu_count, "vCPU index outside the machine");
  const Vendor vendor = VendorOf(entries);
  const uint32_t apic_id = vcpu_index;
  for (kvm_cpuid_entry2& entry : entries) {
    switch (entry.function) {
      case 0x1:
        NormalizeLeaf1(entry, apic_id, vcpu_count, tsc_deadline_supported);
        break;
      case 0x4:
        if (vendor == Vendor::kIntel) NormalizeLeaf4(entry, vcpu_count);
        break;
      case 0x6:
        if (vendor == Vendor::kIntel) entry.eax &= ~Bit(kEaxTurboBoost);
        break;
      case 0xA:
        // No virtual PMU: performance counters stay off.
        if (vendor == Vendor::kIntel) entry.eax = entry.ebx = entry.ecx = entry.edx = 0;
        break;
      case 0x80000001:
        if (vendor == Vendor::kAmd) {
          entry.ecx =
              vcpu_count > 1 ? entry.ecx | Bit(kEcxCmpLegacy) : entry.ecx & ~Bit(kEcxCmpLegacy);
        }
        break;
      case 0x80000008:
        // AMD: ECX[7:0] = cores - 1, ECX[15:12] = APIC ID bits for the core.
        if (vendor == Vendor::kAmd) {
          entry.ecx = (entry.ecx & ~0xF0FFu) | (std::bit_width(vcpu_count - 1) << 12) |
                      ((vcpu_count - 1) & 0xFF);
        }
        break;
      case 0x8000001E:
        // AMD extended APIC ID; core id = APIC ID, 1 thread per core, node 0.
        if (vendor == Vendor::kAmd) {
          entry.eax = apic_id;
          entry.ebx = apic_id & 0xFF;
          entry.ecx = 0;
          entry.edx = 0;
        }
        break;
      default:
        break;  // includes KVM's 0x40000000 leaves: passed through as reported
    }
  }
  RewriteTopologyLeaf(entries, 0xB, apic_id, vcpu_count);
  RewriteTopologyLeaf(entries, 0x1F, apic_id, vcpu_count);
}

std::vector<kvm_msr_entry> BootMsrs() {
  auto entry = [](uint32_t index, uint64_t data) {
    kvm_msr_entry result{};
    result.index = index;
    result.data = data;
    return result;
  };
  return {
      entry(msr::kSysenterCs, 0),
      entry(msr::kSysenterEsp, 0),
      entry(msr::kSysenterEip, 0),
      entry(msr::kStar, 0),
      entry(msr::kCstar, 0),
      entry(msr::kKernelGsBase, 0),
      entry(msr::kSyscallMask, 0),
      entry(msr::kLstar, 0),
      entry(msr::kTsc, 0),
      entry(msr::kMiscEnable, msr::kMiscEnableFastString),
      // Without MTRRs enabled Linux treats all memory as uncached and may
      // skip PAT set-up.
      entry(msr::kMtrrDefType, msr::kMtrrEnable | msr::kMtrrTypeWriteBack),
  };
}

}  // namespace kvmini::vmm::x86

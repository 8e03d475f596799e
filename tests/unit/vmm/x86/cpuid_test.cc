#include "vmm/x86/cpuid.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "gtest/gtest.h"

namespace kvmini::vmm::x86 {
namespace {

kvm_cpuid_entry2 Entry(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                       uint32_t edx, uint32_t flags = 0) {
  kvm_cpuid_entry2 entry{};
  entry.function = function;
  entry.index = index;
  entry.flags = flags;
  entry.eax = eax;
  entry.ebx = ebx;
  entry.ecx = ecx;
  entry.edx = edx;
  return entry;
}

// Shaped like KVM_GET_SUPPORTED_CPUID on an Intel host.
std::vector<kvm_cpuid_entry2> IntelEntries() {
  return {
      Entry(0x0, 0, 0x1F, 0x756E6547, 0x6C65746E, 0x49656E69),  // GenuineIntel
      Entry(0x1, 0, 0x000906EA, 0x00100800, 0x7FFAFBFF | (1u << 15), 0xBFEBFBFF),
      Entry(0x4, 0, 0x1C004121, 0x01C0003F, 0x3F, 0, 1),    // L1d
      Entry(0x4, 3, 0x1C03C163, 0x03C0003F, 0x2FFF, 6, 1),  // L3
      Entry(0x4, 4, 0, 0, 0, 0, 1),
      Entry(0x6, 0, 0x4 | 0x2, 0, 0, 0),
      Entry(0xA, 0, 0x07300404, 0, 0, 0x603),
      Entry(0xB, 0, 1, 2, 0x100, 3, 1),  // host topology, to be replaced
      Entry(0xB, 1, 4, 12, 0x201, 3, 1),
      Entry(0x1F, 0, 1, 2, 0x100, 3, 1),
      Entry(0x40000000, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D),
      Entry(0x40000001, 0, 0x01007AFB, 0, 0, 0),
  };
}

std::vector<kvm_cpuid_entry2> AmdEntries() {
  return {
      Entry(0x0, 0, 0x10, 0x68747541, 0x444D4163, 0x69746E65),  // AuthenticAMD
      Entry(0x1, 0, 0x00A00F11, 0x00020800, 0x7ED8320B, 0x178BFBFF),
      Entry(0xB, 0, 1, 2, 0x100, 0, 1),
      Entry(0x80000001, 0, 0x00A00F11, 0, 0x75C237FF, 0x2FD3FBFF),
      Entry(0x80000008, 0, 0x3030, 0, 0x0000700F, 0),
      Entry(0x8000001E, 0, 7, 0x103, 0x300, 0),
      Entry(0x40000001, 0, 0x01007AFB, 0, 0, 0),
  };
}

std::optional<kvm_cpuid_entry2> Find(const std::vector<kvm_cpuid_entry2>& entries,
                                     uint32_t function, uint32_t index = 0) {
  for (const kvm_cpuid_entry2& entry : entries) {
    if (entry.function == function && entry.index == index) return entry;
  }
  return std::nullopt;
}

size_t Count(const std::vector<kvm_cpuid_entry2>& entries, uint32_t function) {
  return std::count_if(entries.begin(), entries.end(),
                       [function](const auto& entry) { return entry.function == function; });
}

TEST(CpuidTest, Leaf1CarriesApicIdTopologyAndHypervisorBits) {
  auto entries = IntelEntries();
  NormalizeCpuid(entries, /*vcpu_index=*/2, /*vcpu_count=*/3, /*tsc_deadline_supported=*/true);
  const kvm_cpuid_entry2 leaf1 = *Find(entries, 1);
  EXPECT_EQ(leaf1.ebx >> 24, 2u);           // APIC ID
  EXPECT_EQ((leaf1.ebx >> 16) & 0xFF, 4u);  // addressable IDs: next power of 2
  EXPECT_EQ((leaf1.ebx >> 8) & 0xFF, 8u);   // CLFLUSH 64 bytes
  EXPECT_EQ(leaf1.ebx & 0xFF, 0u);          // brand index kept
  EXPECT_NE(leaf1.ecx & (1u << 31), 0u);    // hypervisor
  EXPECT_NE(leaf1.ecx & (1u << 24), 0u);    // TSC deadline
  EXPECT_EQ(leaf1.ecx & (1u << 15), 0u);    // no PDCM
  EXPECT_NE(leaf1.edx & (1u << 28), 0u);    // HTT: more than one logical CPU
  EXPECT_EQ(leaf1.eax, 0x000906EAu);        // family/model untouched
}

TEST(CpuidTest, SingleVcpuWithoutTscDeadline) {
  auto entries = IntelEntries();
  entries[1].ecx |= 1u << 24;
  NormalizeCpuid(entries, 0, 1, false);
  const kvm_cpuid_entry2 leaf1 = *Find(entries, 1);
  EXPECT_EQ(leaf1.ebx >> 24, 0u);
  EXPECT_EQ((leaf1.ebx >> 16) & 0xFF, 1u);
  EXPECT_EQ(leaf1.ecx & (1u << 24), 0u);
  EXPECT_EQ(leaf1.edx & (1u << 28), 0u);
  const kvm_cpuid_entry2 core = *Find(entries, 0xB, 1);
  EXPECT_EQ(core.eax, 0u);
  EXPECT_EQ(core.ebx, 1u);
}

TEST(CpuidTest, TopologyLeavesDescribeOneCorePerVcpu) {
  auto entries = IntelEntries();
  NormalizeCpuid(entries, 5, 6, true);
  for (uint32_t function : {0xBu, 0x1Fu}) {
    SCOPED_TRACE(function);
    EXPECT_EQ(Count(entries, function), 3u);
    const kvm_cpuid_entry2 smt = *Find(entries, function, 0);
    EXPECT_EQ(smt.eax, 0u);         // no SMT bits
    EXPECT_EQ(smt.ebx, 1u);         // one thread per core
    EXPECT_EQ(smt.ecx, 0x100u);     // level 0 is SMT
    EXPECT_EQ(smt.edx, 5u);         // x2APIC ID
    EXPECT_EQ(smt.flags & 1u, 1u);  // index is significant
    const kvm_cpuid_entry2 core = *Find(entries, function, 1);
    EXPECT_EQ(core.eax, 3u);  // 6 cores need 3 APIC ID bits
    EXPECT_EQ(core.ebx, 6u);
    EXPECT_EQ(core.ecx, 0x201u);  // level 1 is core
    EXPECT_EQ(core.edx, 5u);
    const kvm_cpuid_entry2 end = *Find(entries, function, 2);
    EXPECT_EQ(end.ecx, 2u);  // level type 0: end of list
    EXPECT_EQ(end.ebx, 0u);
    EXPECT_EQ(end.edx, 5u);
  }
}

TEST(CpuidTest, IntelCacheCountsPmuAndTurbo) {
  auto entries = IntelEntries();
  NormalizeCpuid(entries, 0, 4, true);
  const kvm_cpuid_entry2 l1 = *Find(entries, 4, 0);
  EXPECT_EQ(l1.eax >> 26, 3u);            // 4 cores per package
  EXPECT_EQ((l1.eax >> 14) & 0xFFF, 0u);  // L1 private
  EXPECT_EQ(l1.eax & 0x3FFF, 0x0121u);    // cache type/level kept
  const kvm_cpuid_entry2 l3 = *Find(entries, 4, 3);
  EXPECT_EQ(l3.eax >> 26, 3u);
  EXPECT_EQ((l3.eax >> 14) & 0xFFF, 3u);      // L3 shared by all 4
  EXPECT_EQ(Find(entries, 4, 4)->eax, 0u);    // terminator untouched
  EXPECT_EQ(Find(entries, 6)->eax & 2u, 0u);  // turbo cleared
  EXPECT_EQ(Find(entries, 6)->eax & 4u, 4u);  // ARAT kept
  const kvm_cpuid_entry2 pmu = *Find(entries, 0xA);
  EXPECT_EQ(pmu.eax | pmu.ebx | pmu.ecx | pmu.edx, 0u);
}

TEST(CpuidTest, KvmParavirtLeavesPassThrough) {
  auto entries = IntelEntries();
  NormalizeCpuid(entries, 1, 2, true);
  const kvm_cpuid_entry2 signature = *Find(entries, 0x40000000);
  EXPECT_EQ(signature.eax, 0x40000001u);
  EXPECT_EQ(signature.ebx, 0x4B4D564Bu);
  EXPECT_EQ(signature.ecx, 0x564B4D56u);
  EXPECT_EQ(signature.edx, 0x4Du);
  EXPECT_EQ(Find(entries, 0x40000001)->eax, 0x01007AFBu);
}

TEST(CpuidTest, AmdExtendedTopology) {
  auto entries = AmdEntries();
  NormalizeCpuid(entries, 3, 4, true);
  const kvm_cpuid_entry2 ext = *Find(entries, 0x8000001E);
  EXPECT_EQ(ext.eax, 3u);  // extended APIC ID
  EXPECT_EQ(ext.ebx, 3u);  // core 3, one thread per core
  EXPECT_EQ(ext.ecx, 0u);  // node 0
  const kvm_cpuid_entry2 size = *Find(entries, 0x80000008);
  EXPECT_EQ(size.ecx & 0xFF, 3u);         // 4 cores
  EXPECT_EQ((size.ecx >> 12) & 0xF, 2u);  // 2 APIC ID bits
  EXPECT_EQ(size.eax, 0x3030u);
  EXPECT_NE(Find(entries, 0x80000001)->ecx & 2u, 0u);  // CmpLegacy
  EXPECT_EQ(Find(entries, 0xB, 0)->edx, 3u);
  EXPECT_EQ(Find(entries, 1)->ebx >> 24, 3u);
  // No Intel-only rewriting and no invented leaves.
  EXPECT_FALSE(Find(entries, 0x1F).has_value());
  EXPECT_FALSE(Find(entries, 0xA).has_value());
}

TEST(CpuidTest, LeavesKvmDidNotReportAreNotInvented) {
  std::vector<kvm_cpuid_entry2> entries = {
      Entry(0x0, 0, 0x1, 0x756E6547, 0x6C65746E, 0x49656E69),
      Entry(0x1, 0, 0, 0, 0, 0),
  };
  NormalizeCpuid(entries, 0, 2, false);
  EXPECT_EQ(entries.size(), 2u);
}

TEST(BootMsrsTest, SetsFastStringsAndWriteBackMtrrDefault) {
  const std::vector<kvm_msr_entry> msrs = BootMsrs();
  auto value = [&msrs](uint32_t index) -> std::optional<uint64_t> {
    for (const kvm_msr_entry& entry : msrs) {
      if (entry.index == index) return entry.data;
    }
    return std::nullopt;
  };
  EXPECT_EQ(value(0x1A0), 1u);      // IA32_MISC_ENABLE: fast strings
  EXPECT_EQ(value(0x2FF), 0x806u);  // MTRRdefType: enabled, WB
  EXPECT_EQ(value(0x10), 0u);       // TSC
  for (uint32_t index :
       {0x174u, 0x175u, 0x176u, 0xC0000081u, 0xC0000082u, 0xC0000083u, 0xC0000084u, 0xC0000102u}) {
    EXPECT_EQ(value(index), 0u) << std::hex << index;
  }
  EXPECT_EQ(msrs.size(), 11u);
}

}  // namespace
}  // namespace kvmini::vmm::x86

#include "vmm/x86/long_mode.h"

#include <vector>

#include "gtest/gtest.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

std::unique_ptr<hw::GuestMemory> MakeGuest() {
  auto memory = hw::GuestMemory::Allocate({{0, 16 * kMiB}});
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

uint64_t ReadU64(const hw::GuestMemory& memory, uint64_t address) {
  auto value = memory.ReadObject<uint64_t>(address);
  EXPECT_TRUE(value.ok()) << value.status();
  return value.value_or(0);
}

TEST(GdtTest, DescriptorsMatchTheArchitecturalEncoding) {
  // Known encodings of flat 4 GiB descriptors.
  EXPECT_EQ(GdtDescriptor(0xA09B, 0, 0xFFFFF), 0x00AF9B000000FFFFull);
  EXPECT_EQ(GdtDescriptor(0xC093, 0, 0xFFFFF), 0x00CF93000000FFFFull);
  EXPECT_EQ(GdtDescriptor(0x808B, 0, 0xFFFFF), 0x008F8B000000FFFFull);
  EXPECT_EQ(GdtDescriptor(0x0093, 0x12345678, 0xABCDE), 0x120A93345678BCDEull);
}

TEST(GdtTest, UnpacksDescriptorsIntoSegmentState) {
  const SegmentState code = SegmentFromDescriptor(GdtDescriptor(0xA09B, 0, 0xFFFFF), 0x08);
  EXPECT_EQ(code.selector, 0x08);
  EXPECT_EQ(code.type, 0xB);
  EXPECT_EQ(code.s, 1);
  EXPECT_EQ(code.present, 1);
  EXPECT_EQ(code.dpl, 0);
  EXPECT_EQ(code.l, 1);
  EXPECT_EQ(code.db, 0);  // L=1 with D=1 is invalid
  EXPECT_EQ(code.g, 1);
  EXPECT_EQ(code.limit, 0xFFFFFFFFu);
  const SegmentState tss = SegmentFromDescriptor(GdtDescriptor(0x808B, 0, 0xFFFFF), 0x18);
  EXPECT_EQ(tss.type, 0xB);  // busy 64-bit TSS, as VM entry requires
  EXPECT_EQ(tss.s, 0);
  const SegmentState based = SegmentFromDescriptor(GdtDescriptor(0x0093, 0x12345678, 0xABCDE), 0);
  EXPECT_EQ(based.base, 0x12345678u);
  EXPECT_EQ(based.limit, 0xABCDEu);
  EXPECT_EQ(based.g, 0);
}

TEST(LongModeTablesTest, WritesGdtAndIdentityMapWithTwoMibPages) {
  auto memory = MakeGuest();
  ASSERT_TRUE(WriteLongModeTables(*memory).ok());
  EXPECT_EQ(ReadU64(*memory, kGdtAddress), 0u);
  EXPECT_EQ(ReadU64(*memory, kGdtAddress + 8), 0x00AF9B000000FFFFull);
  EXPECT_EQ(ReadU64(*memory, kGdtAddress + 16), 0x00CF93000000FFFFull);
  EXPECT_EQ(ReadU64(*memory, kGdtAddress + 24), 0x008F8B000000FFFFull);
  EXPECT_EQ(ReadU64(*memory, kGdtAddress + 32), 0x00CF9B000000FFFFull);  // 32-bit code
  EXPECT_EQ(ReadU64(*memory, kIdtAddress), 0u);

  EXPECT_EQ(ReadU64(*memory, kPml4Address), kPdptAddress | 0x3);
  EXPECT_EQ(ReadU64(*memory, kPml4Address + 8), 0u);
  for (uint64_t gib = 0; gib < 4; ++gib) {
    EXPECT_EQ(ReadU64(*memory, kPdptAddress + gib * 8),
              (kPageDirectoryAddress + gib * kPageSize) | 0x3);
  }
  EXPECT_EQ(ReadU64(*memory, kPdptAddress + 4 * 8), 0u);
  // Every 2 MiB page of the first 4 GiB maps to itself: present, writable, PS.
  for (uint64_t page : {0ull, 1ull, 511ull, 512ull, 1536ull, 2047ull}) {
    EXPECT_EQ(ReadU64(*memory, kPageDirectoryAddress + page * 8), (page << 21) | 0x83) << page;
  }
  // The tables end before the command line and do not touch the zero page.
  EXPECT_LE(kPageDirectoryAddress + 4 * kPageSize, kCommandLineAddress);
  EXPECT_EQ(ReadU64(*memory, kZeroPageAddress), 0u);
}

TEST(LongModeTablesTest, FailsWithoutLowMemory) {
  auto memory = hw::GuestMemory::Allocate({{kMiB, kMiB}});
  ASSERT_TRUE(memory.ok());
  EXPECT_FALSE(WriteLongModeTables(**memory).ok());
}

TEST(BootStateTest, SixtyFourBitEntryState) {
  const BootState state = LongModeBootState(0x100200, kZeroPageAddress);
  EXPECT_EQ(state.rip, 0x100200u);
  EXPECT_EQ(state.rsi, 0x7000u);
  EXPECT_EQ(state.rsp, 0x8FF0u);
  EXPECT_EQ(state.rbp, 0x8FF0u);
  EXPECT_EQ(state.rflags, 0x2u);
  EXPECT_EQ(state.cr0 & 0x80000001, 0x80000001u);  // PG | PE
  EXPECT_EQ(state.cr3, 0x9000u);
  EXPECT_EQ(state.cr4, 0x20u);    // PAE
  EXPECT_EQ(state.efer, 0x500u);  // LME | LMA
  EXPECT_EQ(state.cs.selector, 0x08);
  EXPECT_EQ(state.cs.l, 1);
  for (const SegmentState* data : {&state.ds, &state.es, &state.fs, &state.gs, &state.ss}) {
    EXPECT_EQ(data->selector, 0x10);
    EXPECT_EQ(data->type, 0x3);
    EXPECT_EQ(data->db, 1);
  }
  EXPECT_EQ(state.tr.selector, 0x18);
  EXPECT_EQ(state.gdt.base, 0x500u);
  EXPECT_EQ(state.gdt.limit, 39);
  EXPECT_EQ(state.idt.base, 0x540u);
  EXPECT_EQ(state.idt.limit, 7);
}

TEST(BootStateTest, ThirtyTwoBitPvhEntryState) {
  const BootState state = ProtectedModeBootState(0x1000850, 0x6000);
  EXPECT_EQ(state.rip, 0x1000850u);
  EXPECT_EQ(state.rbx, 0x6000u);
  EXPECT_EQ(state.cr0 & 0x80000001, 0x1u);  // PE without PG
  EXPECT_EQ(state.cr4, 0u);
  EXPECT_EQ(state.efer, 0u);
  EXPECT_EQ(state.rflags, 0x2u);  // interrupts off
  EXPECT_EQ(state.cs.selector, 0x20);
  EXPECT_EQ(state.cs.type, 0xB);
  EXPECT_EQ(state.cs.db, 1);  // 32-bit code
  EXPECT_EQ(state.cs.l, 0);
  EXPECT_EQ(state.cs.limit, 0xFFFFFFFFu);
  EXPECT_EQ(state.ss.selector, 0x10);
  EXPECT_EQ(state.ss.db, 1);
  EXPECT_EQ(state.tr.selector, 0x18);
  EXPECT_EQ(state.tr.type, 0xB);
  kvm_regs regs;
  FillRegs(state, &regs);
  EXPECT_EQ(regs.rbx, 0x6000u);
  EXPECT_EQ(regs.rip, 0x1000850u);
}

TEST(BootStateTest, FillSregsKeepsApicBaseAndSetsSegments) {
  const BootState state = LongModeBootState(0x100200, kZeroPageAddress);
  kvm_sregs sregs{};
  sregs.apic_base = 0xFEE00900;
  sregs.ldt.selector = 0;
  sregs.ldt.type = 2;
  FillSregs(state, &sregs);
  EXPECT_EQ(sregs.apic_base, 0xFEE00900u);
  EXPECT_EQ(sregs.ldt.type, 2);
  EXPECT_EQ(sregs.cs.selector, 0x08);
  EXPECT_EQ(sregs.cs.l, 1);
  EXPECT_EQ(sregs.cs.unusable, 0);
  EXPECT_EQ(sregs.ss.selector, 0x10);
  EXPECT_EQ(sregs.tr.selector, 0x18);
  EXPECT_EQ(sregs.tr.type, 0xB);
  EXPECT_EQ(sregs.gdt.base, 0x500u);
  EXPECT_EQ(sregs.gdt.limit, 39);
  EXPECT_EQ(sregs.cr3, 0x9000u);
  EXPECT_EQ(sregs.efer, 0x500u);

  kvm_regs regs;
  regs.rax = 42;
  FillRegs(state, &regs);
  EXPECT_EQ(regs.rax, 0u);
  EXPECT_EQ(regs.rip, 0x100200u);
  EXPECT_EQ(regs.rsi, 0x7000u);
  EXPECT_EQ(regs.rsp, 0x8FF0u);
  EXPECT_EQ(regs.rflags, 0x2u);

  kvm_fpu fpu;
  fpu.fsw = 7;
  FillFpu(&fpu);
  EXPECT_EQ(fpu.fcw, 0x37F);
  EXPECT_EQ(fpu.mxcsr, 0x1F80u);
  EXPECT_EQ(fpu.fsw, 0);
}

}  // namespace
}  // namespace kvmini::vmm::x86

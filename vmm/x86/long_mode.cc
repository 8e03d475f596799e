#include "vmm/x86/long_mode.h"

#include <array>
#include <vector>

#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

// Descriptor flags: access byte | (G, DB, L, AVL) << 12.
constexpr uint16_t kCode64Flags = 0xA09B;  // present, exec/read, accessed; G=1, L=1
constexpr uint16_t kDataFlags = 0xC093;    // present, read/write, accessed; G=1, DB=1
constexpr uint16_t kTssFlags = 0x808B;     // present, busy TSS; G=1
constexpr uint16_t kCode32Flags = 0xC09B;  // present, exec/read, accessed; G=1, DB=1
constexpr uint32_t kFlatLimit = 0xFFFFF;

using Gdt = std::array<uint64_t, 5>;
static_assert(kGdtAddress + sizeof(Gdt) <= kIdtAddress, "GDT runs into the IDT");

Gdt BootGdt() {
  return {0, GdtDescriptor(kCode64Flags, 0, kFlatLimit), GdtDescriptor(kDataFlags, 0, kFlatLimit),
          GdtDescriptor(kTssFlags, 0, kFlatLimit), GdtDescriptor(kCode32Flags, 0, kFlatLimit)};
}

// Segments, descriptor tables and flags both start states share.
BootState FlatSegmentState(const Gdt& gdt, uint16_t code_selector) {
  BootState state;
  state.rsp = kBootStackPointer;
  state.rbp = kBootStackPointer;
  state.rflags = 1 << 1;  // bit 1 always reads as 1; interrupts off
  state.cs = SegmentFromDescriptor(gdt[code_selector / 8], code_selector);
  const SegmentState data = SegmentFromDescriptor(gdt[kDataSelector / 8], kDataSelector);
  state.ds = state.es = state.fs = state.gs = state.ss = data;
  state.tr = SegmentFromDescriptor(gdt[kTssSelector / 8], kTssSelector);
  state.gdt = {kGdtAddress, static_cast<uint16_t>(sizeof(gdt) - 1)};
  state.idt = {kIdtAddress, sizeof(uint64_t) - 1};
  return state;
}

// Page-table entry bits.
constexpr uint64_t kPresent = 1 << 0;
constexpr uint64_t kWritable = 1 << 1;
constexpr uint64_t kLargePage = 1 << 7;
constexpr uint64_t kLargePageSize = 2 * kMiB;

constexpr uint64_t kCr0ProtectionEnable = 1 << 0;
constexpr uint64_t kCr0ExtensionType = 1 << 4;
constexpr uint64_t kCr0Paging = 1ull << 31;
constexpr uint64_t kCr4Pae = 1 << 5;
constexpr uint64_t kEferLongModeEnable = 1 << 8;
constexpr uint64_t kEferLongModeActive = 1 << 10;

kvm_segment ToKvmSegment(const SegmentState& segment) {
  kvm_segment result{};
  result.base = segment.base;
  result.limit = segment.limit;
  result.selector = segment.selector;
  result.type = segment.type;
  result.present = segment.present;
  result.dpl = segment.dpl;
  result.db = segment.db;
  result.s = segment.s;
  result.l = segment.l;
  result.g = segment.g;
  result.avl = segment.avl;
  result.unusable = segment.present ? 0 : 1;
  return result;
}

}  // namespace

uint64_t GdtDescriptor(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((static_cast<uint64_t>(base) & 0xFF000000) << 32) |
         ((static_cast<uint64_t>(base) & 0x00FFFFFF) << 16) |
         (static_cast<uint64_t>(limit) & 0x0000FFFF) |
         ((static_cast<uint64_t>(limit) & 0x000F0000) << 32) |
         ((static_cast<uint64_t>(flags) & 0xF0FF) << 40);
}

SegmentState SegmentFromDescriptor(uint64_t descriptor, uint16_t selector) {
  SegmentState segment;
  const uint8_t access = (descriptor >> 40) & 0xFF;
  segment.base = ((descriptor >> 16) & 0xFFFFFF) | (((descriptor >> 56) & 0xFF) << 24);
  segment.selector = selector;
  segment.type = access & 0xF;
  segment.s = (access >> 4) & 1;
  segment.dpl = (access >> 5) & 3;
  segment.present = (access >> 7) & 1;
  segment.avl = (descriptor >> 52) & 1;
  segment.l = (descriptor >> 53) & 1;
  segment.db = (descriptor >> 54) & 1;
  segment.g = (descriptor >> 55) & 1;
  const uint32_t raw_limit =
      static_cast<uint32_t>((descriptor & 0xFFFF) | (((descriptor >> 48) & 0xF) << 16));
  segment.limit = segment.g ? (raw_limit << 12) | 0xFFF : raw_limit;
  return segment;
}

absl::Status WriteLongModeTables(const hw::GuestMemory& memory) {
  if (absl::Status status = memory.WriteObject(kGdtAddress, BootGdt()); !status.ok()) {
    return status;
  }
  if (absl::Status status = memory.WriteObject(kIdtAddress, uint64_t{0}); !status.ok()) {
    return status;
  }
  constexpr uint64_t kDirectoryCount = kIdentityMappedBytes / kGiB;
  constexpr uint64_t kEntriesPerTable = kPageSize / sizeof(uint64_t);
  std::vector<uint8_t> tables(kPageSize * (2 + kDirectoryCount), 0);
  std::span<uint8_t> pml4(tables.data(), kPageSize);
  std::span<uint8_t> pdpt(tables.data() + kPageSize, kPageSize);
  std::span<uint8_t> directories(tables.data() + 2 * kPageSize, kDirectoryCount * kPageSize);
  static_assert(kPdptAddress == kPml4Address + kPageSize &&
                kPageDirectoryAddress == kPdptAddress + kPageSize);
  StoreLittleEndian<uint64_t>(pml4, 0, kPdptAddress | kPresent | kWritable);
  for (uint64_t i = 0; i < kDirectoryCount; ++i) {
    StoreLittleEndian<uint64_t>(pdpt, i * 8,
                                (kPageDirectoryAddress + i * kPageSize) | kPresent | kWritable);
  }
  for (uint64_t i = 0; i < kDirectoryCount * kEntriesPerTable; ++i) {
    StoreLittleEndian<uint64_t>(directories, i * 8,
                                (i * kLargePageSize) | kPresent | kWritable | kLargePage);
  }
  return memory.Write(kPml4Address, tables);
}

BootState LongModeBootState(uint64_t entry, uint64_t rsi) {
  BootState state = FlatSegmentState(BootGdt(), kCodeSelector);
  state.rip = entry;
  state.rsi = rsi;
  state.cr0 = kCr0ProtectionEnable | kCr0ExtensionType | kCr0Paging;
  state.cr3 = kPml4Address;
  state.cr4 = kCr4Pae;
  state.efer = kEferLongModeEnable | kEferLongModeActive;
  return state;
}

BootState ProtectedModeBootState(uint64_t entry, uint64_t rbx) {
  BootState state = FlatSegmentState(BootGdt(), kCode32Selector);
  state.rip = entry;
  state.rbx = rbx;
  state.cr0 = kCr0ProtectionEnable | kCr0ExtensionType;
  return state;
}

void FillRegs(const BootState& state, kvm_regs* regs) {
  *regs = kvm_regs{};
  regs->rip = state.rip;
  regs->rbx = state.rbx;
  regs->rsi = state.rsi;
  regs->rsp = state.rsp;
  regs->rbp = state.rbp;
  regs->rflags = state.rflags;
}

void FillSregs(const BootState& state, kvm_sregs* sregs) {
  sregs->cs = ToKvmSegment(state.cs);
  sregs->ds = ToKvmSegment(state.ds);
  sregs->es = ToKvmSegment(state.es);
  sregs->fs = ToKvmSegment(state.fs);
  sregs->gs = ToKvmSegment(state.gs);
  sregs->ss = ToKvmSegment(state.ss);
  sregs->tr = ToKvmSegment(state.tr);
  sregs->gdt.base = state.gdt.base;
  sregs->gdt.limit = state.gdt.limit;
  sregs->idt.base = state.idt.base;
  sregs->idt.limit = state.idt.limit;
  sregs->cr0 = state.cr0;
  sregs->cr3 = state.cr3;
  sregs->cr4 = state.cr4;
  sregs->efer = state.efer;
}

void FillFpu(kvm_fpu* fpu) {
  *fpu = kvm_fpu{};
  fpu->fcw = 0x37F;     // all x87 exceptions masked, 64-bit precision
  fpu->mxcsr = 0x1F80;  // all SSE exceptions masked
}

}  // namespace kvmini::vmm::x86

// The CPU state in which the BSP starts: 64-bit long mode with paging on an
// identity map and the registers of the Linux 64-bit boot protocol, or
// 32-bit protected mode without paging for the PVH entry; flat segments
// from our GDT either way. WriteLongModeTables() puts the GDT, IDT and page
// tables into guest memory; LongModeBootState() / ProtectedModeBootState()
// give the matching register values as plain data, and the Fill*() helpers
// turn them into the structs KVM_SET_REGS/SREGS/FPU take. Also usable for
// tiny test payloads: write the tables, load code anywhere in RAM, start at
// its address.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "absl/status/status.h"
#include "hw/memory/guest_memory.h"

namespace kvmini::vmm::x86 {

// GDT selectors (index * 8) of the boot GDT: null, 64-bit code, data, TSS,
// 32-bit code.
inline constexpr uint16_t kCodeSelector = 0x08;
inline constexpr uint16_t kDataSelector = 0x10;
inline constexpr uint16_t kTssSelector = 0x18;
inline constexpr uint16_t kCode32Selector = 0x20;

// A segment register's hidden part, unpacked from its GDT descriptor.
struct SegmentState {
  uint64_t base = 0;
  uint32_t limit = 0;  // in bytes - 1, granularity already applied
  uint16_t selector = 0;
  uint8_t type = 0;
  uint8_t present = 0;
  uint8_t dpl = 0;
  uint8_t db = 0;
  uint8_t s = 0;  // 1 = code/data, 0 = system (TSS)
  uint8_t l = 0;  // 64-bit code
  uint8_t g = 0;
  uint8_t avl = 0;
};

struct DescriptorTableState {
  uint64_t base = 0;
  uint16_t limit = 0;
};

// Initial BSP registers. General registers not named here start at 0.
struct BootState {
  uint64_t rip = 0;
  uint64_t rbx = 0;  // hvm_start_info GPA for the PVH entry
  uint64_t rsi = 0;  // boot_params GPA for the Linux 64-bit entry
  uint64_t rsp = 0;
  uint64_t rbp = 0;
  uint64_t rflags = 0;
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  SegmentState cs, ds, es, fs, gs, ss, tr;
  DescriptorTableState gdt, idt;
};

// Writes the boot GDT (kGdtAddress), an empty IDT (kIdtAddress) and the
// identity page tables (kPml4Address...) mapping [0, kIdentityMappedBytes)
// with 2 MiB pages. Fails if that low memory is not guest RAM.
absl::Status WriteLongModeTables(const hw::GuestMemory& memory);

// The register state matching WriteLongModeTables(), starting at `entry`
// with RSI = `rsi` and the boot stack.
BootState LongModeBootState(uint64_t entry, uint64_t rsi);

// 32-bit protected mode, paging off, flat 32-bit code and data segments
// from the same GDT, EBX = `rbx`: the state the PVH entry expects.
BootState ProtectedModeBootState(uint64_t entry, uint64_t rbx);

// The raw 8-byte GDT descriptor for (flags, base, limit), where `flags` packs
// the access byte in bits 0-7 and the G/DB/L/AVL nibble in bits 12-15
// (e.g. 0xA09B = 64-bit code), and its unpacked form for a segment register.
uint64_t GdtDescriptor(uint16_t flags, uint32_t base, uint32_t limit);
SegmentState SegmentFromDescriptor(uint64_t descriptor, uint16_t selector);

// Overwrite the fields BootState defines in structs previously read from
// the vCPU (KVM_GET_SREGS keeps apic_base and the LDT state intact, which
// KVM_SET_SREGS would otherwise clobber). FillRegs zeroes the rest.
void FillRegs(const BootState& state, kvm_regs* regs);
void FillSregs(const BootState& state, kvm_sregs* sregs);
// x87 and SSE control words at their power-on defaults.
void FillFpu(kvm_fpu* fpu);

}  // namespace kvmini::vmm::x86

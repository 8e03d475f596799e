// The guest-physical address map of a kvmini x86 machine: where the boot
// structures, the kernel, the ACPI tables and the virtio-mmio windows live,
// which ranges are RAM, and the e820 map the guest kernel is given. Everything
// that places something in guest memory takes its address from here, so the
// pieces cannot overlap by accident.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"

namespace kvmini::vmm::x86 {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kPageSize = 4 * kKiB;

// --- Low memory (below 1 MiB), all inside the first RAM range. ---
// GDT (null, 64-bit code, data, TSS, 32-bit code) and a one-entry IDT, as
// the boot paths load them; the kernel replaces both immediately.
inline constexpr uint64_t kGdtAddress = 0x500;
inline constexpr uint64_t kIdtAddress = 0x540;
// PVH entry only: hvm_start_info (EBX at the entry), the module list (the
// initrd) and the memory map, up to the zero page (unused with PVH).
inline constexpr uint64_t kPvhStartInfoAddress = 0x6000;
inline constexpr uint64_t kPvhModuleListAddress = 0x6040;
inline constexpr uint64_t kPvhMemoryMapAddress = 0x6080;
// The zero page (struct boot_params), RSI at the 64-bit entry.
inline constexpr uint64_t kZeroPageAddress = 0x7000;
inline constexpr uint64_t kZeroPageSize = 0x1000;
// Boot stack: one page, RSP starts 16 bytes below its top.
inline constexpr uint64_t kBootStackPage = 0x8000;
inline constexpr uint64_t kBootStackPointer = 0x8FF0;
// Identity page tables: PML4, PDPT, then one page directory per GiB mapped.
inline constexpr uint64_t kPml4Address = 0x9000;
inline constexpr uint64_t kPdptAddress = 0xA000;
inline constexpr uint64_t kPageDirectoryAddress = 0xB000;  // 4 pages: 0xB000-0xEFFF
// The first 4 GiB are identity mapped with 2 MiB pages, so that the kernel
// and also a tiny test payload can reach any RAM below 3 GiB and the MMIO
// hole (1 GiB pages are avoided: they broke tiny guests on software KVM).
inline constexpr uint64_t kIdentityMappedBytes = 4 * kGiB;
// Kernel command line, NUL terminated. Longer than any kernel accepts
// (cmdline_size is 2047 for Debian's 6.1); the kernel's limit applies first.
inline constexpr uint64_t kCommandLineAddress = 0x20000;
inline constexpr uint64_t kCommandLineMaxBytes = 64 * kKiB;
// RAM usable by the guest below 1 MiB ends here (the classic 639 KiB); the
// rest up to 1 MiB is E820-reserved and holds the ACPI tables.
inline constexpr uint64_t kLowRamEnd = 0x9FC00;
// The ACPI tables: RSDP first (16-byte aligned, inside the 0xE0000-0xFFFFF
// range Linux scans, and also handed over in boot_params.acpi_rsdp_addr),
// the other tables packed after it up to 1 MiB.
inline constexpr uint64_t kAcpiAreaStart = 0xE0000;
inline constexpr uint64_t kAcpiAreaEnd = 0x100000;
inline constexpr uint64_t kRsdpAddress = kAcpiAreaStart;

// --- The kernel. ---
// The protected-mode part of a bzImage is loaded here; the 64-bit entry
// point is 0x200 bytes in.
inline constexpr uint64_t kKernelLoadAddress = 0x100000;
inline constexpr uint64_t kKernel64BitEntryOffset = 0x200;

// --- The 32-bit MMIO hole: [3 GiB, 4 GiB) is never RAM. ---
inline constexpr uint64_t kMmioHoleStart = 3 * kGiB;
inline constexpr uint64_t kMmioHoleEnd = 4 * kGiB;
// virtio-mmio devices: one window of kVirtioMmioWindowSize per device slot,
// counting up from kVirtioMmioBase, each with its own GSI counting up from
// kVirtioMmioFirstGsi. GSIs 16-23 are IOAPIC-only pins (no ISA/PIC
// aliasing), which limits us to 8 devices with KVM's single 24-pin IOAPIC.
inline constexpr uint64_t kVirtioMmioBase = 0xD0000000;
inline constexpr uint64_t kVirtioMmioWindowSize = 0x1000;
inline constexpr uint32_t kVirtioMmioFirstGsi = 16;
inline constexpr uint32_t kIoapicPinCount = 24;
inline constexpr uint32_t kMaxVirtioMmioDevices = kIoapicPinCount - kVirtioMmioFirstGsi;
// Fixed x86 platform addresses in the hole.
inline constexpr uint64_t kIoapicAddress = 0xFEC00000;
inline constexpr uint64_t kLocalApicAddress = 0xFEE00000;
// KVM_SET_TSS_ADDR (3 pages) and KVM's default identity-map page (Intel
// only) just below it; neither may overlap RAM or a device window.
inline constexpr uint64_t kKvmTssAddress = 0xFFFBD000;
inline constexpr uint64_t kKvmIdentityMapAddress = 0xFFFBC000;

// COM1, the serial console, and its ISA IRQ.
inline constexpr uint16_t kCom1Port = 0x3F8;
inline constexpr uint32_t kCom1Irq = 4;

// A memory size smaller than this cannot hold the boot structures and a
// useful kernel (a Linux kernel needs more; LoadLinux checks that).
inline constexpr uint64_t kMinimumMemoryBytes = 16 * kMiB;

// One virtio-mmio device as the guest sees it: register window and GSI
// (edge-triggered: devices signal it through an irqfd without resample).
struct MmioDeviceWindow {
  uint64_t base;
  uint64_t size;
  uint32_t gsi;
};

// The window and GSI of virtio-mmio slot `index` (0-based); an error once
// the slots run out.
absl::StatusOr<MmioDeviceWindow> VirtioMmioSlot(uint32_t index);

// The guest RAM ranges for `memory_bytes` of RAM: from 0 up to 3 GiB, the
// remainder from 4 GiB, so the 32-bit MMIO hole stays free. Fails (with a
// message naming the size) if the size is below kMinimumMemoryBytes or not
// a multiple of 4 KiB.
absl::StatusOr<std::vector<hw::GuestMemory::Range>> GuestRamRanges(uint64_t memory_bytes);

// An e820 entry, as boot_params.e820_table stores it.
enum class E820Type : uint32_t { kRam = 1, kReserved = 2, kAcpiReclaimable = 3, kAcpiNvs = 4 };
struct E820Entry {
  uint64_t address;
  uint64_t size;
  E820Type type;
  friend bool operator==(const E820Entry&, const E820Entry&) = default;
};

// The memory map for RAM laid out as `ram` (sorted, as GuestRamRanges
// returns it): RAM below kLowRamEnd, [kLowRamEnd, 1 MiB) reserved (EBDA,
// ACPI tables, RSDP), then each RAM range from 1 MiB on.
std::vector<E820Entry> BuildE820Map(std::span<const hw::GuestMemory::Range> ram);

}  // namespace kvmini::vmm::x86

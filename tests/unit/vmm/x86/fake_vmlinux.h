// Synthetic ELF vmlinux files for the PVH loader tests: a 64-bit x86-64
// executable with loadable segments at physical addresses and a PT_NOTE
// segment carrying the Xen PVH entry note, like Linux's with CONFIG_PVH.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvmini::vmm::x86::testing {

struct FakeSegment {
  uint64_t physical_address;
  uint64_t file_size;    // filled with (i * 13 + 5) & 0xFF
  uint64_t memory_size;  // >= file_size
};

struct FakeVmlinuxOptions {
  std::vector<FakeSegment> segments = {{0x1000000, 0x3000, 0x3000}, {0x1004000, 0x1800, 0x5000}};
  bool pvh_note = true;
  uint64_t pvh_entry = 0x1000850;
  uint32_t pvh_entry_size = 8;  // the note's descriptor size: 4 or 8
  uint8_t elf_class = 2;        // 2 = 64-bit
};

std::vector<uint8_t> MakeFakeVmlinux(const FakeVmlinuxOptions& options = {});

// File offset of segment `index`'s bytes.
uint64_t FakeSegmentOffset(const FakeVmlinuxOptions& options, size_t index);

}  // namespace kvmini::vmm::x86::testing

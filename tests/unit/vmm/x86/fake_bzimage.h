// Synthetic bzImage files for tests: a setup header with the fields the
// boot protocol defines (values like a Debian 6.1 kernel's unless a test
// changes them) and a recognisable protected-mode payload. No real kernel
// or download needed.
#pragma once

#include <cstdint>
#include <vector>

namespace kvmini::vmm::x86::testing {

struct FakeKernelOptions {
  uint8_t setup_sectors = 4;
  uint64_t payload_bytes = 64 * 1024;  // multiple of 16
  uint16_t version = 0x020F;
  uint8_t loadflags = 0x01;    // LOADED_HIGH
  uint16_t xloadflags = 0x03;  // KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
  uint32_t initrd_addr_max = 0x7FFFFFFF;
  uint32_t cmdline_size = 2047;
  uint32_t kernel_alignment = 0x200000;
  uint8_t relocatable = 1;
  uint64_t pref_address = 0x1000000;
  uint32_t init_size = 0x3F98000;  // Debian 6.1's: 63.6 MiB
};

// The whole file. Payload byte i is (i * 7 + 3) & 0xFF.
std::vector<uint8_t> MakeFakeBzImage(const FakeKernelOptions& options = {});

// Offset of the protected-mode payload in the file.
uint64_t FakePayloadOffset(const FakeKernelOptions& options = {});

}  // namespace kvmini::vmm::x86::testing

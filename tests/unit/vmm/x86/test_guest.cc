#include "tests/unit/vmm/x86/test_guest.h"

#include "gtest/gtest.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86::testing {

std::unique_ptr<hw::GuestMemory> MakeTestGuest(uint64_t memory_bytes) {
  auto ranges = GuestRamRanges(memory_bytes);
  EXPECT_TRUE(ranges.ok()) << ranges.status();
  if (!ranges.ok()) return nullptr;
  auto memory = hw::GuestMemory::Allocate(*ranges);
  EXPECT_TRUE(memory.ok()) << memory.status();
  if (!memory.ok()) return nullptr;
  return std::move(*memory);
}

std::vector<uint8_t> ReadGuestBytes(const hw::GuestMemory& memory, uint64_t address,
                                    uint64_t size) {
  std::vector<uint8_t> bytes(size);
  absl::Status status = memory.Read(address, bytes);
  EXPECT_TRUE(status.ok()) << status;
  return bytes;
}

}  // namespace kvmini::vmm::x86::testing

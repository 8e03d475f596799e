// Guest memory for loader and table tests: laid out by GuestRamRanges()
// like a real machine's, plus a checked read-back helper.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hw/memory/guest_memory.h"

namespace kvmini::vmm::x86::testing {

// Fails the current test (and returns null) if the memory cannot be made.
std::unique_ptr<hw::GuestMemory> MakeTestGuest(uint64_t memory_bytes);

// The guest bytes at [address, +size); fails the test if not guest RAM.
std::vector<uint8_t> ReadGuestBytes(const hw::GuestMemory& memory, uint64_t address, uint64_t size);

}  // namespace kvmini::vmm::x86::testing

#include "vmm/x86/memory_layout.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace kvmini::vmm::x86 {

static_assert(kPageDirectoryAddress + (kIdentityMappedBytes / kGiB) * kPageSize <=
                  kCommandLineAddress,
              "page directories run into the command line");
static_assert(kCommandLineAddress + kCommandLineMaxBytes <= kLowRamEnd,
              "command line area runs into the reserved area");
static_assert(kVirtioMmioBase >= kMmioHoleStart &&
                  kVirtioMmioBase + kMaxVirtioMmioDevices * kVirtioMmioWindowSize <= kIoapicAddress,
              "virtio-mmio windows must stay in the hole, below the IOAPIC");

absl::StatusOr<MmioDeviceWindow> VirtioMmioSlot(uint32_t index) {
  if (index >= kMaxVirtioMmioDevices) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "too many virtio-mmio devices: at most %d fit (one IOAPIC pin each, GSIs %d-%d)",
        kMaxVirtioMmioDevices, kVirtioMmioFirstGsi, kIoapicPinCount - 1));
  }
  return MmioDeviceWindow{kVirtioMmioBase + index * kVirtioMmioWindowSize, kVirtioMmioWindowSize,
                          kVirtioMmioFirstGsi + index};
}

absl::StatusOr<std::vector<hw::GuestMemory::Range>> GuestRamRanges(uint64_t memory_bytes) {
  if (memory_bytes < kMinimumMemoryBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory size %d bytes is below the minimum of %d MiB", memory_bytes,
                        kMinimumMemoryBytes / kMiB));
  }
  if (memory_bytes % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory size %d bytes is not a multiple of 4 KiB", memory_bytes));
  }
  // Guest-physical space above 4 GiB is limited by the CPU's physical
  // address width; far beyond anything this host could back anyway.
  constexpr uint64_t kMaximumMemoryBytes = 1ull << 46;
  if (memory_bytes > kMaximumMemoryBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory size %d GiB is larger than the supported %d GiB",
                        memory_bytes / kGiB, kMaximumMemoryBytes / kGiB));
  }
  std::vector<hw::GuestMemory::Range> ranges;
  const uint64_t below_hole = std::min(memory_bytes, kMmioHoleStart);
  ranges.push_back({0, below_hole});
  if (memory_bytes > below_hole) ranges.push_back({kMmioHoleEnd, memory_bytes - below_hole});
  return ranges;
}

std::vector<E820Entry> BuildE820Map(std::span<const hw::GuestMemory::Range> ram) {
  std::vector<E820Entry> map;
  auto add = [&map](uint64_t start, uint64_t end, E820Type type) {
    if (end > start) map.push_back({start, end - start, type});
  };
  for (const hw::GuestMemory::Range& range : ram) {
    const uint64_t start = range.guest_address;
    const uint64_t end = range.guest_address + range.size;
    // Split each range at kLowRamEnd and at 1 MiB: the piece in between is
    // the legacy EBDA/ROM area where the ACPI tables live.
    add(start, std::min(end, kLowRamEnd), E820Type::kRam);
    add(std::max(start, kLowRamEnd), std::min(end, kKernelLoadAddress), E820Type::kReserved);
    add(std::max(start, kKernelLoadAddress), end, E820Type::kRam);
  }
  return map;
}

}  // namespace kvmini::vmm::x86

#include "hw/memory/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvmini::hw {
namespace {
constexpr uint64_t kPageSize = 4096;
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Allocate(
    const std::vector<Range>& ranges) {
  std::vector<Region> regions;
  auto unmap_all = [&regions] {
    for (const Region& region : regions) munmap(region.host, region.size);
  };
  uint64_t previous_end = 0;
  for (const Range& range : ranges) {
    if (range.size == 0 || range.guest_address % kPageSize != 0 || range.size % kPageSize != 0 ||
        range.guest_address < previous_end ||
        range.guest_address + range.size < range.guest_address) {
      unmap_all();
      return absl::InvalidArgumentError(
          absl::StrFormat("guest memory range [%#x, +%#x) is empty, unaligned, overlapping or "
                          "out of order",
                          range.guest_address, range.size));
    }
    previous_end = range.guest_address + range.size;
    void* host = mmap(nullptr, range.size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED) {
      int saved = errno;
      unmap_all();
      return absl::ErrnoToStatus(
          saved, absl::StrCat("mapping ", range.size >> 20, " MiB of guest memory"));
    }
    regions.push_back({range.guest_address, range.size, static_cast<uint8_t*>(host)});
  }
  return std::unique_ptr<GuestMemory>(new GuestMemory(std::move(regions)));
}

GuestMemory::~GuestMemory() {
  for (const Region& region : regions_) munmap(region.host, region.size);
}

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const Region& region : regions_) total += region.size;
  return total;
}

std::optional<std::span<uint8_t>> GuestMemory::HostSpan(uint64_t guest_address,
                                                        uint64_t length) const {
  for (const Region& region : regions_) {
    if (guest_address < region.guest_address) continue;
    uint64_t offset = guest_address - region.guest_address;
    if (offset >= region.size && !(offset == region.size && length == 0)) continue;
    if (length > region.size - offset) return std::nullopt;
    return std::span<uint8_t>(region.host + offset, length);
  }
  return std::nullopt;
}

absl::Status GuestMemory::Read(uint64_t guest_address, std::span<uint8_t> out) const {
  std::optional<std::span<uint8_t>> source = HostSpan(guest_address, out.size());
  if (!source) {
    return absl::OutOfRangeError(absl::StrFormat(
        "guest address range [%#x, +%#x) is outside guest RAM", guest_address, out.size()));
  }
  if (!out.empty()) std::memcpy(out.data(), source->data(), out.size());
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t guest_address, std::span<const uint8_t> data) const {
  std::optional<std::span<uint8_t>> target = HostSpan(guest_address, data.size());
  if (!target) {
    return absl::OutOfRangeError(absl::StrFormat(
        "guest address range [%#x, +%#x) is outside guest RAM", guest_address, data.size()));
  }
  if (!data.empty()) std::memcpy(target->data(), data.data(), data.size());
  return absl::OkStatus();
}

}  // namespace kvmini::hw

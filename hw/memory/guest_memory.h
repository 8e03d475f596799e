// GuestMemory: host mappings of the guest's physical RAM, and the only way
// any device touches guest memory. Every access is bounds-checked against the
// RAM regions, so a guest-supplied address can never reach host memory
// outside them. vmm/ allocates it and registers the regions with KVM; the
// device test harness builds the same object over plain anonymous memory.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvmini::hw {

class GuestMemory {
 public:
  struct Range {
    uint64_t guest_address;
    uint64_t size;
  };
  struct Region {
    uint64_t guest_address;
    uint64_t size;
    uint8_t* host;  // page-aligned anonymous mapping owned by GuestMemory
  };

  // Maps zeroed anonymous memory for each range. Ranges must be page
  // aligned, non-empty, sorted and non-overlapping.
  static absl::StatusOr<std::unique_ptr<GuestMemory>> Allocate(const std::vector<Range>& ranges);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  const std::vector<Region>& regions() const { return regions_; }
  uint64_t total_size() const;

  // The host bytes backing [guest_address, guest_address + length), if the
  // whole range lies inside one region (a buffer may not straddle a hole);
  // nullopt otherwise. Overflow-safe for any 64-bit inputs.
  std::optional<std::span<uint8_t>> HostSpan(uint64_t guest_address, uint64_t length) const;
  bool Contains(uint64_t guest_address, uint64_t length) const {
    return HostSpan(guest_address, length).has_value();
  }

  absl::Status Read(uint64_t guest_address, std::span<uint8_t> out) const;
  absl::Status Write(uint64_t guest_address, std::span<const uint8_t> data) const;

  template <typename T>
  absl::StatusOr<T> ReadObject(uint64_t guest_address) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    absl::Status status =
        Read(guest_address, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
    if (!status.ok()) return status;
    return value;
  }
  template <typename T>
  absl::Status WriteObject(uint64_t guest_address, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(guest_address,
                 std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&value), sizeof(T)));
  }

  // Naturally aligned 16/32-bit accesses with acquire/release ordering, for
  // ring indices shared with the guest's driver running on other CPUs.
  // Fail (nullopt / false) if the address is outside RAM or misaligned.
  template <typename T>
  std::optional<T> LoadAcquire(uint64_t guest_address) const {
    T* pointer = AlignedPointer<T>(guest_address);
    if (pointer == nullptr) return std::nullopt;
    return std::atomic_ref<T>(*pointer).load(std::memory_order_acquire);
  }
  template <typename T>
  bool StoreRelease(uint64_t guest_address, T value) const {
    T* pointer = AlignedPointer<T>(guest_address);
    if (pointer == nullptr) return false;
    std::atomic_ref<T>(*pointer).store(value, std::memory_order_release);
    return true;
  }

 private:
  explicit GuestMemory(std::vector<Region> regions) : regions_(std::move(regions)) {}
  template <typename T>
  T* AlignedPointer(uint64_t guest_address) const {
    static_assert(std::is_integral_v<T>);
    if (guest_address % sizeof(T) != 0) return nullptr;
    std::optional<std::span<uint8_t>> span = HostSpan(guest_address, sizeof(T));
    return span ? reinterpret_cast<T*>(span->data()) : nullptr;
  }

  std::vector<Region> regions_;
};

}  // namespace kvmini::hw

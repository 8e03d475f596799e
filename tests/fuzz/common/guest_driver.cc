#include "tests/fuzz/common/guest_driver.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "hw/virtio/virtio_constants.h"

namespace kvmini::fuzz {
namespace {
using hw::virtio::kDescriptorFlagIndirect;
using hw::virtio::kDescriptorFlagNext;
using hw::virtio::kDescriptorFlagWrite;

hw::GuestMemory* AllocateMemory() {
  auto memory = hw::GuestMemory::Allocate(
      {{0, layout::kLowRamSize}, {layout::kHighRegion, layout::kHighRegionSize}});
  if (!memory.ok()) std::abort();
  return memory->release();
}

bool Overlaps(uint64_t a, uint64_t a_length, uint64_t b, uint64_t b_length) {
  return a < b + b_length && b < a + a_length;
}
}  // namespace

const hw::GuestMemory& FuzzGuestMemory() {
  static hw::GuestMemory* memory = AllocateMemory();
  return *memory;
}

void ClearFuzzGuestMemory() {
  for (const hw::GuestMemory::Region& region : FuzzGuestMemory().regions()) {
    std::memset(region.host, 0, region.size);
  }
}

RingAddresses GuestDriver::StandardRing(uint16_t index, uint32_t size) {
  uint64_t base =
      layout::kRingArea + static_cast<uint64_t>(index % layout::kMaxRings) * layout::kRingStride;
  return {size, base, base + 0x1000, base + 0x1400};
}

void GuestDriver::Clear() {
  rings_.clear();
  data_cursor_ = layout::kDataArea;
}

void GuestDriver::AddRing(const RingAddresses& ring) { rings_.push_back({ring}); }

GuestDriver::Ring* GuestDriver::PickRing(FuzzInput& input) {
  uint8_t choice = input.U8();
  if (rings_.empty()) return nullptr;
  return &rings_[choice % rings_.size()];
}

uint64_t GuestDriver::AllocateData(uint32_t length) {
  if (data_cursor_ + length > layout::kLowRamSize) data_cursor_ = layout::kDataArea;
  uint64_t address = data_cursor_;
  // Keep buffers 8-byte aligned like a driver's allocations.
  data_cursor_ += (uint64_t{length} + 7) & ~uint64_t{7};
  return address;
}

void GuestDriver::WriteDescriptorAt(uint64_t address, uint64_t buffer, uint32_t length,
                                    uint16_t flags, uint16_t next) {
  Store<hw::virtio::Descriptor>(address, {buffer, length, flags, next});
}

void GuestDriver::MakeAvailable(Ring& ring, uint16_t head) {
  uint32_t size = std::max<uint32_t>(ring.addresses.size, 1);
  Store<uint16_t>(ring.addresses.avail_ring + 4 + 2 * uint64_t{ring.avail_index % size}, head);
  ++ring.avail_index;
  memory_.StoreRelease<uint16_t>(ring.addresses.avail_ring + 2, ring.avail_index);
}

void GuestDriver::PostChain(Ring& ring, FuzzInput& input) {
  const uint32_t count = input.U8() % 8 + 1;
  const bool indirect = input.Bool();
  const uint32_t size = std::max<uint32_t>(ring.addresses.size, 1);
  struct Buffer {
    uint64_t address;
    uint32_t length;
    bool writable;
  };
  std::vector<Buffer> buffers;
  for (uint32_t i = 0; i < count; ++i) {
    uint16_t length = input.U16();
    bool writable = input.Bool();
    uint64_t address = AllocateData(length);
    if (!writable) {
      std::span<const uint8_t> bytes = input.Bytes(length);
      memory_.Write(address, bytes).IgnoreError();
    }
    buffers.push_back({address, length, writable});
  }

  const uint16_t head = static_cast<uint16_t>(ring.next_descriptor % size);
  if (indirect) {
    uint64_t slot_base =
        layout::kIndirectArea + (&ring - rings_.data()) % layout::kMaxRings * layout::kIndirectSlot;
    uint64_t table = slot_base + (ring.next_indirect++ % (layout::kIndirectSlot / 128)) * 128;
    for (uint32_t i = 0; i < count; ++i) {
      uint16_t flags = (buffers[i].writable ? kDescriptorFlagWrite : 0) |
                       (i + 1 < count ? kDescriptorFlagNext : 0);
      WriteDescriptorAt(table + 16 * i, buffers[i].address, buffers[i].length, flags,
                        static_cast<uint16_t>(i + 1));
    }
    WriteDescriptorAt(ring.addresses.descriptor_table + 16 * uint64_t{head}, table, 16 * count,
                      kDescriptorFlagIndirect, 0);
    ring.next_descriptor = (ring.next_descriptor + 1) % size;
  } else {
    for (uint32_t i = 0; i < count; ++i) {
      uint16_t index = static_cast<uint16_t>(ring.next_descriptor % size);
      uint16_t next = static_cast<uint16_t>((index + 1) % size);
      uint16_t flags = (buffers[i].writable ? kDescriptorFlagWrite : 0) |
                       (i + 1 < count ? kDescriptorFlagNext : 0);
      WriteDescriptorAt(ring.addresses.descriptor_table + 16 * uint64_t{index}, buffers[i].address,
                        buffers[i].length, flags, next);
      ring.next_descriptor = next;
    }
  }
  MakeAvailable(ring, head);
}

void GuestDriver::RunRingOp(uint8_t op, FuzzInput& input) {
  switch (op) {
    case 0:
      if (Ring* ring = PickRing(input)) PostChain(*ring, input);
      return;
    case 1: {
      Ring* ring = PickRing(input);
      uint16_t index = input.U16();
      uint8_t where = input.U8();
      uint64_t buffer;
      switch (where % 3) {
        case 0:
          buffer = layout::kDataArea + input.U16();
          break;
        case 1:
          buffer =
              layout::kIndirectArea + input.U16() % (layout::kMaxRings * layout::kIndirectSlot);
          break;
        default:
          buffer = input.U64();
          break;
      }
      uint32_t length = input.U32();
      uint16_t flags = input.U16();
      uint16_t next = input.U16();
      if (ring == nullptr) return;
      uint32_t size = std::max<uint32_t>(ring->addresses.size, 1);
      WriteDescriptorAt(ring->addresses.descriptor_table + 16 * uint64_t{index % size}, buffer,
                        length, flags, next);
      return;
    }
    case 2: {
      Ring* ring = PickRing(input);
      uint16_t head = input.U16();
      if (ring != nullptr) MakeAvailable(*ring, head);
      return;
    }
    case 3: {
      Ring* ring = PickRing(input);
      uint16_t value = input.U16();
      if (ring == nullptr) return;
      ring->avail_index = value;
      memory_.StoreRelease<uint16_t>(ring->addresses.avail_ring + 2, value);
      return;
    }
    case 4: {
      uint64_t address = input.U32() % (layout::kHighRegion + layout::kHighRegionSize + 0x100);
      std::span<const uint8_t> bytes = input.Bytes(input.U8());
      if (protect_used_rings_) {
        for (const Ring& ring : rings_) {
          uint64_t used_bytes = 6 + 8 * uint64_t{ring.addresses.size};
          if (Overlaps(address, bytes.size(), ring.addresses.used_ring, used_bytes)) return;
        }
      }
      memory_.Write(address, bytes).IgnoreError();
      return;
    }
    default: {
      Ring* ring = PickRing(input);
      uint16_t flags = input.U16();
      uint16_t used_event = input.U16();
      if (ring == nullptr) return;
      Store<uint16_t>(ring->addresses.avail_ring, flags);
      Store<uint16_t>(ring->addresses.avail_ring + 4 + 2 * uint64_t{ring->addresses.size},
                      used_event);
      return;
    }
  }
}

}  // namespace kvmini::fuzz

// GuestDriver: the guest side of the virtio fuzz targets. It keeps split
// virtqueues in a small guest RAM the way a driver does (descriptor
// chains, direct or indirect, made available in the avail ring) and also
// lets the input write anything anywhere (raw descriptors, heads, indices,
// bytes), so one input language reaches both the device's normal paths
// and its checks. The transport-level part (registers, kicks) is in
// DeviceFixture; the virtqueue target drives a Virtqueue directly.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "hw/memory/guest_memory.h"
#include "tests/fuzz/common/fuzz_input.h"

namespace kvmini::fuzz {

// Guest RAM of every virtio target: 128 KiB from 0, a hole, one more page
// (so buffers can lie in the hole or straddle it).
namespace layout {
inline constexpr uint64_t kLowRamSize = 0x20000;
inline constexpr uint64_t kHighRegion = 0x30000;
inline constexpr uint64_t kHighRegionSize = 0x1000;
// Queue q's rings: descriptors at kRingArea + q * kRingStride, the avail
// ring 0x1000 after them and the used ring 0x1400 after them (room for 256
// entries each).
inline constexpr uint64_t kRingArea = 0x1000;
inline constexpr uint64_t kRingStride = 0x2000;
inline constexpr uint16_t kMaxRings = 4;
inline constexpr uint32_t kMaxRingSize = 256;
// Indirect tables: kIndirectSlot bytes per ring.
inline constexpr uint64_t kIndirectArea = 0x9000;
inline constexpr uint64_t kIndirectSlot = 0x800;
// Buffers, handed out round-robin up to the end of low RAM.
inline constexpr uint64_t kDataArea = 0xB000;
}  // namespace layout

// Zeroed guest RAM in the layout above, allocated once per process.
const hw::GuestMemory& FuzzGuestMemory();
// Zeroes it again (between inputs).
void ClearFuzzGuestMemory();

struct RingAddresses {
  uint32_t size;
  uint64_t descriptor_table;
  uint64_t avail_ring;
  uint64_t used_ring;
};

class GuestDriver {
 public:
  // Operations RunRingOp understands: opcodes 0 .. kRingOps - 1.
  static constexpr uint8_t kRingOps = 6;

  explicit GuestDriver(const hw::GuestMemory& memory) : memory_(memory) {}

  // Where queue `index` lives in the standard layout.
  static RingAddresses StandardRing(uint16_t index, uint32_t size);

  // Forgets all rings (a device reset).
  void Clear();
  void AddRing(const RingAddresses& ring);
  size_t ring_count() const { return rings_.size(); }
  const RingAddresses& ring(size_t index) const { return rings_[index].addresses; }

  // Runs ring operation `op` (< kRingOps), reading its operands from `input`:
  //  0 post a chain of 1-8 buffers (direct or indirect), readable ones
  //    filled from the input, and make it available;
  //  1 write one raw descriptor; 2 make a raw head available;
  //  3 set the avail index; 4 write raw bytes anywhere in RAM;
  //  5 set avail flags and used_event (notification suppression).
  void RunRingOp(uint8_t op, FuzzInput& input);

  // Raw byte writes (op 4) then skip the used rings, for a target that
  // checks what the device wrote there.
  void set_protect_used_rings(bool protect) { protect_used_rings_ = protect; }

 private:
  struct Ring {
    RingAddresses addresses;
    uint16_t avail_index = 0;
    uint32_t next_descriptor = 0;
    uint32_t next_indirect = 0;
  };

  Ring* PickRing(FuzzInput& input);
  void PostChain(Ring& ring, FuzzInput& input);
  void MakeAvailable(Ring& ring, uint16_t head);
  void WriteDescriptorAt(uint64_t address, uint64_t buffer, uint32_t length, uint16_t flags,
                         uint16_t next);
  uint64_t AllocateData(uint32_t length);
  template <typename T>
  void Store(uint64_t address, T value) {
    memory_.WriteObject(address, value).IgnoreError();  // outside RAM: a hostile layout
  }

  const hw::GuestMemory& memory_;
  std::vector<Ring> rings_;
  uint64_t data_cursor_ = layout::kDataArea;
  bool protect_used_rings_ = false;
};

}  // namespace kvmini::fuzz

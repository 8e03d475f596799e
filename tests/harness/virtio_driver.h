// The guest side of a virtio-mmio device, for tests and benchmarks that run
// devices in a plain host process (no KVM): a VirtioDriver talks to the
// device through its BusDevice register window exactly as a guest driver
// would, and a DriverQueue lays out and fills a split virtqueue in a
// GuestMemory. Kicks go through the notify eventfd (what KVM's ioeventfd
// does) or the QueueNotify register; interrupts are read from the device's
// interrupt eventfd (what KVM's irqfd consumes).
//
// A driver may run in the main loop thread (it then polls the main loop
// while it waits, so devices served by the main loop make progress) or in
// its own thread, like a vCPU.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hw/bus_device.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/virtio_constants.h"

namespace kvmini::test {

// Hands out guest-physical ranges of one RAM region, never reused.
class GuestAllocator {
 public:
  GuestAllocator(uint64_t base, uint64_t end) : next_(base), end_(end) {}
  // Aborts the test process when RAM runs out (a harness sizing bug).
  uint64_t Allocate(uint64_t size, uint64_t alignment = 16);

 private:
  uint64_t next_;
  uint64_t end_;
};

class DriverQueue {
 public:
  struct Buffer {
    uint64_t guest_address;
    uint32_t length;
    bool writable;
  };
  // Entries of each head's indirect table.
  static constexpr uint32_t kMaxIndirectEntries = 64;

  DriverQueue(const hw::GuestMemory& memory, GuestAllocator& allocator, uint16_t index,
              uint16_t size);

  uint16_t index() const { return index_; }
  uint16_t size() const { return size_; }
  uint64_t descriptor_table() const { return descriptor_table_; }
  uint64_t avail_ring() const { return avail_ring_; }
  uint64_t used_ring() const { return used_ring_; }
  uint16_t free_descriptors() const { return static_cast<uint16_t>(free_.size()); }

  // Chains `buffers` through free descriptors (or one descriptor pointing to
  // an indirect table) and makes the chain available. Returns the head, or
  // nullopt if the ring has too few free descriptors.
  std::optional<uint16_t> Post(std::span<const Buffer> buffers, bool indirect);
  // Returns used chains' descriptors to the free list and the elements, and
  // asks for an interrupt at the next used buffer (used_event).
  std::vector<hw::virtio::UsedElement> TakeUsed();
  uint16_t used_index() const;

  // Raw access, for hand-made (malformed) chains. Descriptors written this
  // way are not tracked; do not mix with Post on the same entries.
  void WriteDescriptor(uint16_t index, const hw::virtio::Descriptor& descriptor);
  void WriteDescriptorAt(uint64_t guest_address, const hw::virtio::Descriptor& descriptor);
  // Puts `head` in the next avail slot and publishes the new index.
  void PublishHead(uint16_t head);
  void SetAvailIndex(uint16_t value);
  uint16_t avail_index() const { return avail_index_; }
  // Marks `count` descriptors, from `first`, as used by hand-made chains.
  void Reserve(uint16_t first, uint16_t count);

  // Notification suppression.
  void SetUsedEvent(uint16_t value);       // EVENT_IDX: interrupt me at this used index
  void SetNoInterrupt(bool no_interrupt);  // without EVENT_IDX
  uint16_t avail_event() const;            // EVENT_IDX: the device wants a kick at this index
  // Whether a kick is needed after publishing from `old_index` to the current
  // avail index (EVENT_IDX rule when `event_idx`).
  bool KickNeeded(uint16_t old_index, bool event_idx) const;

 private:
  const hw::GuestMemory& memory_;
  const uint16_t index_;
  const uint16_t size_;
  uint64_t descriptor_table_;
  uint64_t avail_ring_;
  uint64_t used_ring_;
  uint64_t indirect_tables_;  // size_ tables of kMaxIndirectEntries, one per head
  std::vector<uint16_t> free_;
  std::vector<uint16_t> chain_length_;  // per head, descriptors taken from the ring
  uint16_t avail_index_ = 0;
  uint16_t last_used_index_ = 0;
};

class VirtioDriver {
 public:
  enum class KickVia { kEventfd, kRegister };

  VirtioDriver(hw::BusDevice& device, const hw::GuestMemory& memory, GuestAllocator& allocator,
               int interrupt_fd, std::vector<int> notify_fds);

  uint32_t Read32(uint64_t offset);
  void Write32(uint64_t offset, uint32_t value);
  uint8_t status() { return static_cast<uint8_t>(Read32(hw::virtio::mmio::kStatus)); }
  uint64_t device_features();

  // Reset, ACKNOWLEDGE, DRIVER, accept `wanted` & offered, FEATURES_OK and
  // check that the device kept it.
  absl::Status Negotiate(uint64_t wanted);
  // Negotiates with exactly `features` written, without checks.
  void WriteDriverFeatures(uint64_t features);
  uint64_t negotiated() const { return negotiated_; }
  // Lays out queue `index` in guest RAM and programs it (QueueReady = 1).
  absl::StatusOr<DriverQueue*> SetupQueue(uint16_t index, uint16_t size);
  void DriverOk();
  void Reset();
  DriverQueue& queue(uint16_t index) { return *queues_.at(index); }

  void Kick(uint16_t queue_index, KickVia via = KickVia::kEventfd);
  // Consumes one interrupt (the eventfd's count), waiting up to `timeout`.
  bool WaitForInterrupt(absl::Duration timeout);
  // Whether an interrupt is pending; consumes it.
  bool TakeInterrupt();
  // Reads InterruptStatus and acknowledges those bits; returns them.
  uint32_t AckInterrupt();
  // Waits (interrupts, or the main loop's progress) until `done()`.
  bool WaitUntil(absl::FunctionRef<bool()> done, absl::Duration timeout);

 private:
  hw::BusDevice& device_;
  const hw::GuestMemory& memory_;
  GuestAllocator& allocator_;
  const int interrupt_fd_;
  const std::vector<int> notify_fds_;
  uint64_t negotiated_ = 0;
  std::vector<std::unique_ptr<DriverQueue>> queues_;
};

}  // namespace kvmini::test

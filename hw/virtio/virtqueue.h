// Virtqueue: the device side of one split virtqueue, shared by every virtio
// device. It reads descriptor chains the guest driver made available,
// validating everything the guest controls, and returns used buffers with
// the memory ordering and notification suppression (EVENT_IDX) the driver
// relies on.
//
// Threading: a configured queue is owned by one AioContext at a time (the
// one its device's dataplane is attached to); Pop, Push* and Publish run in
// that context's thread only. Configure/Disable run in the main loop while
// the queue is attached nowhere. in_flight() and broken() may be read from
// any thread.
//
// What the guest gets wrong, and what happens:
//  - ring-level faults (avail index jumping more than the queue size, a head
//    index out of range) and chain-structure faults (a next index out of
//    range, a loop or over-long chain, an indirect table that is empty, not a
//    multiple of 16 bytes, outside RAM, nested, or combined with NEXT): the
//    queue is broken: Break() logs, calls the broken handler (the transport
//    sets DEVICE_NEEDS_RESET and raises a config interrupt) and the queue
//    stops until the device is reset;
//  - buffer faults in a chain that could be walked (a buffer outside RAM or
//    straddling a hole, a readable buffer after a writable one, a total length
//    over 4 GiB): Pop still returns the chain, with `defect` saying what is
//    wrong, so the device can fail just that request with its error status.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <optional>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/virtio_constants.h"

namespace kvmini::hw::virtio {

struct DescriptorBuffer {
  uint64_t guest_address;
  uint32_t length;
  bool writable;
  uint8_t* host;  // null if the buffer is not entirely inside guest RAM
};

struct DescriptorChain {
  uint16_t head = 0;
  std::vector<DescriptorBuffer> buffers;
  // Empty when the chain is sound; otherwise why the request must fail.
  std::string defect;

  // Bytes in the readable (writable == false) or writable buffers.
  uint64_t TotalLength(bool writable) const;
  // Host ranges of the buffers of one direction, leaving out the first
  // `skip` and the last `trim` bytes of that direction. Requires no defect.
  std::vector<iovec> Iovecs(bool writable, uint64_t skip, uint64_t trim) const;
  // Copies readable bytes starting at `offset` into `out`; returns how many.
  size_t CopyFromReadable(uint64_t offset, std::span<uint8_t> out) const;
  // Copies `data` into the writable bytes starting at `offset`; returns how many.
  size_t CopyToWritable(uint64_t offset, std::span<const uint8_t> data) const;
  // The last writable byte (virtio-blk's status), or null if the last
  // buffer is not writable, empty or outside RAM.
  uint8_t* LastWritableByte() const;
};

struct VirtqueueConfig {
  uint32_t size = 0;
  uint64_t descriptor_table = 0;
  uint64_t avail_ring = 0;  // "driver area"
  uint64_t used_ring = 0;   // "device area"
};

class Virtqueue {
 public:
  enum class PopResult { kEmpty, kChain, kBroken };

  Virtqueue(const GuestMemory& memory, uint16_t index, std::string device_name);
  Virtqueue(const Virtqueue&) = delete;
  Virtqueue& operator=(const Virtqueue&) = delete;

  // Called (in the owning thread) when the queue breaks.
  void SetBrokenHandler(absl::AnyInvocable<void(std::string_view reason)> handler) {
    on_broken_ = std::move(handler);
  }
  // Called (in the owning thread) when published buffers need an interrupt.
  void SetUsedNotifier(absl::AnyInvocable<void()> notifier) { notify_used_ = std::move(notifier); }

  // Main loop, attached nowhere. Validates the rings (power-of-two size,
  // alignment, inside guest RAM); a bad ring breaks the queue (the error is
  // also returned). Resets the ring indices.
  absl::Status Configure(const VirtqueueConfig& config, bool event_idx, bool indirect_desc);
  // Main loop, attached nowhere, nothing in flight: forgets the rings.
  void Disable();

  uint16_t index() const { return index_; }
  uint32_t size() const { return size_; }
  bool configured() const { return size_ != 0; }
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  // Chains popped and not yet published as used (or dropped). Any thread.
  uint32_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  // The driver's available index: one acquire load, no system call (what
  // the event loop polls before it sleeps). Empty for an unconfigured or
  // broken queue.
  std::optional<uint16_t> DriverAvailableIndex() const;

  // Takes the next available chain into `chain` (its storage is reused).
  PopResult Pop(DescriptorChain& chain);
  // With EVENT_IDX: asks the driver to kick once it adds past what was
  // popped, then re-checks. Returns true if the ring is (still) empty, so
  // the caller can stop; false if more arrived meanwhile.
  bool ArmKickAndCheckEmpty();

  // The usual processing pass of a device: hands every available chain to
  // `handle` (which pushes or answers it later), re-arms the driver's kick
  // (EVENT_IDX) and re-checks so nothing that raced in is left behind, then
  // publishes. `chain` is scratch storage reused across calls.
  void ServeAvailable(DescriptorChain& chain,
                      absl::FunctionRef<void(const DescriptorChain&)> handle);

  // Returns a chain to the driver with `written` bytes written into it;
  // takes effect for the driver at the next Publish().
  void Push(uint16_t head, uint32_t written);
  // Makes pushed elements visible (used index store with release order)
  // and raises the used-buffer notifier if the driver asked for it.
  void Publish();
  // For completions arriving outside a queue-processing pass: pushes and
  // schedules one Publish in the calling thread's AioContext for the batch.
  void PushAndPublishSoon(uint16_t head, uint32_t written);
  // A popped chain the device will never push (the queue broke because of it).
  void DropPopped();

  // Stops the queue: logs `reason` (rate-limited), calls the broken handler.
  void Break(std::string_view reason);

 private:
  bool WalkChain(uint16_t head, DescriptorChain& chain);

  const GuestMemory& memory_;
  const uint16_t index_;
  const std::string device_name_;
  absl::AnyInvocable<void(std::string_view)> on_broken_;
  absl::AnyInvocable<void()> notify_used_;

  // Set by Configure, constant while attached.
  uint32_t size_ = 0;
  uint64_t descriptor_table_ = 0;
  uint64_t avail_ring_ = 0;
  uint64_t used_ring_ = 0;
  bool event_idx_ = false;
  bool indirect_desc_ = false;

  // Owning thread only.
  uint16_t last_avail_index_ = 0;
  uint16_t cached_avail_index_ = 0;
  uint16_t used_index_ = 0;            // next used slot (not yet published)
  uint16_t published_used_index_ = 0;  // what the driver can see
  uint32_t pushed_unpublished_ = 0;

  std::atomic<bool> broken_{false};
  std::atomic<uint32_t> in_flight_{0};
  std::atomic<bool> publish_scheduled_{false};
};

}  // namespace kvmini::hw::virtio

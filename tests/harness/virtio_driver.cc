#include "tests/harness/virtio_driver.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "util/aio_context.h"
#include "util/check.h"
#include "util/event_notifier.h"

namespace kvmini::test {

using hw::virtio::Descriptor;
using hw::virtio::UsedElement;
namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;

uint64_t GuestAllocator::Allocate(uint64_t size, uint64_t alignment) {
  uint64_t start = (next_ + alignment - 1) / alignment * alignment;
  KVMINI_CHECK(start <= end_ && size <= end_ - start, "test guest RAM exhausted");
  next_ = start + size;
  return start;
}

DriverQueue::DriverQueue(const hw::GuestMemory& memory, GuestAllocator& allocator,
                         uint16_t index, uint16_t size)
    : memory_(memory), index_(index), size_(size), chain_length_(size) {
  descriptor_table_ = allocator.Allocate(16ull * size, 4096);
  avail_ring_ = allocator.Allocate(6 + 2ull * size, 4096);
  used_ring_ = allocator.Allocate(6 + 8ull * size, 4096);
  indirect_tables_ = allocator.Allocate(16ull * kMaxIndirectEntries * size, 4096);
  for (int i = size - 1; i >= 0; --i) free_.push_back(static_cast<uint16_t>(i));
}

void DriverQueue::WriteDescriptorAt(uint64_t guest_address, const Descriptor& descriptor) {
  KVMINI_CHECK(memory_.WriteObject(guest_address, descriptor).ok(),
               "test descriptor outside guest RAM");
}

void DriverQueue::WriteDescriptor(uint16_t index, const Descriptor& descriptor) {
  WriteDescriptorAt(descriptor_table_ + 16ull * index, descriptor);
}

void DriverQueue::PublishHead(uint16_t head) {
  memory_.StoreRelease<uint16_t>(avail_ring_ + 4 + 2ull * (avail_index_ % size_), head);
  ++avail_index_;
  memory_.StoreRelease<uint16_t>(avail_ring_ + 2, avail_index_);
}

void DriverQueue::SetAvailIndex(uint16_t value) {
  avail_index_ = value;
  memory_.StoreRelease<uint16_t>(avail_ring_ + 2, avail_index_);
}

void DriverQueue::Reserve(uint16_t first, uint16_t count) {
  std::erase_if(free_, [&](uint16_t index) { return index >= first && index - first < count; });
}

std::optional<uint16_t> DriverQueue::Post(std::span<const Buffer> buffers, bool indirect) {
  const size_t count = buffers.size();
  if (count == 0) return std::nullopt;
  auto flags_of = [&](size_t i) -> uint16_t {
    return (buffers[i].writable ? hw::virtio::kDescriptorFlagWrite : 0) |
           (i + 1 < count ? hw::virtio::kDescriptorFlagNext : 0);
  };
  uint16_t head;
  if (indirect) {
    if (count > kMaxIndirectEntries || free_.empty()) return std::nullopt;
    head = free_.back();
    free_.pop_back();
    const uint64_t table = indirect_tables_ + 16ull * kMaxIndirectEntries * head;
    for (size_t i = 0; i < count; ++i) {
      WriteDescriptorAt(table + 16 * i, {buffers[i].guest_address, buffers[i].length,
                                         flags_of(i), static_cast<uint16_t>(i + 1)});
    }
    WriteDescriptor(head, {table, static_cast<uint32_t>(16 * count),
                           hw::virtio::kDescriptorFlagIndirect, 0});
    chain_length_[head] = 1;
  } else {
    if (free_.size() < count) return std::nullopt;
    std::vector<uint16_t> indices(free_.end() - count, free_.end());
    std::reverse(indices.begin(), indices.end());
    free_.resize(free_.size() - count);
    head = indices[0];
    for (size_t i = 0; i < count; ++i) {
      uint16_t next = i + 1 < count ? indices[i + 1] : 0;
      WriteDescriptor(indices[i],
                      {buffers[i].guest_address, buffers[i].length, flags_of(i), next});
    }
    chain_length_[head] = static_cast<uint16_t>(count);
  }
  PublishHead(head);
  return head;
}

uint16_t DriverQueue::used_index() const {
  return *memory_.LoadAcquire<uint16_t>(used_ring_ + 2);
}

std::vector<UsedElement> DriverQueue::TakeUsed() {
  std::vector<UsedElement> result;
  const uint16_t published = used_index();
  while (last_used_index_ != published) {
    UsedElement element =
        *memory_.ReadObject<UsedElement>(used_ring_ + 4 + 8ull * (last_used_index_ % size_));
    ++last_used_index_;
    result.push_back(element);
    if (element.id >= size_ || chain_length_[element.id] == 0) continue;  // hand-made chain
    // Walk our own descriptors (the device never writes them) to free them.
    uint16_t index = static_cast<uint16_t>(element.id);
    for (uint16_t n = chain_length_[index]; n > 0; --n) {
      Descriptor descriptor = *memory_.ReadObject<Descriptor>(descriptor_table_ + 16ull * index);
      free_.push_back(index);
      index = descriptor.next;
    }
    chain_length_[element.id] = 0;
  }
  // Like Linux with callbacks enabled: interrupt me at the next used buffer
  // (ignored by the device without EVENT_IDX).
  SetUsedEvent(last_used_index_);
  return result;
}

void DriverQueue::SetUsedEvent(uint16_t value) {
  memory_.StoreRelease<uint16_t>(avail_ring_ + 4 + 2ull * size_, value);
}

void DriverQueue::SetNoInterrupt(bool no_interrupt) {
  memory_.StoreRelease<uint16_t>(avail_ring_, no_interrupt ? hw::virtio::kAvailFlagNoInterrupt : 0);
}

uint16_t DriverQueue::avail_event() const {
  return *memory_.LoadAcquire<uint16_t>(used_ring_ + 4 + 8ull * size_);
}

bool DriverQueue::KickNeeded(uint16_t old_index, bool event_idx) const {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (event_idx) {
    uint16_t event = avail_event();
    return static_cast<uint16_t>(avail_index_ - event - 1) <
           static_cast<uint16_t>(avail_index_ - old_index);
  }
  return !(*memory_.LoadAcquire<uint16_t>(used_ring_) & 1);  // VIRTQ_USED_F_NO_NOTIFY
}

VirtioDriver::VirtioDriver(hw::BusDevice& device, const hw::GuestMemory& memory,
                           GuestAllocator& allocator, int interrupt_fd,
                           std::vector<int> notify_fds)
    : device_(device),
      memory_(memory),
      allocator_(allocator),
      interrupt_fd_(interrupt_fd),
      notify_fds_(std::move(notify_fds)),
      queues_(notify_fds_.size()) {}

uint32_t VirtioDriver::Read32(uint64_t offset) {
  uint32_t value = 0;
  device_.Read(offset, std::span(reinterpret_cast<uint8_t*>(&value), 4));
  return value;
}

void VirtioDriver::Write32(uint64_t offset, uint32_t value) {
  device_.Write(offset, std::span(reinterpret_cast<const uint8_t*>(&value), 4));
}

uint64_t VirtioDriver::device_features() {
  Write32(mmio::kDeviceFeaturesSel, 1);
  uint64_t high = Read32(mmio::kDeviceFeatures);
  Write32(mmio::kDeviceFeaturesSel, 0);
  return high << 32 | Read32(mmio::kDeviceFeatures);
}

void VirtioDriver::WriteDriverFeatures(uint64_t features) {
  Write32(mmio::kDriverFeaturesSel, 1);
  Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features >> 32));
  Write32(mmio::kDriverFeaturesSel, 0);
  Write32(mmio::kDriverFeatures, static_cast<uint32_t>(features));
}

absl::Status VirtioDriver::Negotiate(uint64_t wanted) {
  Reset();
  Write32(mmio::kStatus, status::kAcknowledge);
  Write32(mmio::kStatus, status::kAcknowledge | status::kDriver);
  const uint64_t features = wanted & device_features();
  WriteDriverFeatures(features);
  Write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  if (!(this->status() & status::kFeaturesOk)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("device refused features %#x", features));
  }
  negotiated_ = features;
  return absl::OkStatus();
}

absl::StatusOr<DriverQueue*> VirtioDriver::SetupQueue(uint16_t index, uint16_t size) {
  if (index >= queues_.size()) return absl::InvalidArgumentError("no such queue");
  Write32(mmio::kQueueSel, index);
  if (Read32(mmio::kQueueReady) != 0) return absl::FailedPreconditionError("queue already ready");
  const uint32_t max = Read32(mmio::kQueueNumMax);
  if (max == 0 || size > max) {
    return absl::InvalidArgumentError(absl::StrFormat("queue %u: size %u, max %u", index, size, max));
  }
  auto queue = std::make_unique<DriverQueue>(memory_, allocator_, index, size);
  Write32(mmio::kQueueNum, size);
  Write32(mmio::kQueueDescLow, static_cast<uint32_t>(queue->descriptor_table()));
  Write32(mmio::kQueueDescHigh, static_cast<uint32_t>(queue->descriptor_table() >> 32));
  Write32(mmio::kQueueDriverLow, static_cast<uint32_t>(queue->avail_ring()));
  Write32(mmio::kQueueDriverHigh, static_cast<uint32_t>(queue->avail_ring() >> 32));
  Write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(queue->used_ring()));
  Write32(mmio::kQueueDeviceHigh, static_cast<uint32_t>(queue->used_ring() >> 32));
  Write32(mmio::kQueueReady, 1);
  queues_[index] = std::move(queue);
  return queues_[index].get();
}

void VirtioDriver::DriverOk() {
  Write32(mmio::kStatus, status() | status::kDriverOk);
}

void VirtioDriver::Reset() {
  Write32(mmio::kStatus, 0);
  for (auto& queue : queues_) queue.reset();
  negotiated_ = 0;
}

void VirtioDriver::Kick(uint16_t queue_index, KickVia via) {
  if (via == KickVia::kRegister) {
    Write32(mmio::kQueueNotify, queue_index);
    return;
  }
  uint64_t one = 1;
  KVMINI_CHECK(write(notify_fds_.at(queue_index), &one, sizeof(one)) == sizeof(one),
               "writing a notify eventfd");
}

bool VirtioDriver::TakeInterrupt() {
  uint64_t count = 0;
  return read(interrupt_fd_, &count, sizeof(count)) == sizeof(count) && count != 0;
}

bool VirtioDriver::WaitForInterrupt(absl::Duration timeout) {
  if (TakeInterrupt()) return true;
  util::AioContext* main = util::AioContext::Main();
  if (main != nullptr && main->InHomeThread()) {
    // The device may be served by this very loop: keep it running.
    bool got = false;
    bool timed_out = false;
    KVMINI_CHECK(main->SetFdHandler(interrupt_fd_, [&] { got |= TakeInterrupt(); }).ok(),
                 "watching the interrupt eventfd");
    util::AioContext::TimerId timer =
        main->AddTimer(absl::Now() + timeout, [&timed_out] { timed_out = true; });
    while (!got && !timed_out) main->Poll(/*blocking=*/true);
    main->RemoveFdHandler(interrupt_fd_);
    main->CancelTimer(timer);
    return got;
  }
  pollfd entry{interrupt_fd_, POLLIN, 0};
  int milliseconds = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  if (poll(&entry, 1, std::max(milliseconds, 1)) <= 0) return false;
  return TakeInterrupt();
}

uint32_t VirtioDriver::AckInterrupt() {
  uint32_t pending = Read32(mmio::kInterruptStatus);
  if (pending != 0) Write32(mmio::kInterruptAck, pending);
  return pending;
}

bool VirtioDriver::WaitUntil(absl::FunctionRef<bool()> done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return done();
    WaitForInterrupt(std::min(left, absl::Milliseconds(10)));
  }
  return true;
}

}  // namespace kvmini::test

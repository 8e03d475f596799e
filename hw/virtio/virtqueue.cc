#include "hw/virtio/virtqueue.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "absl/strings/str_format.h"
#include "util/aio_context.h"
#include "util/aio_wait.h"
#include "util/check.h"
#include "util/log.h"

namespace kvmini::hw::virtio {
namespace {
// A guest can break its queues as often as it resets them: bound the log.
util::RateLimiter broken_log_limiter(10, absl::Seconds(10));

// Chains longer than this many bytes cannot be reported in a used element.
constexpr uint64_t kMaxChainBytes = 0xffffffffull;
// The largest indirect table whose every entry a 16-bit `next` can reach.
constexpr uint32_t kMaxIndirectEntries = 65536;

bool IsPowerOfTwo(uint32_t value) { return value != 0 && (value & (value - 1)) == 0; }
}  // namespace

uint64_t DescriptorChain::TotalLength(bool writable) const {
  uint64_t total = 0;
  for (const DescriptorBuffer& buffer : buffers) {
    if (buffer.writable == writable) total += buffer.length;
  }
  return total;
}

std::vector<iovec> DescriptorChain::Iovecs(bool writable, uint64_t skip, uint64_t trim) const {
  uint64_t total = TotalLength(writable);
  uint64_t end = total >= trim ? total - trim : 0;
  std::vector<iovec> result;
  uint64_t position = 0;  // offset of `buffer` within this direction's bytes
  for (const DescriptorBuffer& buffer : buffers) {
    if (buffer.writable != writable) continue;
    uint64_t begin = std::max(position, skip);
    uint64_t stop = std::min(position + buffer.length, end);
    if (begin < stop) {
      result.push_back({buffer.host + (begin - position), static_cast<size_t>(stop - begin)});
    }
    position += buffer.length;
  }
  return result;
}

size_t DescriptorChain::CopyFromReadable(uint64_t offset, std::span<uint8_t> out) const {
  size_t copied = 0;
  for (const iovec& range : Iovecs(/*writable=*/false, offset, 0)) {
    if (copied == out.size()) break;
    size_t n = std::min(range.iov_len, out.size() - copied);
    std::memcpy(out.data() + copied, range.iov_base, n);
    copied += n;
  }
  return copied;
}

size_t DescriptorChain::CopyToWritable(uint64_t offset, std::span<const uint8_t> data) const {
  size_t copied = 0;
  for (const iovec& range : Iovecs(/*writable=*/true, offset, 0)) {
    if (copied == data.size()) break;
    size_t n = std::min(range.iov_len, data.size() - copied);
    std::memcpy(range.iov_base, data.data() + copied, n);
    copied += n;
  }
  return copied;
}

uint8_t* DescriptorChain::LastWritableByte() const {
  if (buffers.empty()) return nullptr;
  const DescriptorBuffer& last = buffers.back();
  if (!last.writable || last.length == 0 || last.host == nullptr) return nullptr;
  return last.host + last.length - 1;
}

Virtqueue::Virtqueue(const GuestMemory& memory, uint16_t index, std::string device_name)
    : memory_(memory), index_(index), device_name_(std::move(device_name)) {}

absl::Status Virtqueue::Configure(const VirtqueueConfig& config, bool event_idx,
                                  bool indirect_desc) {
  KVMINI_CHECK(in_flight() == 0, "virtqueue reconfigured with requests in flight");
  size_ = 0;
  broken_.store(false, std::memory_order_release);
  last_avail_index_ = cached_avail_index_ = 0;
  used_index_ = published_used_index_ = 0;
  pushed_unpublished_ = 0;
  event_idx_ = event_idx;
  indirect_desc_ = indirect_desc;

  std::string problem;
  const uint64_t n = config.size;
  if (!IsPowerOfTwo(config.size) || config.size > kMaxQueueSize) {
    problem = absl::StrFormat("queue size %u is not a power of two up to %u", config.size,
                              kMaxQueueSize);
  } else if (config.descriptor_table % 16 != 0 ||
             !memory_.Contains(config.descriptor_table, kDescriptorSize * n)) {
    problem = absl::StrFormat("descriptor table at %#x (%u entries) is misaligned or outside RAM",
                              config.descriptor_table, config.size);
  } else if (config.avail_ring % 2 != 0 || !memory_.Contains(config.avail_ring, 6 + 2 * n)) {
    problem = absl::StrFormat("available ring at %#x is misaligned or outside RAM",
                              config.avail_ring);
  } else if (config.used_ring % 4 != 0 || !memory_.Contains(config.used_ring, 6 + 8 * n)) {
    problem = absl::StrFormat("used ring at %#x is misaligned or outside RAM", config.used_ring);
  }
  if (!problem.empty()) {
    Break(problem);
    return absl::InvalidArgumentError(
        absl::StrFormat("%s queue %u: %s", device_name_, index_, problem));
  }
  size_ = config.size;
  descriptor_table_ = config.descriptor_table;
  avail_ring_ = config.avail_ring;
  used_ring_ = config.used_ring;
  return absl::OkStatus();
}

void Virtqueue::Disable() {
  KVMINI_CHECK(in_flight() == 0, "virtqueue disabled with requests in flight");
  size_ = 0;
  broken_.store(false, std::memory_order_release);
}

void Virtqueue::Break(std::string_view reason) {
  if (broken_.exchange(true, std::memory_order_acq_rel)) return;
  if (broken_log_limiter.Allow()) {
    KVMINI_LOG(Warning) << device_name_ << " queue " << index_ << ": " << reason
                        << "; the queue stops until the driver resets the device";
  }
  if (on_broken_) on_broken_(reason);
}

std::optional<uint16_t> Virtqueue::DriverAvailableIndex() const {
  if (size_ == 0 || broken()) return std::nullopt;
  return memory_.LoadAcquire<uint16_t>(avail_ring_ + 2);
}

Virtqueue::PopResult Virtqueue::Pop(DescriptorChain& chain) {
  if (size_ == 0) return PopResult::kEmpty;
  if (broken()) return PopResult::kBroken;
  if (last_avail_index_ == cached_avail_index_) {
    // Acquire: the ring entries and descriptors the driver wrote before
    // publishing this index are visible after it.
    cached_avail_index_ = *memory_.LoadAcquire<uint16_t>(avail_ring_ + 2);
    uint16_t pending = cached_avail_index_ - last_avail_index_;
    if (pending > size_) {
      Break(absl::StrFormat("available index moved from %u to %u, more than the queue size %u",
                            last_avail_index_, cached_avail_index_, size_));
      return PopResult::kBroken;
    }
    if (pending == 0) return PopResult::kEmpty;
  }
  uint64_t slot = avail_ring_ + 4 + 2 * (last_avail_index_ % size_);
  uint16_t head = *memory_.LoadAcquire<uint16_t>(slot);
  ++last_avail_index_;
  if (head >= size_) {
    Break(absl::StrFormat("driver made descriptor %u available in a queue of size %u", head,
                          size_));
    return PopResult::kBroken;
  }
  if (!WalkChain(head, chain)) return PopResult::kBroken;
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  return PopResult::kChain;
}

bool Virtqueue::WalkChain(uint16_t head, DescriptorChain& chain) {
  chain.head = head;
  chain.buffers.clear();
  chain.defect.clear();
  uint64_t table = descriptor_table_;
  uint32_t table_size = size_;
  // Each table may be walked at most once per entry: that bounds the chain
  // and catches loops without remembering visited entries.
  uint32_t budget = size_;
  bool in_indirect = false;
  uint64_t total = 0;
  bool seen_writable = false;
  uint32_t index = head;
  while (true) {
    if (budget == 0) {
      Break(absl::StrFormat("descriptor chain from head %u is longer than its table of %u "
                            "(a loop?)",
                            head, table_size));
      return false;
    }
    --budget;
    absl::StatusOr<Descriptor> read = memory_.ReadObject<Descriptor>(table + 16 * index);
    if (!read.ok()) {
      Break(absl::StrFormat("descriptor %u of the chain from head %u is outside RAM", index,
                            head));
      return false;
    }
    const Descriptor descriptor = *read;
    if (descriptor.flags & kDescriptorFlagIndirect) {
      std::string problem;
      if (!indirect_desc_) {
        problem = "indirect descriptor used without VIRTIO_RING_F_INDIRECT_DESC";
      } else if (in_indirect) {
        problem = "indirect descriptor inside an indirect table";
      } else if (descriptor.flags & kDescriptorFlagNext) {
        problem = "indirect descriptor with the NEXT flag";
      } else if (descriptor.length == 0 || descriptor.length % kDescriptorSize != 0 ||
                 descriptor.length / kDescriptorSize > kMaxIndirectEntries) {
        problem = absl::StrFormat("indirect table length %u is not a positive multiple of 16",
                                  descriptor.length);
      } else if (descriptor.address % 8 != 0 ||
                 !memory_.Contains(descriptor.address, descriptor.length)) {
        problem = absl::StrFormat("indirect table at %#x (+%u) is misaligned or outside RAM",
                                  descriptor.address, descriptor.length);
      }
      if (!problem.empty()) {
        Break(absl::StrFormat("chain from head %u: %s", head, problem));
        return false;
      }
      table = descriptor.address;
      table_size = descriptor.length / kDescriptorSize;
      budget = table_size;
      in_indirect = true;
      index = 0;
      continue;
    }

    bool writable = descriptor.flags & kDescriptorFlagWrite;
    DescriptorBuffer buffer{descriptor.address, descriptor.length, writable, nullptr};
    if (std::optional<std::span<uint8_t>> host =
            memory_.HostSpan(descriptor.address, descriptor.length)) {
      buffer.host = host->data();
    } else if (chain.defect.empty()) {
      chain.defect = absl::StrFormat("buffer at %#x (+%u) is not inside guest RAM",
                                     descriptor.address, descriptor.length);
    }
    if (!writable && seen_writable && chain.defect.empty()) {
      chain.defect = "a device-readable buffer follows a device-writable one";
    }
    seen_writable |= writable;
    total += descriptor.length;
    if (total > kMaxChainBytes && chain.defect.empty()) {
      chain.defect = "the chain's buffers add up to more than 4 GiB";
    }
    chain.buffers.push_back(buffer);

    if (!(descriptor.flags & kDescriptorFlagNext)) return true;
    if (descriptor.next >= table_size) {
      Break(absl::StrFormat("chain from head %u: next index %u is outside its table of %u", head,
                            descriptor.next, table_size));
      return false;
    }
    index = descriptor.next;
  }
}

bool Virtqueue::ArmKickAndCheckEmpty() {
  if (size_ == 0 || broken()) return true;
  if (event_idx_) {
    // avail_event: kick me once you make entry `last_avail_index_` available.
    memory_.StoreRelease<uint16_t>(used_ring_ + 4 + 8 * uint64_t{size_}, last_avail_index_);
    // The store above must be visible before we read the index again, or a
    // driver that checked avail_event just before our store and skipped
    // its kick would leave a request behind.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  cached_avail_index_ = *memory_.LoadAcquire<uint16_t>(avail_ring_ + 2);
  return cached_avail_index_ == last_avail_index_;
}

void Virtqueue::ServeAvailable(DescriptorChain& chain,
                               absl::FunctionRef<void(const DescriptorChain&)> handle) {
  PopResult result;
  do {
    while ((result = Pop(chain)) == PopResult::kChain) handle(chain);
  } while (result == PopResult::kEmpty && !ArmKickAndCheckEmpty());
  Publish();
}

void Virtqueue::Push(uint16_t head, uint32_t written) {
  KVMINI_CHECK(size_ != 0, "push to an unconfigured virtqueue");
  uint64_t slot = used_ring_ + 4 + 8 * uint64_t{static_cast<uint16_t>(used_index_ % size_)};
  // Plain store: Publish() orders it before the index with release.
  memory_.WriteObject(slot, UsedElement{head, written}).IgnoreError();  // inside RAM: checked
  ++used_index_;
  ++pushed_unpublished_;
}

void Virtqueue::Publish() {
  if (pushed_unpublished_ == 0) return;
  const uint16_t old_index = published_used_index_;
  const uint16_t new_index = used_index_;
  memory_.StoreRelease<uint16_t>(used_ring_ + 2, new_index);
  published_used_index_ = new_index;
  uint32_t published = pushed_unpublished_;
  pushed_unpublished_ = 0;

  // The index store must be visible before we read the driver's
  // suppression state; otherwise both sides could decide "no interrupt".
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool notify;
  if (event_idx_) {
    uint16_t used_event = *memory_.LoadAcquire<uint16_t>(avail_ring_ + 4 + 2 * uint64_t{size_});
    notify = static_cast<uint16_t>(new_index - used_event - 1) <
             static_cast<uint16_t>(new_index - old_index);
  } else {
    notify = !(*memory_.LoadAcquire<uint16_t>(avail_ring_) & kAvailFlagNoInterrupt);
  }
  if (notify && notify_used_) notify_used_();
  in_flight_.fetch_sub(published, std::memory_order_acq_rel);
  util::AioWaitKick();
}

void Virtqueue::PushAndPublishSoon(uint16_t head, uint32_t written) {
  Push(head, written);
  if (publish_scheduled_.exchange(true, std::memory_order_acq_rel)) return;
  util::AioContext* context = util::AioContext::Current();
  KVMINI_CHECK(context != nullptr, "virtqueue completion outside an event loop thread");
  // The scheduled publish counts as in flight so that a drain waits for it.
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
  context->ScheduleOneshot([this] {
    publish_scheduled_.store(false, std::memory_order_release);
    Publish();
    in_flight_.fetch_sub(1, std::memory_order_acq_rel);
    util::AioWaitKick();
  });
}

void Virtqueue::DropPopped() {
  in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  util::AioWaitKick();
}

}  // namespace kvmini::hw::virtio

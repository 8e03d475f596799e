// Fuzzes the split-virtqueue chain walker (hw/virtio/virtqueue) the way a
// device drives it: random ring sizes and placements, descriptor tables
// written by a driver model and by raw writes (loops, bad next indices,
// nested or empty indirect tables, buffers in holes), then Pop, Push,
// Publish, ServeAvailable, EVENT_IDX re-arming and deferred publishing in
// any order. Checks what the devices rely on: a popped chain's buffers are
// exactly where the guest said and inside RAM, a chain without a defect is
// fully usable, a broken queue stays broken and reports once, used
// elements and the used index are what was pushed, in_flight() counts
// popped-but-unpublished chains, and an interrupt is raised whenever the
// driver did not suppress it.
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <vector>

#include "hw/virtio/virtqueue.h"
#include "tests/fuzz/common/fuzz_check.h"
#include "tests/fuzz/common/fuzz_input.h"
#include "tests/fuzz/common/fuzz_main_loop.h"
#include "tests/fuzz/common/guest_driver.h"

namespace {
using kvmini::fuzz::FuzzInput;
using kvmini::fuzz::GuestDriver;
using kvmini::hw::virtio::DescriptorChain;
using kvmini::hw::virtio::UsedElement;
using kvmini::hw::virtio::Virtqueue;
using kvmini::hw::virtio::VirtqueueConfig;

bool Overlaps(uint64_t a, uint64_t a_length, uint64_t b, uint64_t b_length) {
  return a < b + b_length && b < a + a_length;
}

class Harness {
 public:
  explicit Harness(const kvmini::hw::GuestMemory& memory)
      : memory_(memory), queue_(memory, 0, "fuzz-queue"), driver_(memory) {
    queue_.SetBrokenHandler([this](std::string_view) { ++broken_reports_; });
    queue_.SetUsedNotifier([this] { ++notifications_; });
    driver_.set_protect_used_rings(true);
  }

  void Configure(FuzzInput& input) {
    uint8_t size_choice = input.U8();
    uint8_t flags = input.U8();
    VirtqueueConfig config;
    config.size = size_choice & 0x80 ? input.U16() : 1u << (size_choice % 9);
    kvmini::fuzz::RingAddresses ring = GuestDriver::StandardRing(0, config.size);
    if (flags & 4) {
      // A hostile placement: anywhere in (or just past) RAM, maybe misaligned.
      ring.descriptor_table = input.U32() % 0x32000;
      ring.avail_ring = input.U32() % 0x32000;
      ring.used_ring = input.U32() % 0x32000;
    }
    config.descriptor_table = ring.descriptor_table;
    config.avail_ring = ring.avail_ring;
    config.used_ring = ring.used_ring;
    event_idx_ = flags & 1;
    bool configured = queue_.Configure(config, event_idx_, /*indirect_desc=*/flags & 2).ok();
    FUZZ_REQUIRE(configured == queue_.configured());
    FUZZ_REQUIRE(configured != queue_.broken());
    FUZZ_REQUIRE(broken_reports_ == (configured ? 0 : 1));
    if (!configured) return;
    ring.size = config.size;
    driver_.AddRing(ring);
    ring_ = ring;
    const uint64_t n = config.size;
    rings_disjoint_ = !Overlaps(ring.avail_ring, 6 + 2 * n, ring.used_ring, 6 + 8 * n) &&
                      !Overlaps(ring.descriptor_table, 16 * n, ring.used_ring, 6 + 8 * n) &&
                      !Overlaps(ring.descriptor_table, 16 * n, ring.avail_ring, 6 + 2 * n);
  }

  void Run(FuzzInput& input) {
    while (!input.done()) {
      uint8_t op = input.U8() % (GuestDriver::kRingOps + 7);
      if (op < GuestDriver::kRingOps) {
        driver_.RunRingOp(op, input);
        continue;
      }
      switch (op - GuestDriver::kRingOps) {
        case 0:
          Pop();
          break;
        case 1:
          PushOldest(input.U32());
          break;
        case 2:
          Publish();
          break;
        case 3:
          Serve();
          break;
        case 4:
          queue_.ArmKickAndCheckEmpty();
          break;
        case 5:
          PushAndPublishSoon(input.U32());
          break;
        default:
          // A device drops what it popped only when that chain broke the queue.
          if (queue_.broken() && !popped_.empty()) {
            popped_.pop_front();
            queue_.DropPopped();
          }
          break;
      }
      CheckCounts();
    }
    kvmini::fuzz::RunUntilIdle();
    CheckCounts();
  }

 private:
  void CheckChain(const DescriptorChain& chain) {
    FUZZ_REQUIRE(chain.head < ring_.size);
    bool seen_writable = false;
    bool order_defect = false;
    for (const auto& buffer : chain.buffers) {
      auto host = memory_.HostSpan(buffer.guest_address, buffer.length);
      if (buffer.host != nullptr) {
        FUZZ_REQUIRE(host.has_value() && host->data() == buffer.host);
      } else {
        FUZZ_REQUIRE(!chain.defect.empty());
      }
      if (!buffer.writable && seen_writable) order_defect = true;
      seen_writable |= buffer.writable;
    }
    if (order_defect) FUZZ_REQUIRE(!chain.defect.empty());
    if (!chain.defect.empty()) return;
    FUZZ_REQUIRE(chain.TotalLength(false) + chain.TotalLength(true) <= 0xffffffffull);
    // The accessors a device uses on a sound chain stay inside its buffers.
    uint8_t scratch[512];
    uint64_t readable = chain.TotalLength(false);
    uint64_t offset = readable / 2;
    size_t copied = chain.CopyFromReadable(offset, scratch);
    FUZZ_REQUIRE(copied == std::min<uint64_t>(sizeof(scratch), readable - offset));
    std::fill(std::begin(scratch), std::end(scratch), 0xA5);
    uint64_t writable = chain.TotalLength(true);
    copied = chain.CopyToWritable(writable / 3, scratch);
    FUZZ_REQUIRE(copied == std::min<uint64_t>(sizeof(scratch), writable - writable / 3));
    if (uint8_t* last = chain.LastWritableByte()) {
      FUZZ_REQUIRE(last == chain.buffers.back().host + chain.buffers.back().length - 1);
      *last = 0;
    }
  }

  void Pop() {
    bool was_broken = queue_.broken();
    Virtqueue::PopResult result = queue_.Pop(chain_);
    if (was_broken && queue_.configured()) FUZZ_REQUIRE(result == Virtqueue::PopResult::kBroken);
    if (result == Virtqueue::PopResult::kBroken) FUZZ_REQUIRE(queue_.broken());
    if (result != Virtqueue::PopResult::kChain) return;
    CheckChain(chain_);
    popped_.push_back(chain_.head);
  }

  void PushChecked(uint16_t head, uint32_t written) {
    uint64_t slot = ring_.used_ring + 4 + 8 * uint64_t{pushed_ % ring_.size};
    queue_.Push(head, written);
    ++pushed_;
    auto element = memory_.ReadObject<UsedElement>(slot);
    FUZZ_REQUIRE(element.ok() && element->id == head && element->length == written);
  }

  void PushOldest(uint32_t written) {
    if (popped_.empty()) return;
    PushChecked(popped_.front(), written);
    popped_.pop_front();
    ++unpublished_;
  }

  void Publish() {
    // Without EVENT_IDX the driver's NO_INTERRUPT flag alone decides.
    auto flags = memory_.LoadAcquire<uint16_t>(ring_.avail_ring);
    bool want = unpublished_ > 0 && !event_idx_ && rings_disjoint_ && flags && !(*flags & 1);
    uint64_t before = notifications_;
    queue_.Publish();
    if (unpublished_ > 0) {
      unpublished_ = 0;
      auto used_index = memory_.LoadAcquire<uint16_t>(ring_.used_ring + 2);
      FUZZ_REQUIRE(used_index && *used_index == static_cast<uint16_t>(pushed_));
    }
    if (want) FUZZ_REQUIRE(notifications_ == before + 1);
  }

  void Serve() {
    if (!ring_.size) return;
    queue_.ServeAvailable(chain_, [this](const DescriptorChain& chain) {
      CheckChain(chain);
      uint64_t writable = chain.defect.empty() ? chain.TotalLength(true) : 0;
      PushChecked(chain.head, static_cast<uint32_t>(std::min<uint64_t>(writable, 0xffffffff)));
      ++unpublished_;
    });
    // ServeAvailable ends with a Publish of everything pushed.
    if (unpublished_ > 0) {
      auto used_index = memory_.LoadAcquire<uint16_t>(ring_.used_ring + 2);
      FUZZ_REQUIRE(used_index && *used_index == static_cast<uint16_t>(pushed_));
    }
    unpublished_ = 0;
  }

  void PushAndPublishSoon(uint32_t written) {
    if (popped_.empty()) return;
    uint16_t head = popped_.front();
    popped_.pop_front();
    queue_.PushAndPublishSoon(head, written);
    ++pushed_;
    kvmini::fuzz::RunUntilIdle();
    unpublished_ = 0;
  }

  void CheckCounts() {
    FUZZ_REQUIRE(broken_reports_ <= 1);
    FUZZ_REQUIRE(queue_.broken() == (broken_reports_ == 1));
    FUZZ_REQUIRE(queue_.in_flight() == popped_.size() + unpublished_);
  }

  const kvmini::hw::GuestMemory& memory_;
  Virtqueue queue_;
  GuestDriver driver_;
  kvmini::fuzz::RingAddresses ring_{};
  DescriptorChain chain_;
  bool event_idx_ = false;
  // Rings that overlap change each other's fields as the device writes.
  bool rings_disjoint_ = false;
  std::deque<uint16_t> popped_;
  uint64_t pushed_ = 0;
  uint64_t unpublished_ = 0;
  uint64_t broken_reports_ = 0;
  uint64_t notifications_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvmini::fuzz::FuzzMainLoop();
  kvmini::fuzz::ClearFuzzGuestMemory();
  FuzzInput input(data, size);
  Harness harness(kvmini::fuzz::FuzzGuestMemory());
  harness.Configure(input);
  harness.Run(input);
  return 0;
}

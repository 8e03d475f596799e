// The split virtqueue on its own (no device): chain helpers, ring
// validation, 16-bit index wrap-around and the EVENT_IDX interrupt rule.
#include "hw/virtio/virtqueue.h"

#include <cstring>

#include "gtest/gtest.h"
#include "tests/harness/virtio_driver.h"
#include "util/aio_context.h"

namespace kvmini::hw::virtio {
namespace {

using test::DriverQueue;
using test::GuestAllocator;

constexpr uint64_t kRam = 16 << 20;

class VirtqueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = GuestMemory::Allocate({{0, kRam}});
    ASSERT_TRUE(memory.ok());
    memory_ = std::move(*memory);
    queue_ = std::make_unique<Virtqueue>(*memory_, 0, "test");
    queue_->SetBrokenHandler([this](std::string_view reason) { broken_reason_ = reason; });
    queue_->SetUsedNotifier([this] { ++interrupts_; });
  }

  // Configures the device side over a fresh driver-side ring.
  void Configure(uint16_t size, bool event_idx) {
    driver_ = std::make_unique<DriverQueue>(*memory_, allocator_, 0, size);
    ASSERT_TRUE(queue_
                    ->Configure({size, driver_->descriptor_table(), driver_->avail_ring(),
                                 driver_->used_ring()},
                                event_idx, /*indirect_desc=*/true)
                    .ok());
  }

  std::unique_ptr<GuestMemory> memory_;
  GuestAllocator allocator_{4096, kRam};
  std::unique_ptr<Virtqueue> queue_;
  std::unique_ptr<DriverQueue> driver_;
  std::string broken_reason_;
  int interrupts_ = 0;
};

TEST_F(VirtqueueTest, IovecsSkipAndTrimAcrossBuffers) {
  uint8_t bytes[64];
  DescriptorChain chain;
  chain.buffers = {{0, 10, false, bytes}, {0, 6, false, bytes + 10},
                   {0, 20, true, bytes + 16}, {0, 5, true, bytes + 36}, {0, 1, true, bytes + 41}};
  EXPECT_EQ(chain.TotalLength(false), 16u);
  EXPECT_EQ(chain.TotalLength(true), 26u);
  // Readable after a 12-byte skip: the last 4 bytes of the second buffer.
  auto readable = chain.Iovecs(false, 12, 0);
  ASSERT_EQ(readable.size(), 1u);
  EXPECT_EQ(readable[0].iov_base, bytes + 12);
  EXPECT_EQ(readable[0].iov_len, 4u);
  // Writable minus the last byte: 20 + 5 bytes in two ranges.
  auto writable = chain.Iovecs(true, 0, 1);
  ASSERT_EQ(writable.size(), 2u);
  EXPECT_EQ(writable[0].iov_len, 20u);
  EXPECT_EQ(writable[1].iov_base, bytes + 36);
  EXPECT_EQ(writable[1].iov_len, 5u);
  EXPECT_EQ(chain.LastWritableByte(), bytes + 41);

  std::memset(bytes, 0, sizeof(bytes));
  const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(chain.CopyToWritable(17, data), 8u);  // spans the 20- and 5-byte buffers
  EXPECT_EQ(bytes[16 + 17], 1);
  EXPECT_EQ(bytes[36], 4);
  EXPECT_EQ(bytes[40], 8);
  uint8_t out[4];
  EXPECT_EQ(chain.CopyFromReadable(8, out), 4u);
  EXPECT_EQ(chain.CopyFromReadable(14, out), 2u) << "only 2 readable bytes left";
}

TEST_F(VirtqueueTest, ConfigureRejectsRingsOutsideRamOrMisaligned) {
  EXPECT_FALSE(queue_->Configure({256, kRam - 16, 0x1000, 0x2000}, false, false).ok());
  EXPECT_TRUE(queue_->broken());
  EXPECT_NE(broken_reason_.find("descriptor table"), std::string::npos);
  EXPECT_FALSE(queue_->Configure({256, 0x1008, 0x3000, 0x4000}, false, false).ok());
  EXPECT_FALSE(queue_->Configure({256, 0x1000, 0x3001, 0x5000}, false, false).ok());
  EXPECT_FALSE(queue_->Configure({256, 0x1000, 0x3000, 0x5002}, false, false).ok());
  EXPECT_FALSE(queue_->Configure({100, 0x1000, 0x3000, 0x5000}, false, false).ok());
  EXPECT_FALSE(queue_->Configure({65536, 0x1000, 0x3000, 0x5000}, false, false).ok());
  EXPECT_TRUE(queue_->Configure({256, 0x10000, 0x20000, 0x30000}, false, false).ok());
  EXPECT_FALSE(queue_->broken()) << "a good configuration clears the broken state";
}

TEST_F(VirtqueueTest, IndicesWrapAroundSixteenBits) {
  Configure(8, /*event_idx=*/true);
  const uint64_t buffer = allocator_.Allocate(64);
  DescriptorChain chain;
  for (int i = 0; i < 70000; ++i) {
    DriverQueue::Buffer buffers[] = {{buffer, 16, false}, {buffer + 16, 1, true}};
    auto head = driver_->Post(buffers, /*indirect=*/i % 2 == 1);
    ASSERT_TRUE(head.has_value()) << i;
    ASSERT_EQ(queue_->Pop(chain), Virtqueue::PopResult::kChain) << i;
    ASSERT_EQ(chain.head, *head);
    ASSERT_EQ(chain.buffers.size(), 2u);
    EXPECT_EQ(queue_->Pop(chain), Virtqueue::PopResult::kEmpty);
    queue_->Push(chain.head, 1);
    queue_->Publish();
    auto used = driver_->TakeUsed();  // also sets used_event = next
    ASSERT_EQ(used.size(), 1u) << i;
    ASSERT_EQ(used[0].id, *head);
  }
  EXPECT_EQ(interrupts_, 70000) << "used_event re-armed every time: every publish interrupts";
  EXPECT_EQ(driver_->used_index(), static_cast<uint16_t>(70000));
  EXPECT_FALSE(queue_->broken()) << broken_reason_;
  EXPECT_EQ(queue_->in_flight(), 0u);
}

TEST_F(VirtqueueTest, EventIdxInterruptsOnlyWhenABatchCrossesUsedEvent) {
  Configure(16, /*event_idx=*/true);
  const uint64_t buffer = allocator_.Allocate(64);
  DescriptorChain chain;
  auto complete_batch = [&](int count) {
    for (int i = 0; i < count; ++i) {
      DriverQueue::Buffer buffers[] = {{buffer, 1, true}};
      ASSERT_TRUE(driver_->Post(buffers, false).has_value());
    }
    for (int i = 0; i < count; ++i) {
      ASSERT_EQ(queue_->Pop(chain), Virtqueue::PopResult::kChain);
      queue_->Push(chain.head, 1);
    }
    queue_->Publish();
  };
  driver_->SetUsedEvent(5);  // interrupt once used index passes 5
  complete_batch(3);         // 0 -> 3
  EXPECT_EQ(interrupts_, 0);
  complete_batch(3);  // 3 -> 6 crosses 5
  EXPECT_EQ(interrupts_, 1);
  complete_batch(2);  // 6 -> 8, used_event still 5: behind us, silent
  EXPECT_EQ(interrupts_, 1);
  // Publishing nothing never interrupts.
  queue_->Publish();
  EXPECT_EQ(interrupts_, 1);
}

TEST_F(VirtqueueTest, ArmKickPublishesTheNextAvailIndexAndSeesLateArrivals) {
  Configure(16, /*event_idx=*/true);
  const uint64_t buffer = allocator_.Allocate(64);
  DriverQueue::Buffer buffers[] = {{buffer, 1, true}};
  DescriptorChain chain;
  ASSERT_TRUE(driver_->Post(buffers, false).has_value());
  ASSERT_EQ(queue_->Pop(chain), Virtqueue::PopResult::kChain);
  EXPECT_TRUE(queue_->ArmKickAndCheckEmpty());
  EXPECT_EQ(driver_->avail_event(), 1);
  // Something arrives right after the device looked: the re-check sees it.
  ASSERT_TRUE(driver_->Post(buffers, false).has_value());
  EXPECT_FALSE(queue_->ArmKickAndCheckEmpty());
  ASSERT_EQ(queue_->Pop(chain), Virtqueue::PopResult::kChain);
}

}  // namespace
}  // namespace kvmini::hw::virtio

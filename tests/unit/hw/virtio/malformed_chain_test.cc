// Hostile and buggy descriptor chains, one table row each, against
// virtio-blk on the real backend. The documented outcomes (virtqueue.h):
//  - kIoError: the chain could be walked and has a status byte: that
//    request alone fails with IOERR and the queue goes on serving;
//  - kNeedsReset: the ring or the chain's structure is broken, or there is
//    no status byte to answer in: DEVICE_NEEDS_RESET and a config interrupt,
//    the queue stops, and after a driver reset the device works again.
// Never a crash, never an access outside guest RAM (ASan build checks).
#include <functional>

#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;
namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;
namespace feature = hw::virtio::feature;
using hw::virtio::Descriptor;

constexpr uint16_t kNext = hw::virtio::kDescriptorFlagNext;
constexpr uint16_t kWrite = hw::virtio::kDescriptorFlagWrite;
constexpr uint16_t kIndirect = hw::virtio::kDescriptorFlagIndirect;
constexpr uint16_t kQueueSize = 16;
constexpr uint64_t kRamBytes = 64 << 20;

enum class Outcome { kIoError, kNeedsReset };

// What a row's builder has at hand: valid buffers in guest RAM and raw
// access to queue 0 (every descriptor is the row's to write).
struct Chain {
  DriverQueue& queue;
  GuestAllocator& allocator;
  uint64_t header;  // a valid 16-byte IN header (sector 0)
  uint64_t data;    // 4 KiB, for data buffers
  uint64_t status;  // 1 byte
  uint64_t ram_end = kRamBytes;

  void Set(uint16_t index, uint64_t address, uint32_t length, uint16_t flags, uint16_t next = 0) {
    queue.WriteDescriptor(index, {address, length, flags, next});
  }
  uint64_t Table(std::initializer_list<Descriptor> entries) {
    uint64_t table = allocator.Allocate(16 * std::max<size_t>(entries.size(), 1), 16);
    uint64_t at = table;
    for (const Descriptor& entry : entries) {
      queue.WriteDescriptorAt(at, entry);
      at += 16;
    }
    return table;
  }
  void Publish(uint16_t head) { queue.PublishHead(head); }
};

struct MalformedCase {
  const char* name;
  Outcome outcome;
  std::function<void(Chain&)> build;
  uint64_t features = kLinuxFeatures;
};

const MalformedCase kCases[] = {
    {"HeadIndexOutOfRange", Outcome::kNeedsReset, [](Chain& c) { c.Publish(kQueueSize); }},
    {"AvailIndexJumpsPastQueueSize", Outcome::kNeedsReset,
     [](Chain& c) { c.queue.SetAvailIndex(kQueueSize + 1); }},
    {"NextIndexOutOfRange", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, kQueueSize);
       c.Publish(0);
     }},
    {"LoopInDirectChain", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.data, 512, kWrite | kNext, 0);
       c.Publish(0);
     }},
    {"DescriptorPointingAtItself", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(3, c.header, 16, kNext, 3);
       c.Publish(3);
     }},
    {"IndirectTableOfLengthZero", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.Table({}), 0, kIndirect);
       c.Publish(0);
     }},
    {"IndirectTableLengthNotMultipleOf16", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1}, {c.status, 1, kWrite, 0}, {}});
       c.Set(0, table, 40, kIndirect);
       c.Publish(0);
     }},
    {"IndirectTableOutsideRam", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.ram_end, 32, kIndirect);
       c.Publish(0);
     }},
    {"IndirectTableStraddlingTheEndOfRam", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.ram_end - 16, 32, kIndirect);
       c.Publish(0);
     }},
    {"NestedIndirectTable", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t inner = c.Table({{c.status, 1, kWrite, 0}});
       uint64_t outer = c.Table({{c.header, 16, kNext, 1}, {inner, 16, kIndirect, 0}});
       c.Set(0, outer, 32, kIndirect);
       c.Publish(0);
     }},
    {"IndirectTogetherWithNext", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1}, {c.data, 512, kWrite, 0}});
       c.Set(0, table, 32, kIndirect | kNext, 1);
       c.Set(1, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"IndirectNextOutOfRange", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1}, {c.data, 512, kWrite | kNext, 2},
                                 {c.status, 1, kWrite | kNext, 3}});
       c.Set(0, table, 48, kIndirect);
       c.Publish(0);
     }},
    {"LoopInsideIndirectTable", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1}, {c.data, 512, kWrite | kNext, 0}});
       c.Set(0, table, 32, kIndirect);
       c.Publish(0);
     }},
    {"IndirectWithoutTheFeature", Outcome::kNeedsReset,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1}, {c.status, 1, kWrite, 0}});
       c.Set(0, table, 32, kIndirect);
       c.Publish(0);
     },
     kLinuxFeatures & ~feature::kRingIndirectDesc},
    {"NoWritableStatusByte", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, 0);
       c.Publish(0);
     }},
    {"StatusBufferOutsideRam", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.ram_end + 4096, 1, kWrite);
       c.Publish(0);
     }},
    {"StatusBufferOfLengthZero", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.status, 0, kWrite);
       c.Publish(0);
     }},
    {"HeadMadeAvailableTwiceWhileInFlight", Outcome::kNeedsReset,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.data, 4096, kWrite | kNext, 2);
       c.Set(2, c.status, 1, kWrite);
       c.Publish(0);
       c.Publish(0);
     }},
    {"DataBufferOutsideRam", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.ram_end, 512, kWrite | kNext, 2);
       c.Set(2, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"DataBufferStraddlingTheEndOfRam", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.ram_end - 256, 512, kWrite | kNext, 2);
       c.Set(2, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"DataAddressPlusLengthWrapsAround", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, ~0ull - 100, 512, kWrite | kNext, 2);
       c.Set(2, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"BuffersAddingUpToMoreThan4GiB", Outcome::kIoError,
     [](Chain& c) {
       uint64_t table = c.Table({{c.header, 16, kNext, 1},
                                 {c.data, 0xffffffffu, kWrite | kNext, 2},
                                 {c.data, 0xffffffffu, kWrite | kNext, 3},
                                 {c.status, 1, kWrite, 0}});
       c.Set(0, table, 64, kIndirect);
       c.Publish(0);
     }},
    {"ReadableBufferAfterWritableOne", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.header, 16, kNext, 1);
       c.Set(1, c.data, 512, kWrite | kNext, 2);
       c.Set(2, c.data + 1024, 16, kNext, 3);
       c.Set(3, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"HeaderShorterThan16Bytes", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.header, 8, kNext, 1);
       c.Set(1, c.status, 1, kWrite);
       c.Publish(0);
     }},
    {"NoHeaderAtAll", Outcome::kIoError,
     [](Chain& c) {
       c.Set(0, c.status, 1, kWrite);
       c.Publish(0);
     }},
};

class MalformedChainTest : public MainLoopTest,
                           public testing::WithParamInterface<MalformedCase> {
 protected:
  void Start(uint64_t features) {
    BlkTestbedOptions options;
    options.ram_bytes = kRamBytes;
    options.blk.num_queues = 2;
    StartDevice(options, features, 2, kQueueSize);
  }

  // Serves a valid FLUSH through hand-written descriptors 8 and 9.
  bool ValidRequestAnswered(DriverQueue& queue) {
    uint64_t header = testbed_->allocator().Allocate(16);
    uint64_t status_byte = testbed_->allocator().Allocate(1);
    EXPECT_TRUE(testbed_->memory().WriteObject(header, blk::RequestHeader{blk::kTypeFlush, 0, 0}).ok());
    EXPECT_TRUE(testbed_->memory().WriteObject<uint8_t>(status_byte, 0xff).ok());
    queue.WriteDescriptor(8, {header, 16, kNext, 9});
    queue.WriteDescriptor(9, {status_byte, 1, kWrite, 0});
    const uint16_t before = queue.used_index();
    queue.PublishHead(8);
    driver().Kick(queue.index());
    bool answered = driver().WaitUntil([&] { return queue.used_index() != before; },
                                       absl::Milliseconds(300));
    return answered && *testbed_->memory().ReadObject<uint8_t>(status_byte) == blk::kStatusOk;
  }
};

TEST_P(MalformedChainTest, HasTheDocumentedOutcomeAndTheDeviceStaysUsable) {
  const MalformedCase& row = GetParam();
  Start(row.features);
  DriverQueue& queue = driver().queue(0);
  queue.Reserve(0, kQueueSize);
  GuestAllocator& allocator = testbed_->allocator();
  Chain chain{queue, allocator, allocator.Allocate(16), allocator.Allocate(4096, 4096),
              allocator.Allocate(1)};
  ASSERT_TRUE(testbed_->memory().WriteObject(chain.header, blk::RequestHeader{blk::kTypeIn, 0, 0}).ok());
  ASSERT_TRUE(testbed_->memory().WriteObject<uint8_t>(chain.status, 0xff).ok());
  row.build(chain);
  driver().Kick(0);

  if (row.outcome == Outcome::kIoError) {
    ASSERT_TRUE(driver().WaitUntil([&] { return queue.used_index() == 1; }, absl::Seconds(5)));
    EXPECT_EQ(*testbed_->memory().ReadObject<uint8_t>(chain.status), blk::kStatusIoError);
    std::vector<hw::virtio::UsedElement> used = queue.TakeUsed();
    ASSERT_EQ(used.size(), 1u);
    EXPECT_EQ(used[0].length, 1u);
    EXPECT_EQ(driver().status() & status::kDeviceNeedsReset, 0);
    EXPECT_TRUE(ValidRequestAnswered(queue)) << "the queue goes on serving";
    return;
  }

  ASSERT_TRUE(driver().WaitUntil(
      [&] { return (driver().status() & status::kDeviceNeedsReset) != 0; }, absl::Seconds(5)));
  EXPECT_NE(driver().AckInterrupt() & hw::virtio::kInterruptConfigChange, 0u);
  EXPECT_FALSE(ValidRequestAnswered(queue)) << "the broken queue must stop";
  EXPECT_TRUE(ValidRequestAnswered(driver().queue(1))) << "the other queue keeps working";
  EXPECT_EQ(testbed_->blk().stats().in_flight, 0u);

  // Reset by the driver: everything works again.
  driver().Reset();
  EXPECT_EQ(driver().status(), 0);
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 2, kQueueSize).ok());
  auto result = blk().Run(0, {.type = blk::kTypeOut, .sector = 8, .out_data = Pattern(4096, 1)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
}

INSTANTIATE_TEST_SUITE_P(Table, MalformedChainTest, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<MalformedCase>& info) {
                           return std::string(info.param.name);
                         });

// Rings the device cannot use break the queue at DRIVER_OK.
class MalformedRingTest : public MainLoopTest {
 protected:
  void SetUpQueueWith(uint32_t size, uint64_t descriptor_table) {
    auto testbed = BlkTestbed::Create({.ram_bytes = kRamBytes});
    ASSERT_TRUE(testbed.ok());
    testbed_ = std::move(*testbed);
    ASSERT_TRUE(driver().Negotiate(kLinuxFeatures).ok());
    uint64_t rings = testbed_->allocator().Allocate(3 * 4096, 4096);
    driver().Write32(mmio::kQueueSel, 0);
    driver().Write32(mmio::kQueueNum, size);
    driver().Write32(mmio::kQueueDescLow, static_cast<uint32_t>(descriptor_table));
    driver().Write32(mmio::kQueueDescHigh, static_cast<uint32_t>(descriptor_table >> 32));
    driver().Write32(mmio::kQueueDriverLow, static_cast<uint32_t>(rings + 4096));
    driver().Write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(rings + 8192));
    driver().Write32(mmio::kQueueReady, 1);
    driver().DriverOk();
  }
  void ExpectNeedsResetThenRecovery() {
    EXPECT_NE(driver().status() & status::kDeviceNeedsReset, 0);
    EXPECT_NE(driver().AckInterrupt() & hw::virtio::kInterruptConfigChange, 0u);
    ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
    EXPECT_EQ(driver().status() & status::kDeviceNeedsReset, 0);
    EXPECT_EQ(blk().Run(0, {.type = blk::kTypeFlush})->status, blk::kStatusOk);
  }
};

TEST_F(MalformedRingTest, DescriptorTableOutsideRam) {
  SetUpQueueWith(64, kRamBytes + (1ull << 30));
  ExpectNeedsResetThenRecovery();
}

TEST_F(MalformedRingTest, QueueSizeNotAPowerOfTwo) {
  SetUpQueueWith(48, 0x10000);
  ExpectNeedsResetThenRecovery();
}

TEST_F(MalformedRingTest, QueueSizeAboveQueueNumMax) {
  SetUpQueueWith(1024, 0x10000);
  ExpectNeedsResetThenRecovery();
}

}  // namespace
}  // namespace kvmini::test

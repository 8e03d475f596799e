// virtio-blk over virtio-mmio, driven by the harness's guest driver with the
// queues served by the main loop: registers, negotiation, config space and
// every request type against the real block backend on an image file.
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;
namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;
namespace feature = hw::virtio::feature;
using Backend = BlkTestbedOptions::Backend;

class BlkDeviceTest : public MainLoopTest {};

template <typename T>
T ConfigField(VirtioDriver& driver, uint64_t offset) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(T); i += 4) {
    uint64_t word = driver.Read32(mmio::kConfig + offset + i);
    value |= word << (8 * i);
  }
  return static_cast<T>(value);
}

TEST_F(BlkDeviceTest, RegistersIdentifyAVersionTwoBlockDevice) {
  auto testbed = BlkTestbed::Create({});
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  EXPECT_EQ(driver().Read32(mmio::kMagicValue), 0x74726976u);
  EXPECT_EQ(driver().Read32(mmio::kVersion), 2u);
  EXPECT_EQ(driver().Read32(mmio::kDeviceId), 2u);
  driver().Write32(mmio::kQueueSel, 0);
  EXPECT_EQ(driver().Read32(mmio::kQueueNumMax), 256u);
  driver().Write32(mmio::kQueueSel, 1);
  EXPECT_EQ(driver().Read32(mmio::kQueueNumMax), 0u) << "only one queue";
  EXPECT_EQ(driver().Read32(mmio::kShmLenLow), 0xffffffffu);
  EXPECT_EQ(driver().Read32(mmio::kShmBaseHigh), 0xffffffffu);
  EXPECT_EQ(driver().status(), 0u);
}

TEST_F(BlkDeviceTest, OffersTheDocumentedFeatures) {
  BlkTestbedOptions options;
  options.blk.num_queues = 2;
  auto testbed = BlkTestbed::Create(options);
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  const uint64_t offered = driver().device_features();
  for (uint64_t bit : {feature::kVersion1, feature::kRingIndirectDesc, feature::kRingEventIdx,
                       blk::kFeatureSizeMax, blk::kFeatureSegMax, blk::kFeatureBlockSize,
                       blk::kFeatureFlush, blk::kFeatureTopology, blk::kFeatureMultiQueue,
                       blk::kFeatureDiscard, blk::kFeatureWriteZeroes}) {
    EXPECT_NE(offered & bit, 0u) << "bit " << __builtin_ctzll(bit);
  }
  EXPECT_EQ(offered & blk::kFeatureReadOnly, 0u);
  // Nothing the device does not implement (packed ring, ring reset, ...).
  EXPECT_EQ(offered & ~kLinuxFeatures, 0u);
}

TEST_F(BlkDeviceTest, ReadOnlyDiskOffersRoAndSingleQueueNoMq) {
  BlkTestbedOptions options;
  options.block.read_only = true;
  auto testbed = BlkTestbed::Create(options);
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  const uint64_t offered = driver().device_features();
  EXPECT_NE(offered & blk::kFeatureReadOnly, 0u);
  EXPECT_EQ(offered & blk::kFeatureMultiQueue, 0u);
}

TEST_F(BlkDeviceTest, LegacyDriverWithoutVersionOneIsRefused) {
  auto testbed = BlkTestbed::Create({});
  ASSERT_TRUE(testbed.ok());
  testbed_ = std::move(*testbed);
  driver().Write32(mmio::kStatus, status::kAcknowledge | status::kDriver);
  driver().WriteDriverFeatures(blk::kFeatureFlush);  // no VERSION_1
  driver().Write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  EXPECT_EQ(driver().status() & status::kFeaturesOk, 0) << "FEATURES_OK must not stick";
  // DRIVER_OK without FEATURES_OK is ignored too: the device never starts.
  driver().Write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kDriverOk);
  EXPECT_EQ(driver().status() & status::kDriverOk, 0);
  // The legacy register layout is not there either; writing it is harmless.
  driver().Write32(mmio::kLegacyGuestPageSize, 4096);
  // A fresh, correct negotiation still works.
  EXPECT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  auto result = blk().Run(0, {.type = blk::kTypeFlush});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
}

TEST_F(BlkDeviceTest, FeaturesTheDeviceDoesNotOfferAreRefused) {
  auto testbed = BlkTestbed::Create({});
  ASSERT_TRUE(testbed.ok());
  testbed_ = std::move(*testbed);
  driver().Write32(mmio::kStatus, status::kAcknowledge | status::kDriver);
  driver().WriteDriverFeatures(feature::kVersion1 | (1ull << 34));  // RING_PACKED
  driver().Write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  EXPECT_EQ(driver().status() & status::kFeaturesOk, 0);
}

TEST_F(BlkDeviceTest, StatusBitsCannotBeClearedWithoutReset) {
  StartDevice({});
  const uint8_t before = driver().status();
  driver().Write32(mmio::kStatus, status::kAcknowledge);
  EXPECT_EQ(driver().status(), before);
}

TEST_F(BlkDeviceTest, ConfigSpaceDescribesTheDisk) {
  BlkTestbedOptions options;
  options.image_bytes = 64 << 20;
  options.blk.num_queues = 3;
  StartDevice(options, kLinuxFeatures, 3, 128);
  EXPECT_EQ(ConfigField<uint64_t>(driver(), 0), (64u << 20) / 512);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 8), blk::kSizeMax);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 12), 254u) << "seg_max = queue size - 2";
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 20), 512u);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 32) >> 16, 3u) << "num_queues";
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 36), blk::kMaxDiscardSectors);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 40), blk::kMaxDiscardSegments);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 48), blk::kMaxDiscardSectors);
  EXPECT_EQ(ConfigField<uint32_t>(driver(), 56) & 0xff, 1u) << "write_zeroes_may_unmap";
  EXPECT_EQ(driver().Read32(mmio::kConfigGeneration), driver().Read32(mmio::kConfigGeneration));
  // Byte and beyond-the-end accesses.
  uint8_t byte = 0xaa;
  testbed_->transport().Read(mmio::kConfig + 34, std::span(&byte, 1));
  EXPECT_EQ(byte, 3);
  EXPECT_EQ(driver().Read32(mmio::kConfig + 0x80), 0u);
}

TEST_F(BlkDeviceTest, WriteThenReadThroughDirectAndIndirectChains) {
  StartDevice({});
  const std::vector<uint8_t> data = Pattern(16384, 3);
  for (bool indirect : {false, true}) {
    for (uint32_t segment : {0u, 4096u, 512u}) {
      SCOPED_TRACE(testing::Message() << "indirect " << indirect << " segment " << segment);
      const uint64_t sector = 64 + segment;
      auto written = blk().Run(0, {.type = blk::kTypeOut, .sector = sector, .out_data = data,
                                   .segment_size = segment, .indirect = indirect});
      ASSERT_TRUE(written.ok()) << written.status();
      EXPECT_EQ(written->status, blk::kStatusOk);
      EXPECT_EQ(written->used_length, 1u);
      EXPECT_EQ(ReadImage(testbed_->image_path(), sector * 512, data.size()), data);

      auto read = blk().Run(0, {.type = blk::kTypeIn, .sector = sector, .in_length = 16384,
                                .segment_size = segment, .indirect = indirect});
      ASSERT_TRUE(read.ok()) << read.status();
      EXPECT_EQ(read->status, blk::kStatusOk);
      EXPECT_EQ(read->used_length, 16384u + 1);
      EXPECT_EQ(read->in_data, data);
    }
  }
}

TEST_F(BlkDeviceTest, ReadsWhatTheImageHolds) {
  BlkTestbedOptions options;
  auto path = CreateTemporaryImage(options.image_bytes);
  ASSERT_TRUE(path.ok());
  const std::vector<uint8_t> data = Pattern(8192, 99);
  WriteImage(*path, options.image_bytes - 8192, data);
  options.image_path = *path;
  StartDevice(options);
  auto read = blk().Run(0, {.type = blk::kTypeIn, .sector = (options.image_bytes - 8192) / 512,
                            .in_length = 8192});
  unlink(path->c_str());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->status, blk::kStatusOk);
  EXPECT_EQ(read->in_data, data);
}

TEST_F(BlkDeviceTest, QueueNotifyThroughTheRegisterPathServesTheQueue) {
  StartDevice({});
  auto result = blk().Run(0, {.type = blk::kTypeFlush}, VirtioDriver::KickVia::kRegister);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
  // A 16-bit QueueNotify write (not what KVM's ioeventfd matches) works too.
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
  uint16_t queue_index = 0;
  testbed_->transport().Write(mmio::kQueueNotify,
                              std::span(reinterpret_cast<const uint8_t*>(&queue_index), 2));
  EXPECT_TRUE(driver().WaitUntil([&] { return !blk().Collect(0).empty(); }, absl::Seconds(10)));
  // A notify for a queue that does not exist is ignored.
  driver().Write32(mmio::kQueueNotify, 7);
}

TEST_F(BlkDeviceTest, FlushSucceeds) {
  StartDevice({});
  auto result = blk().Run(0, {.type = blk::kTypeFlush});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
  EXPECT_EQ(result->used_length, 1u);
}

TEST_F(BlkDeviceTest, GetIdReturnsTheSerialNulPadded) {
  BlkTestbedOptions options;
  options.blk.serial = "disk-7";
  StartDevice(options);
  auto result = blk().Run(0, {.type = blk::kTypeGetId, .in_length = 20});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
  EXPECT_EQ(result->used_length, 21u);
  std::vector<uint8_t> expected(20, 0);
  std::memcpy(expected.data(), "disk-7", 6);
  EXPECT_EQ(result->in_data, expected);
  // A smaller buffer gets a truncated serial.
  auto short_result = blk().Run(0, {.type = blk::kTypeGetId, .in_length = 4});
  ASSERT_TRUE(short_result.ok());
  EXPECT_EQ(short_result->status, blk::kStatusOk);
  EXPECT_EQ(std::string(short_result->in_data.begin(), short_result->in_data.end()), "disk");
}

TEST_F(BlkDeviceTest, GetIdOfATwentyByteSerialHasNoTerminator) {
  BlkTestbedOptions options;
  options.blk.serial = "ABCDEFGHIJKLMNOPQRST";
  StartDevice(options);
  auto result = blk().Run(0, {.type = blk::kTypeGetId, .in_length = 20});
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(std::string(result->in_data.begin(), result->in_data.end()), options.blk.serial);
}

TEST_F(BlkDeviceTest, SerialLongerThanTwentyBytesIsRejectedAtCreation) {
  BlkTestbedOptions options;
  options.blk.serial = std::string(21, 'x');
  auto testbed = BlkTestbed::Create(options);
  ASSERT_FALSE(testbed.ok());
  EXPECT_THAT(std::string(testbed.status().message()), testing::HasSubstr("serial"));
}

TEST_F(BlkDeviceTest, QueueCountOutOfRangeIsRejectedAtCreation) {
  BlkTestbedOptions options;
  options.blk.num_queues = 0;
  auto testbed = BlkTestbed::Create(options);
  ASSERT_FALSE(testbed.ok());
  EXPECT_THAT(std::string(testbed.status().message()), testing::HasSubstr("queues=0"));
}

TEST_F(BlkDeviceTest, DiscardAndWriteZeroesClearTheRangeInTheImage) {
  StartDevice({});
  const std::vector<uint8_t> data = Pattern(65536, 5);
  ASSERT_EQ(blk().Run(0, {.type = blk::kTypeOut, .sector = 0, .out_data = data})->status,
            blk::kStatusOk);
  // Discard sectors 8..15, write zeroes (may unmap) 32..39, plain 64..71.
  auto discard = blk().Run(0, {.type = blk::kTypeDiscard,
                               .out_data = Segments({{8, 8, 0}})});
  ASSERT_TRUE(discard.ok());
  EXPECT_EQ(discard->status, blk::kStatusOk);
  auto zeroes = blk().Run(0, {.type = blk::kTypeWriteZeroes,
                              .out_data = Segments({{32, 8, blk::kSegmentFlagUnmap},
                                                    {64, 8, 0}})});
  ASSERT_TRUE(zeroes.ok());
  EXPECT_EQ(zeroes->status, blk::kStatusOk);

  std::vector<uint8_t> expected = data;
  for (uint64_t sector : {8, 32, 64}) {
    std::fill(expected.begin() + sector * 512, expected.begin() + (sector + 8) * 512, 0);
  }
  EXPECT_EQ(ReadImage(testbed_->image_path(), 0, data.size()), expected);
}

TEST_F(BlkDeviceTest, DiscardAndWriteZeroesRefuseWhatTheSpecForbids) {
  StartDevice({});
  struct Case {
    const char* what;
    uint32_t type;
    std::vector<uint8_t> payload;
    uint8_t expected;
  };
  std::vector<uint8_t> too_many(17 * 16, 0);
  const Case cases[] = {
      {"discard with UNMAP", blk::kTypeDiscard, Segments({{0, 8, blk::kSegmentFlagUnmap}}),
       blk::kStatusUnsupported},
      {"unknown segment flag", blk::kTypeWriteZeroes, Segments({{0, 8, 2}}),
       blk::kStatusUnsupported},
      {"more segments than max_discard_seg", blk::kTypeDiscard, too_many,
       blk::kStatusUnsupported},
      {"beyond capacity", blk::kTypeDiscard, Segments({{16383, 2, 0}}), blk::kStatusIoError},
      {"longer than max_discard_sectors", blk::kTypeWriteZeroes,
       Segments({{0, blk::kMaxDiscardSectors + 1, 0}}), blk::kStatusIoError},
      {"payload not a multiple of 16", blk::kTypeDiscard, std::vector<uint8_t>(12, 0),
       blk::kStatusIoError},
      {"no payload", blk::kTypeWriteZeroes, {}, blk::kStatusIoError},
  };
  for (const Case& c : cases) {
    auto result = blk().Run(0, {.type = c.type, .out_data = c.payload});
    ASSERT_TRUE(result.ok()) << c.what;
    EXPECT_EQ(result->status, c.expected) << c.what;
  }
}

TEST_F(BlkDeviceTest, UnknownRequestTypeIsUnsupported) {
  StartDevice({});
  for (uint32_t type : {2u, 10u, 14u, 0x80000000u}) {
    auto result = blk().Run(0, {.type = type});
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->status, blk::kStatusUnsupported) << type;
    EXPECT_EQ(result->used_length, 1u);
  }
}

TEST_F(BlkDeviceTest, OutOfRangeAndMisalignedRequestsFailWithIoError) {
  StartDevice({});  // 8 MiB = 16384 sectors
  const BlkRequest cases[] = {
      {.type = blk::kTypeIn, .sector = 16383, .in_length = 1024},
      {.type = blk::kTypeIn, .sector = 16384, .in_length = 512},
      {.type = blk::kTypeIn, .sector = ~0ull, .in_length = 512},
      {.type = blk::kTypeOut, .sector = ~0ull / 512, .out_data = Pattern(512, 1)},
      {.type = blk::kTypeIn, .sector = 0, .in_length = 100},
      {.type = blk::kTypeOut, .sector = 0, .out_data = Pattern(513, 1)},
  };
  for (const BlkRequest& request : cases) {
    auto result = blk().Run(0, request);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->status, blk::kStatusIoError) << "sector " << request.sector;
  }
  // The last sector itself is fine.
  auto last = blk().Run(0, {.type = blk::kTypeIn, .sector = 16383, .in_length = 512});
  EXPECT_EQ(last->status, blk::kStatusOk);
}

TEST_F(BlkDeviceTest, WritesToAReadOnlyDiskFailAndLeaveTheImageAlone) {
  BlkTestbedOptions options;
  options.block.read_only = true;
  auto path = CreateTemporaryImage(options.image_bytes);
  ASSERT_TRUE(path.ok());
  const std::vector<uint8_t> original = Pattern(4096, 42);
  WriteImage(*path, 0, original);
  options.image_path = *path;
  StartDevice(options);
  for (const BlkRequest& request :
       {BlkRequest{.type = blk::kTypeOut, .sector = 0, .out_data = Pattern(4096, 1)},
        BlkRequest{.type = blk::kTypeDiscard, .out_data = Segments({{0, 8, 0}})},
        BlkRequest{.type = blk::kTypeWriteZeroes, .out_data = Segments({{0, 8, 0}})}}) {
    auto result = blk().Run(0, request);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->status, blk::kStatusIoError) << request.type;
  }
  EXPECT_EQ(ReadImage(*path, 0, 4096), original);
  auto read = blk().Run(0, {.type = blk::kTypeIn, .sector = 0, .in_length = 4096});
  EXPECT_EQ(read->status, blk::kStatusOk);
  EXPECT_EQ(read->in_data, original);
  unlink(path->c_str());
}

TEST_F(BlkDeviceTest, FailedBackendOperationsAnswerIoError) {
  StartDevice({.backend = Backend::kMemory});
  for (uint32_t type : {blk::kTypeIn, blk::kTypeOut, blk::kTypeFlush}) {
    testbed_->memory_backend()->FailNext(1, -EIO);
    BlkRequest request{.type = type, .sector = 8};
    if (type == blk::kTypeIn) request.in_length = 4096;
    if (type == blk::kTypeOut) request.out_data = Pattern(4096, 2);
    auto result = blk().Run(0, request);
    ASSERT_TRUE(result.ok());
    EXPECT_EQ(result->status, blk::kStatusIoError) << type;
    EXPECT_EQ(result->used_length, 1u);
  }
  // Only one of two write-zeroes segments fails: the request still fails.
  testbed_->memory_backend()->FailNext(1, -EIO);
  auto zeroes = blk().Run(0, {.type = blk::kTypeWriteZeroes,
                              .out_data = Segments({{0, 8, 0}, {16, 8, 0}})});
  EXPECT_EQ(zeroes->status, blk::kStatusIoError);
  auto healthy = blk().Run(0, {.type = blk::kTypeFlush});
  EXPECT_EQ(healthy->status, blk::kStatusOk);
}

TEST_F(BlkDeviceTest, CountersAddUp) {
  StartDevice({});
  ASSERT_EQ(blk().Run(0, {.type = blk::kTypeOut, .sector = 0, .out_data = Pattern(8192, 1)})
                ->status,
            blk::kStatusOk);
  ASSERT_EQ(blk().Run(0, {.type = blk::kTypeIn, .sector = 0, .in_length = 4096})->status,
            blk::kStatusOk);
  ASSERT_EQ(blk().Run(0, {.type = 99})->status, blk::kStatusUnsupported);
  hw::virtio::VirtioBlkStats stats = testbed_->blk().stats();
  EXPECT_EQ(stats.completed, 3u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.bytes_written, 8192u);
  EXPECT_EQ(stats.bytes_read, 4096u);
  EXPECT_EQ(stats.errors, 1u);
}

TEST_F(BlkDeviceTest, ManyRequestsInOneKickAllComplete) {
  StartDevice({}, kLinuxFeatures, 1, 64);
  std::vector<uint16_t> heads;
  for (int i = 0; i < 64; ++i) {
    auto head = blk().Post(0, {.type = blk::kTypeOut, .sector = uint64_t(i) * 8,
                               .out_data = Pattern(4096, i), .indirect = true});
    ASSERT_TRUE(head.ok()) << i;
  }
  driver().Kick(0);
  size_t done = 0;
  EXPECT_TRUE(driver().WaitUntil(
      [&] {
        for (auto& [head, result] : blk().Collect(0)) {
          EXPECT_EQ(result.status, blk::kStatusOk);
          ++done;
        }
        return done == 64;
      },
      absl::Seconds(10)));
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(ReadImage(testbed_->image_path(), uint64_t(i) * 4096, 4096), Pattern(4096, i));
  }
}

}  // namespace
}  // namespace kvmini::test

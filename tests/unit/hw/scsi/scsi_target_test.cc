// ScsiTarget: virtio-scsi LUN decoding, LUN attachment, routing to the right
// disk and REPORT LUNS contents.
#include "hw/scsi/scsi_target.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hw/scsi/big_endian.h"
#include "scsi_cdb_builders.h"
#include "scsi_test_harness.h"

namespace kvmini::hw::scsi::testing {
namespace {

using Kind = LunAddress::Kind;

std::optional<LunAddress> Decode(std::array<uint8_t, 8> bytes) { return DecodeVirtioLun(bytes); }

TEST(DecodeVirtioLunTest, SingleLevelForms) {
  auto lun0 = Decode({1, 0, 0x40, 0x00, 0, 0, 0, 0});  // what Linux sends for LUN 0
  ASSERT_TRUE(lun0);
  EXPECT_EQ(lun0->kind, Kind::kLogicalUnit);
  EXPECT_EQ(lun0->target, 0);
  EXPECT_EQ(lun0->lun, 0);

  auto peripheral = Decode({1, 3, 0x00, 0x05, 0, 0, 0, 0});
  ASSERT_TRUE(peripheral);
  EXPECT_EQ(peripheral->kind, Kind::kLogicalUnit);
  EXPECT_EQ(peripheral->target, 3);
  EXPECT_EQ(peripheral->lun, 5);

  auto flat = Decode({1, 2, 0x7f, 0xff, 0, 0, 0, 0});
  ASSERT_TRUE(flat);
  EXPECT_EQ(flat->kind, Kind::kLogicalUnit);
  EXPECT_EQ(flat->lun, kMaxLun);

  auto well_known = Decode({1, 0, 0xc1, 0x01, 0, 0, 0, 0});
  ASSERT_TRUE(well_known);
  EXPECT_EQ(well_known->kind, Kind::kReportLunsWellKnown);
}

TEST(DecodeVirtioLunTest, OtherFormsAreUnsupportedOrBadTarget) {
  EXPECT_FALSE(Decode({0, 0, 0x40, 0, 0, 0, 0, 0})) << "byte 0 must be 1";
  EXPECT_FALSE(Decode({2, 0, 0x40, 0, 0, 0, 0, 0}));
  EXPECT_EQ(Decode({1, 0, 0x40, 0, 0, 1, 0, 0})->kind, Kind::kUnsupported) << "second level";
  EXPECT_EQ(Decode({1, 0, 0x80, 0x01, 0, 0, 0, 0})->kind, Kind::kUnsupported)
      << "logical unit addressing";
  EXPECT_EQ(Decode({1, 0, 0x01, 0x01, 0, 0, 0, 0})->kind, Kind::kUnsupported)
      << "peripheral addressing on bus 1";
  EXPECT_EQ(Decode({1, 0, 0xc1, 0x02, 0, 0, 0, 0})->kind, Kind::kUnsupported)
      << "an unknown well-known LUN";
}

TEST(DecodeVirtioLunTest, EncodeRoundTrips) {
  for (uint16_t lun : {0, 1, 255, 256, 0x1234, 0x3fff}) {
    const auto bytes = EncodeVirtioLun(7, lun);
    EXPECT_EQ(bytes[0], 1);
    EXPECT_EQ(bytes[2] & 0xc0, 0x40) << "flat addressing, as Linux sends";
    const auto address = DecodeVirtioLun(bytes);
    ASSERT_TRUE(address);
    EXPECT_EQ(address->kind, Kind::kLogicalUnit);
    EXPECT_EQ(address->target, 7);
    EXPECT_EQ(address->lun, lun);
  }
}

TEST(ScsiTargetTest, AttachRejectsOutOfRangeAndDuplicateLuns) {
  ScsiHarness harness;  // LUN 0 attached
  EXPECT_EQ(harness.target().AttachLun(0x4000, harness.disk()).code(),
            absl::StatusCode::kInvalidArgument);
  const absl::Status duplicate = harness.target().AttachLun(0, harness.disk());
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(duplicate.message()), ::testing::HasSubstr("LUN 0"));
  EXPECT_THAT(harness.target().luns(), ::testing::ElementsAre(0));
}

TEST(ScsiTargetTest, RoutesEachLunToItsDisk) {
  ScsiHarness harness;
  MemoryBlockBackend second_backend(harness.context(), 1 << 20);
  std::fill(second_backend.bytes().begin(), second_backend.bytes().end(), 0x33);
  auto second = ScsiDisk::Create(second_backend, {});
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(harness.target().AttachLun(3, **second).ok());

  const Exchange read = harness.Run(Cdb10(opcode::kRead10, 0, 0, 1),
                                    {.data_in_capacity = 512, .lun = EncodeVirtioLun(0, 3)});
  EXPECT_EQ(read.result.status, status::kGood);
  EXPECT_EQ(read.data_in, std::vector<uint8_t>(512, 0x33));
  EXPECT_EQ(harness.target().Find(*DecodeVirtioLun(EncodeVirtioLun(0, 3))), second->get());
  harness.target().DetachLun(3);
  EXPECT_EQ(harness.target().Find(*DecodeVirtioLun(EncodeVirtioLun(0, 3))), nullptr);
}

TEST(ScsiTargetTest, ReportLunsListsEveryLunInOrder) {
  ScsiHarness harness;
  ASSERT_TRUE(harness.target().AttachLun(300, harness.disk()).ok());
  ASSERT_TRUE(harness.target().AttachLun(5, harness.disk()).ok());
  const Exchange full = harness.Run(ReportLuns(0, 64), {.data_in_capacity = 64});
  ASSERT_EQ(full.result.data_in_length, 32u);
  EXPECT_EQ(LoadBigEndian32(&full.data_in[0]), 24u);
  const std::vector<uint8_t> entries(full.data_in.begin() + 8, full.data_in.begin() + 32);
  EXPECT_EQ(entries, (std::vector<uint8_t>{0,    0,    0, 0, 0, 0, 0, 0,  // LUN 0
                                           0,    5,    0, 0, 0, 0, 0, 0,  // LUN 5: peripheral form
                                           0x41, 0x2c, 0, 0, 0, 0, 0, 0}))  // 300: flat
      << "entries";

  // Cut by the allocation length, the header still gives the full length.
  const Exchange cut = harness.Run(ReportLuns(0, 16), {.data_in_capacity = 16});
  EXPECT_EQ(cut.result.data_in_length, 16u);
  EXPECT_EQ(LoadBigEndian32(&cut.data_in[0]), 24u);

  const Exchange well_known_only = harness.Run(ReportLuns(1, 16), {.data_in_capacity = 16});
  EXPECT_EQ(LoadBigEndian32(&well_known_only.data_in[0]), 8u);
  EXPECT_EQ(well_known_only.data_in[8], 0xc1);
  harness.target().DetachLun(300);
  harness.target().DetachLun(5);
}

TEST(ScsiTargetTest, ReportLunsToLunZeroIsNotHeldByUnitAttention) {
  ScsiHarness harness;
  harness.disk().Reset([] {});
  const Exchange report = harness.Run(ReportLuns(0, 16), {.data_in_capacity = 16});
  EXPECT_EQ(report.result.status, status::kGood);
  const Exchange ready = harness.Run({opcode::kTestUnitReady, 0, 0, 0, 0, 0});
  EXPECT_EQ(ready.result.status, status::kCheckCondition) << "the attention is still pending";
}

}  // namespace
}  // namespace kvmini::hw::scsi::testing

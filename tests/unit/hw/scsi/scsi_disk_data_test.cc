// The builders of INQUIRY, READ CAPACITY and mode data on profiles too big
// (or too unusual) for an in-memory test image: capacities beyond 32 bits,
// physical blocks larger than logical ones, long LBA block descriptors,
// and MODE SELECT's block descriptor and page checks.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "hw/scsi/big_endian.h"
#include "hw/scsi/cdb.h"
#include "hw/scsi/inquiry.h"
#include "hw/scsi/mode_pages.h"
#include "scsi_cdb_builders.h"

namespace kvmini::hw::scsi::testing {
namespace {

DiskProfile HugeProfile() {
  DiskProfile profile;
  profile.block_size = 512;
  profile.physical_block_exponent = 3;      // 4 KiB physical blocks
  profile.block_count = uint64_t{1} << 33;  // 4 TiB
  profile.unmap = true;
  profile.vendor = "KVMINI";
  profile.product = "KVMINI DISK";
  profile.revision = "0.1";
  profile.identifier = "disk";
  profile.max_transfer_blocks = 16384;
  profile.max_unmap_blocks = 1 << 21;
  profile.max_unmap_descriptors = 255;
  profile.unmap_granularity_blocks = 8;
  profile.max_write_same_blocks = 1 << 21;
  return profile;
}

ParsedCdb Parse(const std::vector<uint8_t>& cdb) {
  const auto parsed = ParseCdb(cdb, 512);
  EXPECT_TRUE(parsed.has_value());
  return parsed.value_or(ParsedCdb{});
}

TEST(ScsiDiskDataTest, ReadCapacity10ClampsAndSixteenReportsTheRest) {
  const DiskProfile profile = HugeProfile();
  const std::vector<uint8_t> rc10 = {opcode::kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  const EmulatedReply ten = ReadCapacity10(profile, rc10);
  ASSERT_FALSE(ten.failure);
  EXPECT_EQ(LoadBigEndian32(&ten.data[0]), 0xffffffffu) << "tells Linux to use RC16";

  const EmulatedReply sixteen = ServiceActionIn16(profile, ReadCapacity16(32));
  ASSERT_FALSE(sixteen.failure);
  EXPECT_EQ(LoadBigEndian64(&sixteen.data[0]), (uint64_t{1} << 33) - 1);
  EXPECT_EQ(sixteen.data[13], 3) << "log2(physical / logical)";
  EXPECT_EQ(sixteen.data[14], 0xc0) << "LBPME and LBPRZ";
}

TEST(ScsiDiskDataTest, ModeSenseBlockDescriptors) {
  const DiskProfile profile = HugeProfile();
  const ModeValues values{true, true};

  const auto short_cdb = ModeSense6(0, 0x08, 0, 255);
  const EmulatedReply short_form = ModeSense(profile, values, short_cdb, Parse(short_cdb));
  ASSERT_FALSE(short_form.failure);
  ASSERT_EQ(short_form.data[3], 8);
  EXPECT_EQ(LoadBigEndian32(&short_form.data[4]), 0xffffffffu) << "count too big for 32 bits";
  EXPECT_EQ(LoadBigEndian24(&short_form.data[9]), 512u);

  const auto long_cdb = ModeSense10(0x10, 0x08, 512);  // LLBAA
  const EmulatedReply long_form = ModeSense(profile, values, long_cdb, Parse(long_cdb));
  ASSERT_FALSE(long_form.failure);
  EXPECT_EQ(long_form.data[4] & 0x01, 1) << "LONGLBA";
  ASSERT_EQ(LoadBigEndian16(&long_form.data[6]), 16);
  EXPECT_EQ(LoadBigEndian64(&long_form.data[8]), uint64_t{1} << 33);
  EXPECT_EQ(LoadBigEndian32(&long_form.data[20]), 512u);
  EXPECT_EQ(LoadBigEndian16(&long_form.data[0]), long_form.data.size() - 2);
}

TEST(ScsiDiskDataTest, ModeSelectChecksDescriptorAndPages) {
  const DiskProfile profile = HugeProfile();
  bool write_cache = true;
  const auto select = [&](std::vector<uint8_t> cdb, const std::vector<uint8_t>& data) {
    StoreBigEndian16(&cdb[7], static_cast<uint16_t>(data.size()));
    return ModeSelect(profile, write_cache, cdb, Parse(cdb), data);
  };
  const std::vector<uint8_t> select10 = {opcode::kModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 0, 0};

  // MODE SELECT(10): 8-byte header, long descriptor, caching page clearing WCE.
  std::vector<uint8_t> data(8 + 16 + 20, 0);
  data[4] = 0x01;  // LONGLBA
  data[7] = 16;
  StoreBigEndian32(&data[8 + 12], 512);
  data[24] = 0x08;
  data[25] = 0x12;
  EXPECT_FALSE(select(select10, data));
  EXPECT_FALSE(write_cache);

  auto wrong_block = data;
  StoreBigEndian32(&wrong_block[8 + 12], 4096);
  wrong_block[26] = 0x04;
  EXPECT_EQ(select(select10, wrong_block), sense::kInvalidFieldInParameterList);
  EXPECT_FALSE(write_cache) << "a refused MODE SELECT changes nothing";

  auto odd_descriptor = data;
  odd_descriptor[7] = 12;
  EXPECT_EQ(select(select10, odd_descriptor), sense::kInvalidFieldInParameterList);

  auto subpage = data;
  subpage[24] |= 0x40;
  EXPECT_EQ(select(select10, subpage), sense::kInvalidFieldInParameterList);

  auto short_page = data;
  short_page[25] = 0x10;  // a caching page must be 0x12 long
  EXPECT_EQ(select(select10, short_page), sense::kInvalidFieldInParameterList);

  auto control = std::vector<uint8_t>(8 + 12, 0);
  control[8] = 0x0a;
  control[9] = 0x0a;
  control[11] = 0x10;  // the current QUEUE ALGORITHM MODIFIER
  EXPECT_FALSE(select(select10, control));
  control[11] = 0x00;
  EXPECT_EQ(select(select10, control), sense::kInvalidFieldInParameterList);
}

TEST(ScsiDiskDataTest, DeviceIdentifierFollowsTheSerial) {
  DiskProfile profile = HugeProfile();
  const auto naa = [&](const std::string& identifier) {
    profile.identifier = identifier;
    const EmulatedReply page = Inquiry(profile, Inquiry(true, 0x83, 255));
    EXPECT_FALSE(page.failure);
    const size_t naa_at = 4 + 4 + 8 + identifier.size();
    EXPECT_EQ(page.data[naa_at + 1], 0x03) << "NAA designator";
    EXPECT_EQ(page.data[naa_at + 4] >> 4, 3) << "NAA 3: locally assigned";
    return LoadBigEndian64(&page.data[naa_at + 4]);
  };
  EXPECT_EQ(naa("SERIAL-A"), naa("SERIAL-A"));
  EXPECT_NE(naa("SERIAL-A"), naa("SERIAL-B"));
}

TEST(ScsiDiskDataTest, BlockLimitsReportPhysicalGranularity) {
  const EmulatedReply page = Inquiry(HugeProfile(), Inquiry(true, 0xb0, 255));
  ASSERT_FALSE(page.failure);
  EXPECT_EQ(LoadBigEndian16(&page.data[6]), 8) << "optimal transfer granularity in blocks";
}

}  // namespace
}  // namespace kvmini::hw::scsi::testing

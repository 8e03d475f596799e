// Table-driven CDB tests: each case is one command against a fresh 1 MiB
// disk (2048 blocks of 512 bytes unless the variant says otherwise) and the
// exact response, status, sense, data-in length and residual it must get.
#include <functional>
#include <string>

#include "gtest/gtest.h"
#include "hw/scsi/big_endian.h"
#include "scsi_cdb_builders.h"
#include "scsi_test_harness.h"

namespace kvmini::hw::scsi::testing {
namespace {

using Response = ScsiResult::Response;

enum class Disk { kDefault, kReadOnly, kNoUnmap, kLargeBlocks, kSerial, kSmallLimits };

constexpr uint64_t kDiskBytes = 1 << 20;
constexpr uint64_t kBlocks = kDiskBytes / 512;
constexpr uint8_t kSaved = 0xc0;       // MODE SENSE page control 11b
constexpr uint8_t kChangeable = 0x40;  // page control 01b
constexpr uint8_t kAllPages = 0x3f;
constexpr uint8_t kDisableBlockDescriptors = 0x08;
const std::array<uint8_t, 8> kAbsentLun = EncodeVirtioLun(0, 5);
const std::array<uint8_t, 8> kWellKnownLun = {1, 0, 0xc1, 0x01, 0, 0, 0, 0};

struct CdbCase {
  std::string name;
  std::vector<uint8_t> cdb;
  uint64_t data_in = 0;
  std::vector<uint8_t> data_out = {};
  Response response = Response::kCompleted;
  uint8_t status = status::kGood;
  SenseCode sense = sense::kNoSense;  // checked with CHECK CONDITION
  std::optional<uint64_t> data_in_length = std::nullopt;
  std::optional<uint64_t> residual = std::nullopt;
  std::function<void(std::span<const uint8_t>)> check_data = nullptr;
  Disk disk = Disk::kDefault;
  std::array<uint8_t, 8> lun = EncodeVirtioLun(0, 0);
  uint32_t sense_capacity = 96;
};

// gtest prints parameters of failed cases; the name is what identifies one.
void PrintTo(const CdbCase& c, std::ostream* os) { *os << c.name; }

CdbCase Refused(std::string name, std::vector<uint8_t> cdb, SenseCode code, uint64_t data_in = 0) {
  return {.name = std::move(name),
          .cdb = std::move(cdb),
          .data_in = data_in,
          .status = status::kCheckCondition,
          .sense = code,
          .data_in_length = 0};
}

CdbCase RefusedOut(std::string name, std::vector<uint8_t> cdb, std::vector<uint8_t> data_out,
                   SenseCode code, Disk disk = Disk::kDefault) {
  CdbCase c = Refused(std::move(name), std::move(cdb), code);
  c.data_out = std::move(data_out);
  c.residual = c.data_out.size();
  c.disk = disk;
  return c;
}

CdbCase Overrun(std::string name, std::vector<uint8_t> cdb, uint64_t data_in,
                std::vector<uint8_t> data_out = {}) {
  return {.name = std::move(name),
          .cdb = std::move(cdb),
          .data_in = data_in,
          .data_out = std::move(data_out),
          .response = Response::kOverrun,
          .data_in_length = 0};
}

template <typename... Bytes>
std::function<void(std::span<const uint8_t>)> StartsWith(Bytes... expected) {
  return [=](std::span<const uint8_t> data) {
    const std::vector<uint8_t> want = {static_cast<uint8_t>(expected)...};
    ASSERT_GE(data.size(), want.size());
    EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.begin() + want.size()), want);
  };
}

std::function<void(std::span<const uint8_t>)> ByteAt(size_t offset, uint8_t value) {
  return [=](std::span<const uint8_t> data) {
    ASSERT_GT(data.size(), offset);
    EXPECT_EQ(data[offset], value) << "at offset " << offset;
  };
}

std::function<void(std::span<const uint8_t>)> Word32At(size_t offset, uint32_t value) {
  return [=](std::span<const uint8_t> data) {
    ASSERT_GE(data.size(), offset + 4);
    EXPECT_EQ(LoadBigEndian32(&data[offset]), value) << "at offset " << offset;
  };
}

std::vector<uint8_t> Zeroes(size_t count) { return std::vector<uint8_t>(count, 0); }

// MODE SELECT(6) data: 4-byte header, no block descriptor, the caching page.
std::vector<uint8_t> CachingPageSelect(uint8_t byte2, uint8_t byte3 = 0) {
  std::vector<uint8_t> data = {0, 0, 0, 0, 0x08, 0x12, byte2, byte3};
  data.resize(4 + 20, 0);
  return data;
}

std::vector<CdbCase> Cases() {
  using namespace opcode;
  std::vector<CdbCase> cases = {
      // Opcodes and CDB framing.
      {.name = "TestUnitReady", .cdb = {kTestUnitReady, 0, 0, 0, 0, 0}, .residual = 0},
      Refused("EmptyCdb", {}, sense::kInvalidOpcode),
      Refused("ReservedOpcode02", {0x02, 0, 0, 0, 0, 0}, sense::kInvalidOpcode),
      Refused("VendorOpcodeC0", std::vector<uint8_t>(16, 0xc0), sense::kInvalidOpcode),
      Refused("FormatUnitUnsupported", {0x04, 0, 0, 0, 0, 0}, sense::kInvalidOpcode),
      Refused("ShortCdbForRead10", {kRead10, 0, 0, 0, 0, 1}, sense::kInvalidOpcode, 512),
      Refused("NacaInControlByte", {kTestUnitReady, 0, 0, 0, 0, 0x04}, sense::kInvalidFieldInCdb),
      Refused("LinkInControlByte", {kTestUnitReady, 0, 0, 0, 0, 0x01}, sense::kInvalidFieldInCdb),
      {.name = "StartStopUnit", .cdb = {kStartStopUnit, 0, 0, 0, 0x01, 0}},
      {.name = "PreventAllowMediumRemoval", .cdb = {kPreventAllowMediumRemoval, 0, 0, 0, 1, 0}},

      // INQUIRY: standard data and allocation lengths.
      {.name = "InquiryStandard",
       .cdb = Inquiry(false, 0, 36),
       .data_in = 36,
       .data_in_length = 36,
       .residual = 0,
       .check_data = StartsWith(0x00, 0x00, 0x05, 0x12, 31, 0, 0, 0x02, 'K', 'V', 'M', 'I', 'N',
                                'I', ' ', ' ')},
      {.name = "InquiryAllocationSmallerThanData",
       .cdb = Inquiry(false, 0, 5),
       .data_in = 64,
       .data_in_length = 5,
       .residual = 59},
      {.name = "InquiryAllocationLargerThanData",
       .cdb = Inquiry(false, 0, 255),
       .data_in = 255,
       .data_in_length = 36,
       .residual = 219},
      Overrun("InquiryAllocationBeyondBuffer", Inquiry(false, 0, 96), 64),
      Overrun("InquiryWithDataOutBuffer", Inquiry(false, 0, 36), 36, Zeroes(8)),
      Refused("InquiryPageWithoutEvpd", Inquiry(false, 0x80, 64), sense::kInvalidFieldInCdb, 64),
      Refused("InquiryCmdDt", {kInquiry, 0x02, 0, 0, 64, 0}, sense::kInvalidFieldInCdb, 64),

      // Every VPD page.
      {.name = "VpdSupportedPages",
       .cdb = Inquiry(true, 0x00, 255),
       .data_in = 255,
       .data_in_length = 9,
       .check_data = StartsWith(0x00, 0x00, 0x00, 5, 0x00, 0x83, 0xb0, 0xb1, 0xb2)},
      {.name = "VpdSupportedPagesWithSerial",
       .cdb = Inquiry(true, 0x00, 255),
       .data_in = 255,
       .data_in_length = 10,
       .check_data = StartsWith(0x00, 0x00, 0x00, 6, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2),
       .disk = Disk::kSerial},
      {.name = "VpdSerial",
       .cdb = Inquiry(true, 0x80, 255),
       .data_in = 255,
       .data_in_length = 4 + 8,
       .check_data = StartsWith(0x00, 0x80, 0x00, 8, 'S', 'N', '-', '1', '2', '3', '4', '5'),
       .disk = Disk::kSerial},
      Refused("VpdSerialWithoutSerial", Inquiry(true, 0x80, 255), sense::kInvalidFieldInCdb, 255),
      {.name = "VpdDeviceIdentification",
       .cdb = Inquiry(true, 0x83, 255),
       .data_in = 255,
       // T10 vendor designator (4 + 8 + "disk") and NAA designator (4 + 8).
       .data_in_length = 4 + 16 + 12,
       .check_data = StartsWith(0x00, 0x83, 0x00, 28, 0x02, 0x01, 0x00, 12, 'K', 'V', 'M', 'I',
                                'N', 'I', ' ', ' ', 'd', 'i', 's', 'k', 0x01, 0x03, 0x00, 0x08)},
      {.name = "VpdBlockLimits",
       .cdb = Inquiry(true, 0xb0, 255),
       .data_in = 255,
       .data_in_length = 64,
       .check_data =
           [](std::span<const uint8_t> data) {
             EXPECT_EQ(LoadBigEndian16(&data[2]), 0x3c);
             EXPECT_EQ(data[4] & 1, 1);                                 // WSNZ
             EXPECT_EQ(LoadBigEndian32(&data[8]), (8u << 20) / 512);    // max transfer
             EXPECT_EQ(LoadBigEndian32(&data[20]), (1u << 30) / 512);   // max unmap LBAs
             EXPECT_EQ(LoadBigEndian32(&data[24]), 255u);               // descriptors
             EXPECT_EQ(LoadBigEndian32(&data[28]), 8u);                 // granularity
             EXPECT_EQ(LoadBigEndian64(&data[36]), (1u << 30) / 512);  // write same
           }},
      {.name = "VpdBlockLimitsWithoutUnmap",
       .cdb = Inquiry(true, 0xb0, 64),
       .data_in = 64,
       .data_in_length = 64,
       .check_data = Word32At(20, 0),
       .disk = Disk::kNoUnmap},
      {.name = "VpdBlockCharacteristicsSolidState",
       .cdb = Inquiry(true, 0xb1, 64),
       .data_in = 64,
       .data_in_length = 64,
       .check_data = StartsWith(0x00, 0xb1, 0x00, 0x3c, 0x00, 0x01)},
      {.name = "VpdLogicalBlockProvisioning",
       .cdb = Inquiry(true, 0xb2, 64),
       .data_in = 64,
       .data_in_length = 8,
       .check_data = StartsWith(0x00, 0xb2, 0x00, 0x04, 0x00, 0xe4, 0x02, 0x00)},
      {.name = "VpdLogicalBlockProvisioningReadOnly",
       .cdb = Inquiry(true, 0xb2, 64),
       .data_in = 64,
       .data_in_length = 8,
       .check_data = StartsWith(0x00, 0xb2, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00),
       .disk = Disk::kReadOnly},
      Refused("VpdUnknownPage", Inquiry(true, 0x99, 64), sense::kInvalidFieldInCdb, 64),

      // READ CAPACITY.
      {.name = "ReadCapacity10",
       .cdb = {kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0},
       .data_in = 8,
       .data_in_length = 8,
       .check_data = StartsWith(0x00, 0x00, 0x07, 0xff, 0x00, 0x00, 0x02, 0x00)},
      Refused("ReadCapacity10LbaWithoutPmi", {kReadCapacity10, 0, 0, 0, 0, 1, 0, 0, 0, 0},
              sense::kInvalidFieldInCdb, 8),
      Overrun("ReadCapacity10SmallBuffer", {kReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 4),
      {.name = "ReadCapacity16",
       .cdb = ReadCapacity16(32),
       .data_in = 32,
       .data_in_length = 32,
       .check_data = StartsWith(0, 0, 0, 0, 0, 0, 0x07, 0xff, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00,
                                0xc0)},
      {.name = "ReadCapacity16ShortAllocation",
       .cdb = ReadCapacity16(12),
       .data_in = 32,
       .data_in_length = 12,
       .residual = 20},
      {.name = "ReadCapacity16LargeBlocks",
       .cdb = ReadCapacity16(32),
       .data_in = 32,
       .data_in_length = 32,
       .check_data = StartsWith(0, 0, 0, 0, 0, 0, 0x00, 0xff, 0x00, 0x00, 0x10, 0x00),
       .disk = Disk::kLargeBlocks},
      {.name = "ReadCapacity16ReadOnlyHasNoLbpme",
       .cdb = ReadCapacity16(32),
       .data_in = 32,
       .data_in_length = 32,
       .check_data = ByteAt(14, 0x00),
       .disk = Disk::kReadOnly},
      Refused("ServiceActionInUnknownAction", ReadCapacity16(32, 0x11), sense::kInvalidFieldInCdb,
              32),

      // READ / WRITE range and transfer checks.
      {.name = "Read10OneBlock",
       .cdb = Cdb10(kRead10, 0, 2047, 1),
       .data_in = 512,
       .data_in_length = 512,
       .residual = 0},
      {.name = "Read12TwoBlocksIntoLargerBuffer",
       .cdb = Cdb12(kRead12, 0, 0, 2),
       .data_in = 4096,
       .data_in_length = 1024,
       .residual = 3072},
      Refused("Read10LbaOutOfRange", Cdb10(kRead10, 0, kBlocks, 1), sense::kLbaOutOfRange, 512),
      Refused("Read10RangeCrossesEnd", Cdb10(kRead10, 0, kBlocks - 1, 2), sense::kLbaOutOfRange,
              1024),
      Refused("Read16LbaPlusLengthWraps", Cdb16(kRead16, 0, ~uint64_t{0}, 1),
              sense::kLbaOutOfRange, 512),
      Overrun("Read16TransferBeyondBuffers", Cdb16(kRead16, 0, 0, 0xffffffff), 4096),
      Overrun("Read6ZeroMeans256Blocks", Cdb6(kRead6, 0, 0), 512),
      {.name = "Read10ZeroBlocksAtEnd", .cdb = Cdb10(kRead10, 0, kBlocks, 0), .data_in_length = 0},
      Refused("Read10RdProtect", Cdb10(kRead10, 0x20, 0, 1), sense::kInvalidFieldInCdb, 512),
      {.name = "Read10BeyondMaximumTransfer",
       .cdb = Cdb10(kRead10, 0, 0, 8),
       .data_in = 4096,
       .status = status::kCheckCondition,
       .sense = sense::kInvalidFieldInCdb,
       .disk = Disk::kSmallLimits},
      RefusedOut("Write10ReadOnly", Cdb10(kWrite10, 0, 0, 1), Zeroes(512), sense::kWriteProtected,
                 Disk::kReadOnly),
      Overrun("Write10WithDataInBuffer", Cdb10(kWrite10, 0, 0, 1), 512),
      Overrun("Write10ShortDataOut", Cdb10(kWrite10, 0, 0, 2), 0, Zeroes(512)),
      {.name = "Write10ExtraDataOutIsResidual",
       .cdb = Cdb10(kWrite10, 0, 0, 1),
       .data_out = Zeroes(1024),
       .residual = 512},

      // MODE SENSE variants.
      {.name = "ModeSense6AllPages",
       .cdb = ModeSense6(0, kAllPages, 0, 255),
       .data_in = 255,
       .data_in_length = 4 + 8 + 20 + 12,
       .check_data = StartsWith(43, 0x00, 0x10, 8, 0, 0, 0x08, 0x00, 0, 0, 0x02, 0x00, 0x08, 0x12,
                                0x04)},
      {.name = "ModeSense6AllPagesNoBlockDescriptor",
       .cdb = ModeSense6(kDisableBlockDescriptors, kAllPages, 0, 255),
       .data_in = 255,
       .data_in_length = 4 + 20 + 12,
       .check_data = StartsWith(35, 0x00, 0x10, 0, 0x08, 0x12, 0x04)},
      {.name = "ModeSense6ReadOnlySetsWriteProtect",
       .cdb = ModeSense6(kDisableBlockDescriptors, kAllPages, 0, 255),
       .data_in = 255,
       .check_data = ByteAt(2, 0x90),
       .disk = Disk::kReadOnly},
      {.name = "ModeSense6AllocationCutsHeader",
       .cdb = ModeSense6(0, 0x08, 0, 4),
       .data_in = 255,
       .data_in_length = 4,
       .residual = 251,
       .check_data = StartsWith(3 + 8 + 20, 0x00, 0x10, 8)},
      {.name = "ModeSense6AllSubpagesMeansNone",
       .cdb = ModeSense6(kDisableBlockDescriptors, 0x0a, 0xff, 255),
       .data_in = 255,
       .data_in_length = 4 + 12,
       .check_data = StartsWith(15, 0, 0x10, 0, 0x0a, 0x0a)},
      Refused("ModeSense6SavedValues", ModeSense6(0, kSaved | kAllPages, 0, 255),
              sense::kSavingParametersNotSupported, 255),
      {.name = "ModeSense6ChangeableCaching",
       .cdb = ModeSense6(kDisableBlockDescriptors, kChangeable | 0x08, 0, 255),
       .data_in = 255,
       .data_in_length = 4 + 20,
       .check_data = StartsWith(23, 0, 0x10, 0, 0x08, 0x12, 0x04, 0x00)},
      Refused("ModeSense6UnknownPage", ModeSense6(0, 0x1c, 0, 255), sense::kInvalidFieldInCdb,
              255),
      Refused("ModeSense6Subpage", ModeSense6(0, 0x08, 0x01, 255), sense::kInvalidFieldInCdb, 255),
      {.name = "ModeSense10LongLbaAcceptedSmallDisk",
       .cdb = ModeSense10(0x10, kAllPages, 512),
       .data_in = 512,
       .data_in_length = 8 + 8 + 20 + 12,
       .check_data = StartsWith(0, 46, 0, 0x10, 0x00, 0, 0, 8, 0, 0, 0x08, 0x00)},
      {.name = "ModeSense10ControlPage",
       .cdb = ModeSense10(kDisableBlockDescriptors, 0x0a, 512),
       .data_in = 512,
       .data_in_length = 8 + 12,
       .check_data = StartsWith(0, 18, 0, 0x10, 0, 0, 0, 0, 0x0a, 0x0a, 0x00, 0x10)},

      // MODE SELECT.
      {.name = "ModeSelect6SameValues",
       .cdb = ModeSelect6(0x10, 24),
       .data_out = CachingPageSelect(0x04),
       .residual = 0},
      RefusedOut("ModeSelect6SavePages", ModeSelect6(0x11, 24), CachingPageSelect(0x04),
                 sense::kInvalidFieldInCdb),
      RefusedOut("ModeSelect6ChangesFixedField", ModeSelect6(0x10, 24),
                 CachingPageSelect(0x04, 0x80), sense::kInvalidFieldInParameterList),
      RefusedOut("ModeSelect6TruncatedPage", ModeSelect6(0x10, 10), CachingPageSelect(0x04),
                 sense::kParameterListLengthError),
      RefusedOut("ModeSelect6UnknownPage", ModeSelect6(0x10, 8), {0, 0, 0, 0, 0x1c, 0x02, 0, 0},
                 sense::kInvalidFieldInParameterList),

      // REQUEST SENSE.
      {.name = "RequestSenseFixed",
       .cdb = {kRequestSense, 0, 0, 0, 18, 0},
       .data_in = 18,
       .data_in_length = 18,
       .check_data = StartsWith(0x70, 0, 0x00, 0, 0, 0, 0, 10)},
      {.name = "RequestSenseDescriptor",
       .cdb = {kRequestSense, 1, 0, 0, 252, 0},
       .data_in = 252,
       .data_in_length = 8,
       .check_data = StartsWith(0x72, 0x00, 0x00, 0x00)},

      // REPORT LUNS sizes and selections.
      {.name = "ReportLunsOneLun",
       .cdb = ReportLuns(0, 16),
       .data_in = 16,
       .data_in_length = 16,
       .check_data = StartsWith(0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
      {.name = "ReportLunsLargeAllocation",
       .cdb = ReportLuns(0, 4096),
       .data_in = 4096,
       .data_in_length = 16,
       .residual = 4080},
      Refused("ReportLunsAllocationUnder16", ReportLuns(0, 15), sense::kInvalidFieldInCdb, 16),
      {.name = "ReportLunsWithWellKnown",
       .cdb = ReportLuns(2, 32),
       .data_in = 32,
       .data_in_length = 24,
       .check_data = StartsWith(0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc1, 0x01)},
      Refused("ReportLunsBadSelect", ReportLuns(3, 16), sense::kInvalidFieldInCdb, 16),
      Overrun("ReportLunsBufferTooSmall", ReportLuns(0, 16), 8),

      // SYNCHRONIZE CACHE.
      {.name = "SynchronizeCache10", .cdb = Cdb10(kSynchronizeCache10, 0, 0, 0)},
      {.name = "SynchronizeCache16Range", .cdb = Cdb16(kSynchronizeCache16, 0, 100, 10)},
      Refused("SynchronizeCache16OutOfRange", Cdb16(kSynchronizeCache16, 0, kBlocks, 0),
              sense::kLbaOutOfRange),

      // UNMAP parameter lists.
      {.name = "UnmapEmptyList", .cdb = Unmap(0)},
      {.name = "UnmapTwoDescriptors",
       .cdb = Unmap(40),
       .data_out = UnmapList({{0, 8}, {100, 0}}),
       .residual = 0},
      RefusedOut("UnmapListShorterThanHeader", Unmap(6), Zeroes(6),
                 sense::kParameterListLengthError),
      RefusedOut("UnmapDescriptorLengthNotMultipleOf16", Unmap(24),
                 {0, 22, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0},
                 sense::kParameterListLengthError),
      RefusedOut("UnmapDataLengthBeyondList", Unmap(24), [] {
        auto list = UnmapList({{0, 1}});
        list[1] = 0x40;
        return list;
      }(), sense::kParameterListLengthError),
      RefusedOut("UnmapDescriptorOutOfRange", Unmap(24), UnmapList({{kBlocks - 1, 2}}),
                 sense::kLbaOutOfRange),
      RefusedOut("UnmapTooManyBlocks", Unmap(24), UnmapList({{0, 16}}),
                 sense::kInvalidFieldInParameterList, Disk::kSmallLimits),
      RefusedOut("UnmapAnchor", Unmap(24, 0x01), UnmapList({{0, 1}}), sense::kInvalidFieldInCdb),
      RefusedOut("UnmapNotSupported", Unmap(24), UnmapList({{0, 1}}), sense::kInvalidOpcode,
                 Disk::kNoUnmap),
      RefusedOut("UnmapReadOnly", Unmap(24), UnmapList({{0, 1}}), sense::kWriteProtected,
                 Disk::kReadOnly),

      // WRITE SAME flags.
      {.name = "WriteSame10Zeroes", .cdb = Cdb10(kWriteSame10, 0, 0, 16), .data_out = Zeroes(512)},
      {.name = "WriteSame16UnmapNoDataOut", .cdb = Cdb16(kWriteSame16, 0x09, 0, 16)},
      RefusedOut("WriteSame10ZeroBlocks", Cdb10(kWriteSame10, 0, 0, 0), Zeroes(512),
                 sense::kInvalidFieldInCdb),
      RefusedOut("WriteSame10Pbdata", Cdb10(kWriteSame10, 0x04, 0, 1), Zeroes(512),
                 sense::kInvalidFieldInCdb),
      RefusedOut("WriteSame10Lbdata", Cdb10(kWriteSame10, 0x02, 0, 1), Zeroes(512),
                 sense::kInvalidFieldInCdb),
      RefusedOut("WriteSame16Anchor", Cdb16(kWriteSame16, 0x18, 0, 1), Zeroes(512),
                 sense::kInvalidFieldInCdb),
      RefusedOut("WriteSame10ReadOnly", Cdb10(kWriteSame10, 0x08, 0, 1), Zeroes(512),
                 sense::kWriteProtected, Disk::kReadOnly),
      RefusedOut("WriteSame16OutOfRange", Cdb16(kWriteSame16, 0, kBlocks - 4, 8), Zeroes(512),
                 sense::kLbaOutOfRange),
      RefusedOut("WriteSame16BeyondMaximumLength", Cdb16(kWriteSame16, 0, 0, 64), Zeroes(512),
                 sense::kInvalidFieldInCdb, Disk::kSmallLimits),
      Overrun("WriteSame10WithoutDataOut", Cdb10(kWriteSame10, 0, 0, 1), 0),

      // VERIFY.
      {.name = "Verify10RangeCheckOnly", .cdb = Cdb10(kVerify10, 0, 0, 2048)},
      Refused("Verify10ReservedByteCheck", Cdb10(kVerify10, 0x04, 0, 1),
              sense::kInvalidFieldInCdb),
      Refused("Verify16OutOfRange", Cdb16(kVerify16, 0, kBlocks, 1), sense::kLbaOutOfRange),

      // Sense buffer sizes.
      {.name = "SenseTruncatedToCapacity",
       .cdb = {0x02, 0, 0, 0, 0, 0},
       .status = status::kCheckCondition,
       .sense = {0xff, 0xff, 0xff},  // too short to hold ASC: checked below
       .sense_capacity = 8},
      {.name = "NoSenseBuffer",
       .cdb = {0x02, 0, 0, 0, 0, 0},
       .status = status::kCheckCondition,
       .sense = {0xff, 0xff, 0xff},
       .sense_capacity = 0},

      // LUN routing: absent LUNs and the REPORT LUNS well-known LUN.
      {.name = "AbsentLunInquiry",
       .cdb = Inquiry(false, 0, 36),
       .data_in = 36,
       .data_in_length = 36,
       .check_data = StartsWith(0x7f, 0x00, 0x05),
       .lun = kAbsentLun},
      {.name = "AbsentLunTestUnitReady",
       .cdb = {kTestUnitReady, 0, 0, 0, 0, 0},
       .status = status::kCheckCondition,
       .sense = sense::kLunNotSupported,
       .lun = kAbsentLun},
      {.name = "AbsentLunRead",
       .cdb = Cdb10(kRead10, 0, 0, 1),
       .data_in = 512,
       .status = status::kCheckCondition,
       .sense = sense::kLunNotSupported,
       .data_in_length = 0,
       .lun = kAbsentLun},
      {.name = "AbsentLunRequestSense",
       .cdb = {kRequestSense, 0, 0, 0, 18, 0},
       .data_in = 18,
       .data_in_length = 18,
       .check_data = StartsWith(0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x25, 0x00),
       .lun = kAbsentLun},
      {.name = "AbsentLunReportLuns",
       .cdb = ReportLuns(0, 16),
       .data_in = 16,
       .data_in_length = 16,
       .lun = kAbsentLun},
      {.name = "WellKnownLunReportLuns",
       .cdb = ReportLuns(0, 64),
       .data_in = 64,
       .data_in_length = 16,
       .lun = kWellKnownLun},
      {.name = "WellKnownLunInquiry",
       .cdb = Inquiry(false, 0, 36),
       .data_in = 36,
       .data_in_length = 36,
       .check_data = StartsWith(0x1e),
       .lun = kWellKnownLun},
      {.name = "WellKnownLunRead",
       .cdb = Cdb10(kRead10, 0, 0, 1),
       .data_in = 512,
       .status = status::kCheckCondition,
       .sense = sense::kInvalidOpcode,
       .lun = kWellKnownLun},
  };
  return cases;
}

std::unique_ptr<ScsiHarness> HarnessFor(Disk disk) {
  ScsiDiskOptions options;
  bool read_only = false;
  switch (disk) {
    case Disk::kDefault:
      break;
    case Disk::kReadOnly:
      read_only = true;
      break;
    case Disk::kNoUnmap:
      options.unmap = false;
      break;
    case Disk::kLargeBlocks:
      options.block_size = 4096;
      break;
    case Disk::kSerial:
      options.serial = "SN-12345";
      break;
    case Disk::kSmallLimits:
      options.max_transfer_bytes = 4 * 512;
      options.max_unmap_bytes = 8 * 512;
      break;
  }
  return std::make_unique<ScsiHarness>(options, kDiskBytes, read_only);
}

class CdbTableTest : public ::testing::TestWithParam<CdbCase> {};

TEST_P(CdbTableTest, Answers) {
  const CdbCase& c = GetParam();
  auto harness = HarnessFor(c.disk);
  const Exchange exchange = harness->Run(c.cdb, {.data_in_capacity = c.data_in,
                                                 .data_out = c.data_out,
                                                 .sense_capacity = c.sense_capacity,
                                                 .lun = c.lun});
  const ScsiResult& result = exchange.result;
  EXPECT_EQ(result.response, c.response);
  EXPECT_EQ(result.status, c.status);
  if (c.status == status::kCheckCondition) {
    const uint32_t expected_sense = std::min<uint32_t>(c.sense_capacity, kFixedSenseLength);
    EXPECT_EQ(result.sense_length, expected_sense);
    if (expected_sense > 0) {
      EXPECT_EQ(result.sense[0], 0x70);
    }
    if (c.sense != SenseCode{0xff, 0xff, 0xff}) {
      const SenseCode got = exchange.sense();
      EXPECT_EQ(got, c.sense) << "got " << int{got.key} << "/" << int{got.asc} << "/"
                              << int{got.ascq};
    }
  } else {
    EXPECT_EQ(result.sense_length, 0);
  }
  if (c.data_in_length) {
    EXPECT_EQ(result.data_in_length, *c.data_in_length);
  }
  if (c.residual) {
    EXPECT_EQ(result.residual, *c.residual);
  }
  // The residual rule holds for every case.
  if (c.data_in > 0) {
    EXPECT_EQ(result.residual, c.data_in - result.data_in_length);
  }
  if (c.check_data) c.check_data(exchange.written());
}

INSTANTIATE_TEST_SUITE_P(Commands, CdbTableTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<CdbCase>& info) {
                           return info.param.name;
                         });

TEST(CdbTableSizeTest, HasAtLeastThirtyCases) { EXPECT_GE(Cases().size(), 30u); }

}  // namespace
}  // namespace kvmini::hw::scsi::testing

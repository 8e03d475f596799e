// virtio-scsi through the whole device path in a host process (driver ->
// virtio-mmio registers and rings -> VirtioScsi -> hw/scsi disk -> the real
// BlockBackend over an image file, unless a test needs the memory one):
// config space, request queues (LUN addressing, sense and residual
// handling, data on the image), control queue (TMFs on an idle device,
// asynchronous notification), event queue, counters and reset.
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/scsi_test_support.h"

namespace kvmini::test {
namespace {

namespace mmio = hw::virtio::mmio;
namespace sense = hw::scsi::sense;
namespace scsi_status = hw::scsi::status;
namespace response = vs::response;
namespace tmf = vs::tmf;
using hw::scsi::LoadBigEndian32;
using hw::scsi::LoadBigEndian64;

TEST_F(ScsiDeviceTest, ConfigSpaceHasTheDocumentedValues) {
  ScsiTestbedOptions options;
  options.scsi.num_request_queues = 3;
  options.scsi.queue_size = 64;
  auto testbed = ScsiTestbed::Create(options);
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  EXPECT_EQ(driver().Read32(mmio::kDeviceId), vs::kDeviceId);
  EXPECT_EQ(driver().device_features(), hw::virtio::feature::kVersion1 |
                                            hw::virtio::feature::kRingIndirectDesc |
                                            hw::virtio::feature::kRingEventIdx)
      << "no virtio-scsi feature is offered";
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kNumQueues), 3u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kSegMax), 62u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kMaxSectors), (8u << 20) / 512)
      << "the disk's largest transfer (VPD B0), in 512-byte sectors";
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kCmdPerLun), 64u) << "clamped to the queue size";
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kEventInfoSize), 16u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kSenseSize), 96u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kCdbSize), 32u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kMaxChannel), 0u)
      << "max_channel and max_target (both 16-bit) read as one word";
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kMaxLun), 16383u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kSize), 0u) << "beyond the config space";
  // Five queues: control, event, three request queues.
  driver().Write32(mmio::kQueueSel, 4);
  EXPECT_EQ(driver().Read32(mmio::kQueueNumMax), 64u);
  driver().Write32(mmio::kQueueSel, 5);
  EXPECT_EQ(driver().Read32(mmio::kQueueNumMax), 0u);
}

TEST_F(ScsiDeviceTest, DriverWritesSenseAndCdbSizeAndResetRestoresThem) {
  StartDevice({}, 1, 64, /*cdb_size=*/16, /*sense_size=*/40);
  EXPECT_EQ(device().cdb_size(), 16u);
  EXPECT_EQ(device().sense_size(), 40u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kSenseSize), 40u);
  // Read-only fields ignore writes; a byte write changes one byte.
  scsi().WriteConfig32(vs::config::kNumQueues, 9);
  scsi().WriteConfig32(vs::config::kMaxLun, 1);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kNumQueues), 1u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kMaxLun), 16383u);
  const uint8_t byte = 0x20;
  testbed_->transport().Write(mmio::kConfig + vs::config::kSenseSize + 1, std::span(&byte, 1));
  EXPECT_EQ(device().sense_size(), 0x2028u);
  // Values QEMU calls invalid are refused; the old value stays.
  scsi().WriteConfig32(vs::config::kSenseSize, 65536);
  scsi().WriteConfig32(vs::config::kCdbSize, 256);
  EXPECT_EQ(device().sense_size(), 0x2028u);
  EXPECT_EQ(device().cdb_size(), 16u);
  driver().Reset();
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kSenseSize), 96u);
  EXPECT_EQ(scsi().ReadConfig32(vs::config::kCdbSize), 32u);
}

TEST_F(ScsiDeviceTest, InquiryAnswersWithStandardDataAndResidual) {
  StartDevice();
  ScsiResponse answer =
      Run({.tag = 7, .cdb = scsi_cdb::Inquiry(false, 0, 96), .data_in_length = 100});
  EXPECT_EQ(answer.response, response::kOk);
  EXPECT_EQ(answer.status, scsi_status::kGood);
  EXPECT_EQ(answer.sense_length, 0u);
  EXPECT_EQ(answer.residual, 100u - 36u);
  EXPECT_EQ(answer.used_length, 12u + 96u + 36u) << "response header + data written";
  EXPECT_EQ(answer.data_in[0], 0x00) << "direct-access device";
  EXPECT_EQ(answer.data_in[2], 0x05) << "SPC-3";
  EXPECT_EQ(std::string(answer.data_in.begin() + 8, answer.data_in.begin() + 16), "KVMINI  ");
  // The unit serial page carries the configured serial.
  answer = Run({.cdb = scsi_cdb::Inquiry(true, 0x80, 255), .data_in_length = 255});
  ASSERT_EQ(answer.status, scsi_status::kGood);
  const std::string serial = "kvmini-scsi-serial";
  EXPECT_EQ(std::string(answer.data_in.begin() + 4, answer.data_in.begin() + 4 + serial.size()),
            serial);
}

TEST_F(ScsiDeviceTest, ReadCapacityReportsTheImageSize) {
  ScsiTestbedOptions options;
  options.image_bytes = 24 << 20;
  StartDevice(options);
  ScsiResponse answer = Run({.cdb = scsi_cdb::ReadCapacity16(32), .data_in_length = 32});
  ASSERT_EQ(answer.status, scsi_status::kGood);
  EXPECT_EQ(LoadBigEndian64(&answer.data_in[0]), (24u << 20) / 512 - 1);
  EXPECT_EQ(LoadBigEndian32(&answer.data_in[8]), 512u);
  EXPECT_EQ(answer.residual, 0u);
}

TEST_F(ScsiDeviceTest, WritesReachTheImageAndReadsReturnThem) {
  ScsiTestbedOptions options;
  options.scsi.num_request_queues = 2;
  StartDevice(options, 2, 128);
  for (uint16_t queue = 0; queue < 2; ++queue) {
    for (bool indirect : {false, true}) {
      const uint32_t lba = 64 * queue + (indirect ? 16 : 0);
      const std::vector<uint8_t> data = ScsiPattern(8192, static_cast<uint8_t>(lba));
      ScsiResponse write = Run({.cdb = Write10(lba, 16), .data_out = data,
                                .segment_size = 1536, .indirect = indirect},
                               queue);
      ASSERT_EQ(write.response, response::kOk);
      ASSERT_EQ(write.status, scsi_status::kGood);
      EXPECT_EQ(write.residual, 0u);
      EXPECT_EQ(write.used_length, 108u) << "a write writes only the response header";
      EXPECT_EQ(ReadImage(testbed_->image_path(), uint64_t{lba} * 512, data.size()), data);
      ScsiResponse read = Run({.cdb = scsi_cdb::Cdb16(opcode::kRead16, 0, lba, 16),
                               .data_in_length = 8192, .segment_size = 1000,
                               .indirect = indirect},
                              queue);
      ASSERT_EQ(read.status, scsi_status::kGood);
      EXPECT_EQ(read.data_in, data);
      EXPECT_EQ(read.used_length, 108u + 8192u);
    }
  }
  const hw::virtio::VirtioScsiStats stats = device().stats();
  EXPECT_EQ(stats.completed, 8u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.bytes_written, 4u * 8192u);
  EXPECT_EQ(stats.bytes_read, 4u * 8192u);
  EXPECT_EQ(stats.errors, 0u);
}

struct LunCase {
  const char* name;
  std::array<uint8_t, 8> lun;
  std::vector<uint8_t> cdb;
  uint8_t response;
  uint8_t status;
  hw::scsi::SenseCode sense;  // with CHECK CONDITION
};

TEST_F(ScsiDeviceTest, LunAddressing) {
  StartDevice();
  const std::array<uint8_t, 8> flat_lun0 = Lun(0, 0);
  const std::array<uint8_t, 8> peripheral_lun0 = {1, 0, 0, 0, 0, 0, 0, 0};
  const std::array<uint8_t, 8> no_first_byte = {0, 0, 0x40, 0, 0, 0, 0, 0};
  const std::array<uint8_t, 8> report_luns_wlun = {1, 0, 0xc1, 0x01, 0, 0, 0, 0};
  const LunCase cases[] = {
      {"FlatLun0", flat_lun0, TestUnitReady(), response::kOk, scsi_status::kGood, {}},
      {"PeripheralLun0", peripheral_lun0, TestUnitReady(), response::kOk, scsi_status::kGood, {}},
      {"FirstByteNotOne", no_first_byte, TestUnitReady(), response::kBadTarget, 0, {}},
      {"Target1", Lun(1, 0), TestUnitReady(), response::kBadTarget, 0, {}},
      {"Target255", Lun(255, 0), scsi_cdb::Inquiry(false, 0, 36), response::kBadTarget, 0, {}},
      {"AbsentLunTestUnitReady", Lun(0, 1), TestUnitReady(), response::kOk,
       scsi_status::kCheckCondition, sense::kLunNotSupported},
      {"AbsentLunRead", Lun(0, 300), Read10(0, 1), response::kOk, scsi_status::kCheckCondition,
       sense::kLunNotSupported},
      {"WellKnownLunRead", report_luns_wlun, Read10(0, 1), response::kOk,
       scsi_status::kCheckCondition, sense::kInvalidOpcode},
  };
  for (const LunCase& c : cases) {
    SCOPED_TRACE(c.name);
    const bool reads = c.cdb[0] == opcode::kRead10 || c.cdb[0] == opcode::kInquiry;
    ScsiResponse answer =
        Run({.lun = c.lun, .cdb = c.cdb, .data_in_length = reads ? 512u : 0u});
    EXPECT_EQ(answer.response, c.response);
    if (c.response != response::kOk) {
      EXPECT_EQ(answer.used_length, 12u) << "only the fixed response bytes";
      EXPECT_EQ(answer.residual, reads ? 512u : 0u) << "nothing was transferred";
      continue;
    }
    EXPECT_EQ(answer.status, c.status);
    if (c.status == scsi_status::kCheckCondition) {
      EXPECT_EQ(SenseOf(answer), c.sense);
    }
  }
  // INQUIRY to an absent LUN: peripheral qualifier 3, type 0x1f.
  ScsiResponse inquiry =
      Run({.lun = Lun(0, 5), .cdb = scsi_cdb::Inquiry(false, 0, 36), .data_in_length = 36});
  EXPECT_EQ(inquiry.status, scsi_status::kGood);
  EXPECT_EQ(inquiry.data_in[0], 0x7f);
  // REPORT LUNS, through LUN 0 and through the well-known LUN: just LUN 0.
  for (const auto& lun : {flat_lun0, report_luns_wlun}) {
    ScsiResponse luns =
        Run({.lun = lun, .cdb = scsi_cdb::ReportLuns(0, 64), .data_in_length = 64});
    ASSERT_EQ(luns.status, scsi_status::kGood);
    EXPECT_EQ(LoadBigEndian32(&luns.data_in[0]), 8u);
    EXPECT_EQ(std::vector<uint8_t>(luns.data_in.begin() + 8, luns.data_in.begin() + 16),
              std::vector<uint8_t>(8, 0));
    EXPECT_EQ(luns.residual, 64u - 16u);
  }
}

// sense_size decides the response layout and how much sense fits.
TEST_F(ScsiDeviceTest, SenseIsCutToTheNegotiatedSenseSize) {
  for (uint32_t sense_size : {0u, 8u, 18u, 96u, 200u}) {
    SCOPED_TRACE(sense_size);
    testbed_.reset();
    StartDevice({}, 1, 16, vs::kDefaultCdbSize, sense_size);
    ScsiResponse answer = Run({.cdb = {0xc7, 0, 0, 0, 0, 0}});  // a vendor-specific opcode
    EXPECT_EQ(answer.response, response::kOk);
    EXPECT_EQ(answer.status, scsi_status::kCheckCondition);
    EXPECT_EQ(answer.sense_length, std::min(sense_size, 18u));
    EXPECT_EQ(answer.used_length, 12 + sense_size);
    if (sense_size >= 14) {
      EXPECT_EQ(SenseOf(answer), sense::kInvalidOpcode);
    }
    if (sense_size >= 3) {
      EXPECT_EQ(answer.sense[2] & 0x0f, 0x05);
    }
    // Data-in follows the response header wherever sense_size puts it.
    ScsiResponse read = Run({.cdb = Read10(0, 1), .data_in_length = 512});
    EXPECT_EQ(read.status, scsi_status::kGood);
    EXPECT_EQ(read.used_length, 12 + sense_size + 512);
  }
}

TEST_F(ScsiDeviceTest, CdbSizeDecidesTheHeaderLayout) {
  const std::vector<uint8_t> data = ScsiPattern(1024, 3);
  for (uint32_t cdb_size : {16u, 32u, 64u, 200u}) {
    SCOPED_TRACE(cdb_size);
    testbed_.reset();
    StartDevice({}, 1, 16, cdb_size);
    // Data-out starts right after 19 + cdb_size bytes of header.
    ScsiResponse write = Run({.cdb = scsi_cdb::Cdb16(opcode::kWrite16, 0, 8, 2),
                              .data_out = data});
    ASSERT_EQ(write.status, scsi_status::kGood);
    ScsiResponse read = Run({.cdb = scsi_cdb::Cdb16(opcode::kRead16, 0, 8, 2),
                             .data_in_length = 1024});
    EXPECT_EQ(read.data_in, data);
  }
  // A cdb_size too small for the command: the CDB arrives cut, the disk
  // cannot parse it.
  testbed_.reset();
  StartDevice({}, 1, 16, /*cdb_size=*/6);
  ScsiResponse cut = Run({.cdb = Read10(0, 1), .data_in_length = 512});
  EXPECT_EQ(cut.response, response::kOk);
  EXPECT_EQ(cut.status, scsi_status::kCheckCondition);
  EXPECT_EQ(SenseOf(cut), sense::kInvalidOpcode);
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood) << "6 bytes are enough";
  // No CDB at all: nothing to parse, still an answer.
  testbed_.reset();
  StartDevice({}, 1, 16, /*cdb_size=*/0);
  ScsiResponse empty = Run({.cdb = TestUnitReady()});
  EXPECT_EQ(empty.response, response::kOk);
  EXPECT_EQ(empty.status, scsi_status::kCheckCondition);
  EXPECT_EQ(SenseOf(empty), sense::kInvalidOpcode);
}

TEST_F(ScsiDeviceTest, OverrunAndResidual) {
  StartDevice();
  // READ of 8 blocks into 2 KiB: nothing runs, OVERRUN.
  ScsiResponse overrun = Run({.cdb = Read10(0, 8), .data_in_length = 2048});
  EXPECT_EQ(overrun.response, response::kOverrun);
  EXPECT_EQ(overrun.residual, 2048u);
  // WRITE of 4 blocks with 1 KiB of data-out.
  overrun = Run({.cdb = Write10(0, 4), .data_out = ScsiPattern(1024, 1)});
  EXPECT_EQ(overrun.response, response::kOverrun);
  // A READ with a larger buffer than needed: the rest is residual.
  ScsiResponse read = Run({.cdb = Read10(0, 2), .data_in_length = 4096});
  EXPECT_EQ(read.response, response::kOk);
  EXPECT_EQ(read.residual, 4096u - 1024u);
  EXPECT_EQ(read.used_length, 108u + 1024u);
  // Allocation length smaller than the data: cut, no residual beyond the buffer.
  ScsiResponse inquiry = Run({.cdb = scsi_cdb::Inquiry(false, 0, 20), .data_in_length = 20});
  EXPECT_EQ(inquiry.status, scsi_status::kGood);
  EXPECT_EQ(inquiry.residual, 0u);
  EXPECT_EQ(inquiry.used_length, 108u + 20u);
  EXPECT_EQ(device().stats().errors, 2u) << "the two overruns";
}

TEST_F(ScsiDeviceTest, ReadOnlyDiskRefusesWritesWithDataProtect) {
  ScsiTestbedOptions options;
  options.block.read_only = true;
  StartDevice(options);
  ScsiResponse write = Run({.cdb = Write10(0, 1), .data_out = ScsiPattern(512, 9)});
  EXPECT_EQ(write.status, scsi_status::kCheckCondition);
  EXPECT_EQ(SenseOf(write), sense::kWriteProtected);
  EXPECT_EQ(ReadImage(testbed_->image_path(), 0, 512), std::vector<uint8_t>(512, 0));
  EXPECT_EQ(device().stats().bytes_written, 0u);
  EXPECT_EQ(device().stats().errors, 1u);
}

TEST_F(ScsiDeviceTest, AsynchronousNotificationIsAnsweredWithNoEvents) {
  StartDevice();
  for (uint32_t type : {vs::kControlAnQuery, vs::kControlAnSubscribe}) {
    absl::StatusOr<ControlResponse> answer = scsi().RunNotification(type, Lun(0, 0), 0x7e);
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->response, response::kOk);
    EXPECT_EQ(answer->event_actual, 0u);
    EXPECT_EQ(answer->used_length, vs::kAnResponseSize);
  }
}

TEST_F(ScsiDeviceTest, TaskManagementOnAnIdleDevice) {
  StartDevice();
  EXPECT_EQ(Tmf(tmf::kAbortTask, Lun(0, 0), 1234), response::kFunctionComplete)
      << "no such task: nothing left to abort";
  EXPECT_EQ(Tmf(tmf::kAbortTaskSet), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kClearTaskSet), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kQueryTask, Lun(0, 0), 1234), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kQueryTaskSet), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kITNexusReset), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kClearAca), response::kFunctionRejected);
  EXPECT_EQ(Tmf(99), response::kFunctionRejected);
  EXPECT_EQ(Tmf(tmf::kLogicalUnitReset, Lun(1, 0)), response::kBadTarget);
  EXPECT_EQ(Tmf(tmf::kAbortTask, {0, 0, 0x40, 0, 0, 0, 0, 0}), response::kBadTarget);
  EXPECT_EQ(Tmf(tmf::kLogicalUnitReset, Lun(0, 3)), response::kIncorrectLun);
  EXPECT_EQ(Tmf(tmf::kQueryTask, Lun(0, 3)), response::kIncorrectLun);
  EXPECT_EQ(device().stats().task_management, 12u);

  // A LOGICAL UNIT RESET leaves a unit attention for the next command.
  EXPECT_EQ(Tmf(tmf::kLogicalUnitReset), response::kFunctionComplete);
  ScsiResponse attention = Run({.cdb = TestUnitReady()});
  EXPECT_EQ(attention.status, scsi_status::kCheckCondition);
  EXPECT_EQ(SenseOf(attention), sense::kPowerOnReset);
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood);
}

TEST_F(ScsiDeviceTest, EventBuffersAreHeldAndDoNotBlockAReset) {
  StartDevice();
  ASSERT_TRUE(scsi().PostEventBuffers(8).ok());
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood);
  testbed_->transport().StopDataplaneAndWait();  // a dataplane move must not wait for them
  testbed_->transport().StartDataplaneAndWait();
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood);
  EXPECT_EQ(driver().queue(vs::kEventQueue).used_index(), 0) << "no event to report";
  EXPECT_EQ(testbed_->transport().dataplane_status().in_flight, 0u);
  driver().Reset();  // returns: the held buffers are not in flight
  EXPECT_EQ(driver().status(), 0);
  ASSERT_TRUE(scsi().Start(kLinuxScsiFeatures, 1, 128).ok());
  EXPECT_NE(Run({.cdb = TestUnitReady()}).response, 0xff);
}

TEST_F(ScsiDeviceTest, DeviceResetRaisesAUnitAttentionAndRestoresModePages) {
  StartDevice();
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood)
      << "a fresh device has nothing to report";
  ASSERT_TRUE(device().disk().write_cache_enabled());
  // Clear WCE through MODE SELECT(6) of the caching page.
  std::vector<uint8_t> caching(4 + 20, 0);
  caching[4] = 0x08;
  caching[5] = 0x12;
  ScsiResponse select =
      Run({.cdb = scsi_cdb::ModeSelect6(0x10, static_cast<uint8_t>(caching.size())),
           .data_out = caching});
  ASSERT_EQ(select.status, scsi_status::kGood) << int(SenseOf(select).asc);
  EXPECT_FALSE(device().disk().write_cache_enabled());

  ASSERT_TRUE(scsi().Start(kLinuxScsiFeatures, 1, 128).ok());  // resets the device first
  EXPECT_TRUE(device().disk().write_cache_enabled());
  ScsiResponse attention = Run({.cdb = Read10(0, 1), .data_in_length = 512});
  EXPECT_EQ(attention.status, scsi_status::kCheckCondition);
  EXPECT_EQ(SenseOf(attention), sense::kPowerOnReset);
  EXPECT_EQ(Run({.cdb = Read10(0, 1), .data_in_length = 512}).status, scsi_status::kGood);
}

TEST_F(ScsiDeviceTest, CreateRefusesBadOptions) {
  const auto create = [](ScsiTestbedOptions options) {
    return ScsiTestbed::Create(std::move(options)).status();
  };
  ScsiTestbedOptions options;
  options.scsi.num_request_queues = 0;
  EXPECT_THAT(create(options).message(), ::testing::HasSubstr("queues=0 is outside 1..64"));
  options.scsi.num_request_queues = 65;
  EXPECT_THAT(create(options).message(), ::testing::HasSubstr("queues=65"));
  options.scsi.num_request_queues = 1;
  options.scsi.queue_size = 100;
  EXPECT_THAT(create(options).message(), ::testing::HasSubstr("queue size 100"));
  options.scsi.queue_size = 128;
  options.scsi.disk.serial = std::string(40, 's');
  absl::Status status = create(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), ::testing::HasSubstr("virtio-scsi 'sda'"));
  EXPECT_THAT(status.message(), ::testing::HasSubstr("serial"));
}

}  // namespace
}  // namespace kvmini::test

// ScsiDisk data path and task management over the in-memory backend: what
// reaches the backend for each command, error mapping, FUA and write-cache
// flushes, and aborts/resets with requests held in flight.
#include <cerrno>
#include <numeric>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "scsi_cdb_builders.h"
#include "scsi_test_harness.h"

namespace kvmini::hw::scsi::testing {
namespace {

using Operation = MemoryBlockBackend::Operation;
using Response = ScsiResult::Response;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::vector<uint8_t> Pattern(size_t length, uint8_t seed) {
  std::vector<uint8_t> bytes(length);
  for (size_t i = 0; i < length; ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7);
  return bytes;
}

std::vector<uint8_t> ImageBytes(ScsiHarness& harness, uint64_t offset, uint64_t length) {
  const auto& bytes = harness.memory().bytes();
  return {bytes.begin() + offset, bytes.begin() + offset + length};
}

void ExpectGood(const Exchange& exchange) {
  EXPECT_EQ(exchange.result.response, Response::kCompleted);
  EXPECT_EQ(exchange.result.status, status::kGood)
      << "sense " << int{exchange.sense().key} << "/" << int{exchange.sense().asc};
}

void ExpectSense(const Exchange& exchange, SenseCode code) {
  EXPECT_EQ(exchange.result.status, status::kCheckCondition);
  EXPECT_EQ(exchange.sense(), code);
}

TEST(ScsiDiskIoTest, WriteThenReadRoundTrips) {
  ScsiHarness harness;
  const auto data = Pattern(4 * 512, 3);
  ExpectGood(harness.Run(Cdb10(opcode::kWrite10, 0, 10, 4), {.data_out = data}));
  EXPECT_EQ(ImageBytes(harness, 10 * 512, data.size()), data);
  const Exchange read = harness.Run(Cdb16(opcode::kRead16, 0, 10, 4), {.data_in_capacity = 2048});
  ExpectGood(read);
  EXPECT_EQ(read.result.data_in_length, 2048u);
  EXPECT_EQ(read.data_in, data);
}

TEST(ScsiDiskIoTest, SixAndTwelveByteCommandsAddressTheSameBlocks) {
  ScsiHarness harness({}, 64 << 20);  // room for a 21-bit LBA using CDB byte 1
  const auto data = Pattern(512, 9);
  ExpectGood(harness.Run(Cdb6(opcode::kWrite6, 0x12345, 1), {.data_out = data}));
  EXPECT_EQ(ImageBytes(harness, 0x12345ull * 512, 512), data);
  const Exchange read =
      harness.Run(Cdb12(opcode::kRead12, 0, 0x12345, 1), {.data_in_capacity = 512});
  EXPECT_EQ(read.data_in, data);
}

TEST(ScsiDiskIoTest, ReadScattersIntoSeveralBuffers) {
  ScsiHarness harness;
  const auto image = Pattern(1024, 1);
  std::copy(image.begin(), image.end(), harness.memory().bytes().begin());
  std::vector<uint8_t> first(100, 0), second(700, 0), third(400, 0xcc);
  ScsiRequest request;
  request.SetCdb(Cdb10(opcode::kRead10, 0, 0, 2));
  request.data_in = {
      {first.data(), first.size()}, {second.data(), second.size()}, {third.data(), third.size()}};
  ScsiResult result;
  int completions = 0;
  harness.disk().Submit(std::move(request), [&](const ScsiResult& r) {
    result = r;
    ++completions;
  });
  harness.Settle();
  ASSERT_EQ(completions, 1);
  EXPECT_EQ(result.data_in_length, 1024u);
  EXPECT_EQ(result.residual, 1200u - 1024u);
  std::vector<uint8_t> joined(first);
  joined.insert(joined.end(), second.begin(), second.end());
  joined.insert(joined.end(), third.begin(), third.begin() + 224);
  EXPECT_EQ(joined, image);
  EXPECT_EQ(third[224], 0xcc) << "bytes past the transfer must stay untouched";
}

TEST(ScsiDiskIoTest, LargeLogicalBlocksScaleOffsets) {
  ScsiHarness harness({.block_size = 4096}, 1 << 20);
  const auto data = Pattern(4096, 5);
  ExpectGood(harness.Run(Cdb10(opcode::kWrite10, 0, 3, 1), {.data_out = data}));
  EXPECT_EQ(ImageBytes(harness, 3 * 4096, 4096), data);
}

TEST(ScsiDiskIoTest, ForceUnitAccessFlushesAfterTheWrite) {
  ScsiHarness harness;
  ExpectGood(harness.Run(Cdb10(opcode::kWrite10, 0, 0, 1), {.data_out = Pattern(512, 0)}));
  EXPECT_EQ(harness.memory().count(Operation::kFlush), 0u);
  ExpectGood(harness.Run(Cdb10(opcode::kWrite10, 0x08, 0, 1), {.data_out = Pattern(512, 0)}));
  EXPECT_EQ(harness.memory().count(Operation::kWrite), 2u);
  EXPECT_EQ(harness.memory().count(Operation::kFlush), 1u);
}

TEST(ScsiDiskIoTest, ClearingWriteCacheMakesWritesWriteThroughUntilReset) {
  ScsiHarness harness;
  std::vector<uint8_t> select = {0, 0, 0, 0, 0x08, 0x12, 0x00};  // WCE = 0
  select.resize(24, 0);
  ExpectGood(harness.Run(ModeSelect6(0x10, 24), {.data_out = select}));
  EXPECT_FALSE(harness.disk().write_cache_enabled());
  const Exchange sense = harness.Run(ModeSense6(0x08, 0x08, 0, 255), {.data_in_capacity = 255});
  EXPECT_EQ(sense.data_in[4 + 2] & 0x04, 0) << "MODE SENSE must show WCE cleared";

  ExpectGood(harness.Run(Cdb10(opcode::kWrite10, 0, 0, 1), {.data_out = Pattern(512, 0)}));
  EXPECT_EQ(harness.memory().count(Operation::kFlush), 1u);

  bool reset_done = false;
  harness.disk().Reset([&] { reset_done = true; });
  EXPECT_TRUE(reset_done);
  EXPECT_TRUE(harness.disk().write_cache_enabled());
}

TEST(ScsiDiskIoTest, SynchronizeCacheFlushes) {
  ScsiHarness harness;
  ExpectGood(harness.Run(Cdb10(opcode::kSynchronizeCache10, 0, 0, 0)));
  ExpectGood(harness.Run(Cdb16(opcode::kSynchronizeCache16, 0, 0, 16)));
  EXPECT_EQ(harness.memory().count(Operation::kFlush), 2u);
}

TEST(ScsiDiskIoTest, WriteSameRepeatsThePatternInChunks) {
  ScsiHarness harness({}, 4 << 20);
  std::fill(harness.memory().bytes().begin(), harness.memory().bytes().end(), 0x11);
  const auto block = Pattern(512, 42);
  constexpr uint32_t kBlocks = 3000;  // 1.5 MiB: more than one chunk
  ExpectGood(harness.Run(Cdb16(opcode::kWriteSame16, 0, 8, kBlocks), {.data_out = block}));
  EXPECT_EQ(harness.memory().count(Operation::kWrite), 2u);
  for (uint32_t i = 0; i < kBlocks; ++i) {
    ASSERT_EQ(ImageBytes(harness, (8 + i) * 512ull, 512), block) << "block " << 8 + i;
  }
  EXPECT_EQ(harness.memory().bytes()[8 * 512 - 1], 0x11);
  EXPECT_EQ(harness.memory().bytes()[(8 + kBlocks) * 512ull], 0x11);
}

TEST(ScsiDiskIoTest, WriteSameOfZeroesWritesZeroesAndUnmapsOnlyWhenAsked) {
  ScsiHarness harness;
  std::fill(harness.memory().bytes().begin(), harness.memory().bytes().end(), 0x11);
  ExpectGood(
      harness.Run(Cdb10(opcode::kWriteSame10, 0, 4, 2), {.data_out = std::vector<uint8_t>(512)}));
  EXPECT_EQ(harness.memory().count(Operation::kWriteZeroes), 1u);
  EXPECT_TRUE(harness.memory().unmapped().empty());
  EXPECT_EQ(ImageBytes(harness, 4 * 512, 1024), std::vector<uint8_t>(1024, 0));

  ExpectGood(harness.Run(Cdb10(opcode::kWriteSame10, 0x08, 100, 8),
                         {.data_out = std::vector<uint8_t>(512)}));
  ExpectGood(harness.Run(Cdb16(opcode::kWriteSame16, 0x09, 200, 8)));  // UNMAP + NDOB
  EXPECT_THAT(harness.memory().unmapped(),
              ElementsAre(Pair(100 * 512, 8 * 512), Pair(200 * 512, 8 * 512)));
  EXPECT_EQ(harness.memory().count(Operation::kWrite), 0u);
}

TEST(ScsiDiskIoTest, WriteSameUnmapOnDiskWithoutUnmapOnlyZeroes) {
  ScsiHarness harness({.unmap = false});
  ExpectGood(harness.Run(Cdb16(opcode::kWriteSame16, 0x09, 0, 8)));
  EXPECT_EQ(harness.memory().count(Operation::kWriteZeroes), 1u);
  EXPECT_TRUE(harness.memory().unmapped().empty());
}

TEST(ScsiDiskIoTest, UnmapDiscardsEachDescriptor) {
  ScsiHarness harness;
  std::fill(harness.memory().bytes().begin(), harness.memory().bytes().end(), 0x11);
  const auto list = UnmapList({{16, 8}, {1000, 0}, {2040, 8}});
  ExpectGood(harness.Run(Unmap(static_cast<uint16_t>(list.size())), {.data_out = list}));
  EXPECT_THAT(harness.memory().unmapped(),
              ElementsAre(Pair(16 * 512, 8 * 512), Pair(2040 * 512, 8 * 512)));
  EXPECT_EQ(ImageBytes(harness, 16 * 512, 4096), std::vector<uint8_t>(4096, 0));
}

TEST(ScsiDiskIoTest, VerifyComparesWithByteCheck) {
  ScsiHarness harness;
  const auto data = Pattern(2 * 512, 8);
  std::copy(data.begin(), data.end(), harness.memory().bytes().begin() + 512);
  ExpectGood(harness.Run(Cdb10(opcode::kVerify10, 0x02, 1, 2), {.data_out = data}));
  auto changed = data;
  changed[700] ^= 1;
  ExpectSense(harness.Run(Cdb10(opcode::kVerify10, 0x02, 1, 2), {.data_out = changed}),
              sense::kMiscompareDuringVerify);
  EXPECT_EQ(harness.memory().count(Operation::kRead), 2u);
}

TEST(ScsiDiskIoTest, VerifyByteCheckThreeComparesEveryBlockWithOne) {
  ScsiHarness harness;
  const auto block = Pattern(512, 77);
  for (int i = 0; i < 4; ++i) {
    std::copy(block.begin(), block.end(), harness.memory().bytes().begin() + (20 + i) * 512);
  }
  ExpectGood(harness.Run(Cdb16(opcode::kVerify16, 0x06, 20, 4), {.data_out = block}));
  ExpectSense(harness.Run(Cdb16(opcode::kVerify16, 0x06, 20, 5), {.data_out = block}),
              sense::kMiscompareDuringVerify);
}

TEST(ScsiDiskIoTest, BackendErrorsMapToSense) {
  struct Case {
    Operation operation;
    int error;
    std::vector<uint8_t> cdb;
    bool writes;
    SenseCode expected;
  };
  const std::vector<Case> cases = {
      {Operation::kRead, EIO, Cdb10(opcode::kRead10, 0, 0, 1), false, sense::kUnrecoveredReadError},
      {Operation::kWrite, EIO, Cdb10(opcode::kWrite10, 0, 0, 1), true, sense::kWriteError},
      {Operation::kWrite, ENOSPC, Cdb10(opcode::kWrite10, 0, 0, 1), true,
       sense::kSpaceAllocationFailed},
      {Operation::kFlush, EIO, Cdb10(opcode::kWrite10, 0x08, 0, 1), true, sense::kWriteError},
      {Operation::kFlush, ENOMEM, Cdb10(opcode::kSynchronizeCache10, 0, 0, 0), false,
       sense::kIoProcessTerminated},
      {Operation::kDiscard, EIO, Unmap(24), true, sense::kWriteError},
  };
  for (const Case& c : cases) {
    ScsiHarness harness;
    harness.memory().FailNext(c.operation, c.error);
    RunOptions options;
    if (c.cdb[0] == opcode::kUnmap) {
      options.data_out = UnmapList({{0, 1}});
    } else if (c.writes) {
      options.data_out = Pattern(512, 0);
    } else if (c.cdb[0] == opcode::kRead10) {
      options.data_in_capacity = 512;
    }
    const Exchange exchange = harness.Run(c.cdb, options);
    SCOPED_TRACE(::testing::Message() << "opcode " << int{c.cdb[0]} << " errno " << c.error);
    ExpectSense(exchange, c.expected);
    EXPECT_EQ(exchange.result.data_in_length, 0u);
  }
}

TEST(ScsiDiskIoTest, AbortTaskCompletesTheTaskBeforeAnsweringTheAbort) {
  ScsiHarness harness;
  harness.memory().set_hold_completions(true);
  Exchange read, write;
  harness.Start(read, Cdb10(opcode::kRead10, 0, 0, 1), {.data_in_capacity = 512, .tag = 7});
  harness.Start(write, Cdb10(opcode::kWrite10, 0, 8, 1), {.data_out = Pattern(512, 1), .tag = 8});
  EXPECT_EQ(harness.disk().in_flight(), 2u);
  EXPECT_TRUE(harness.disk().HasTask(7));

  std::vector<std::string> events;
  harness.disk().AbortTask(7, [&](bool found) {
    EXPECT_TRUE(found);
    EXPECT_EQ(read.completions, 1) << "the abort must be answered after the task completed";
    events.push_back("abort answered");
  });
  harness.Settle();
  EXPECT_TRUE(events.empty()) << "nothing completes while the backend holds the I/O";
  EXPECT_EQ(read.completions, 0);

  EXPECT_EQ(harness.memory().ReleaseHeld(), 2u);
  harness.Settle();
  EXPECT_EQ(read.completions, 1);
  EXPECT_EQ(read.result.response, Response::kAborted);
  EXPECT_EQ(read.result.data_in_length, 0u);
  EXPECT_EQ(read.result.residual, 512u);
  EXPECT_EQ(write.completions, 1);
  ExpectGood(write);
  EXPECT_THAT(events, ElementsAre("abort answered"));
  EXPECT_EQ(harness.disk().in_flight(), 0u);
  EXPECT_FALSE(harness.disk().HasTask(7));
}

TEST(ScsiDiskIoTest, AbortOfUnknownTagAnswersAtOnce) {
  ScsiHarness harness;
  bool answered = false;
  harness.disk().AbortTask(99, [&](bool found) {
    EXPECT_FALSE(found);
    answered = true;
  });
  EXPECT_TRUE(answered);
}

TEST(ScsiDiskIoTest, AbortedTaskStartsNoFurtherOperation) {
  ScsiHarness harness;
  harness.memory().set_hold_completions(true);
  Exchange write;
  harness.Start(write, Cdb10(opcode::kWrite10, 0x08, 0, 1), {.data_out = Pattern(512, 1)});
  bool aborted = false;
  harness.disk().AbortAllTasks([&] { aborted = true; });
  harness.memory().ReleaseHeld();
  harness.Settle();
  EXPECT_TRUE(aborted);
  EXPECT_EQ(write.result.response, Response::kAborted);
  EXPECT_EQ(harness.memory().count(Operation::kFlush), 0u) << "the FUA flush must not start";
}

TEST(ScsiDiskIoTest, ResetAbortsEverythingAndRaisesUnitAttentionOnce) {
  ScsiHarness harness;
  harness.memory().set_hold_completions(true);
  Exchange first, second;
  harness.Start(first, Cdb10(opcode::kRead10, 0, 0, 1), {.data_in_capacity = 512, .tag = 1});
  harness.Start(second, Cdb10(opcode::kSynchronizeCache10, 0, 0, 0), {.tag = 2});
  int reset_answers = 0;
  harness.disk().Reset([&] {
    EXPECT_EQ(first.completions + second.completions, 2);
    ++reset_answers;
  });
  harness.memory().ReleaseHeld();
  harness.Settle();
  EXPECT_EQ(reset_answers, 1);
  EXPECT_EQ(first.result.response, Response::kAborted);
  EXPECT_EQ(second.result.response, Response::kAborted);

  // INQUIRY neither reports nor clears the unit attention.
  ExpectGood(harness.Run(Inquiry(false, 0, 36), {.data_in_capacity = 36}));
  ExpectSense(harness.Run({opcode::kTestUnitReady, 0, 0, 0, 0, 0}), sense::kPowerOnReset);
  ExpectGood(harness.Run({opcode::kTestUnitReady, 0, 0, 0, 0, 0}));
}

TEST(ScsiDiskIoTest, RequestSenseReportsAndClearsUnitAttention) {
  ScsiHarness harness;
  harness.disk().Reset([] {});
  const Exchange sense =
      harness.Run({opcode::kRequestSense, 0, 0, 0, 18, 0}, {.data_in_capacity = 18});
  ExpectGood(sense);
  EXPECT_EQ(sense.data_in[2], 0x06);
  EXPECT_EQ(sense.data_in[12], 0x29);
  ExpectGood(harness.Run({opcode::kTestUnitReady, 0, 0, 0, 0, 0}));
}

TEST(ScsiDiskIoTest, EmulatedCommandsCompleteInsideSubmit) {
  ScsiHarness harness;
  ScsiRequest request;
  request.SetCdb(std::vector<uint8_t>{opcode::kTestUnitReady, 0, 0, 0, 0, 0});
  bool completed = false;
  harness.disk().Submit(std::move(request), [&](const ScsiResult&) { completed = true; });
  EXPECT_TRUE(completed);
}

TEST(ScsiDiskIoTest, BackendCommandsNeverCompleteInsideSubmit) {
  ScsiHarness harness;
  std::vector<uint8_t> buffer(512);
  ScsiRequest request;
  request.SetCdb(Cdb10(opcode::kRead10, 0, 0, 1));
  request.data_in = {{buffer.data(), buffer.size()}};
  int completions = 0;
  harness.disk().Submit(std::move(request), [&](const ScsiResult&) { ++completions; });
  EXPECT_EQ(completions, 0);
  EXPECT_EQ(harness.disk().in_flight(), 1u);
  harness.Settle();
  EXPECT_EQ(completions, 1);
  EXPECT_EQ(harness.disk().in_flight(), 0u);
}

TEST(ScsiDiskCreateTest, RejectsBadOptionsWithActionableErrors) {
  auto context = util::AioContext::Create("create-test");
  ASSERT_TRUE(context.ok());
  MemoryBlockBackend backend(**context, 1 << 20);
  MemoryBlockBackend tiny(**context, 256);
  struct Case {
    ScsiDiskOptions options;
    block::BlockBackend* backend;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{.block_size = 520}, &backend, "block size 520 is not supported"},
      {{.block_size = 8192}, &backend, "block size 8192"},
      {{.physical_block_size = 256}, &backend, "physical block size 256"},
      {{}, &tiny, "smaller than one 512-byte block"},
      {{.vendor = "TOO-LONG-VENDOR"}, &backend, "vendor"},
      {{.serial = std::string(37, 'x')}, &backend, "serial"},
      {{.serial = "tab\there"}, &backend, "printable ASCII"},
      {{.max_transfer_bytes = 1000}, &backend, "multiples of the block size"},
  };
  for (const Case& c : cases) {
    const auto disk = ScsiDisk::Create(*c.backend, c.options);
    ASSERT_FALSE(disk.ok()) << c.message;
    EXPECT_EQ(disk.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(disk.status().message()), HasSubstr(c.message));
    EXPECT_THAT(std::string(disk.status().message()), HasSubstr("memory"))
        << "errors name the image";
  }
}

TEST(ScsiDiskCreateTest, BlockSizeFollowsTheBackendAlignment) {
  auto context = util::AioContext::Create("create-test");
  ASSERT_TRUE(context.ok());
  MemoryBlockBackend backend(**context, 1 << 20);
  backend.set_alignment(4096);
  const auto automatic = ScsiDisk::Create(backend, {});
  ASSERT_TRUE(automatic.ok()) << automatic.status();
  EXPECT_EQ((*automatic)->profile().block_size, 4096u);
  EXPECT_EQ((*automatic)->profile().block_count, 256u);

  const auto too_small = ScsiDisk::Create(backend, {.block_size = 512});
  ASSERT_FALSE(too_small.ok());
  EXPECT_THAT(std::string(too_small.status().message()), HasSubstr("use a block size of 4096"));

  backend.set_alignment(512);
  const auto default_size = ScsiDisk::Create(backend, {});
  ASSERT_TRUE(default_size.ok());
  EXPECT_EQ((*default_size)->profile().block_size, 512u);
}

}  // namespace
}  // namespace kvmini::hw::scsi::testing

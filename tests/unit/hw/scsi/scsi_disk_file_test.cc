// The SCSI disk over the real BlockBackend and an image file: commands must
// reach the file (checked by reading it back outside kvmini), for each I/O
// engine, buffered and O_DIRECT. A model test runs random READ, WRITE,
// WRITE SAME, UNMAP and SYNCHRONIZE CACHE commands, several in flight on
// disjoint ranges, and checks every read and the final file against a
// shadow copy.
#include <sys/stat.h>

#include <random>
#include <string>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "hw/scsi/big_endian.h"
#include "scsi_cdb_builders.h"
#include "scsi_test_harness.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::hw::scsi::testing {
namespace {

using block::testing::DiskDirectory;
using block::testing::MakeImage;
using block::testing::ReadWholeFile;
using block::testing::ScratchDir;

constexpr size_t kImageBytes = 8 << 20;
constexpr uint32_t kBlock = 512;
constexpr uint64_t kBlocks = kImageBytes / kBlock;

struct FileConfig {
  const char* name;
  block::AioEngine engine;
  bool direct;
};

class ScsiDiskFileTest : public ::testing::TestWithParam<FileConfig> {
 protected:
  void SetUp() override {
    image_ = scratch_.File("disk.img");
    model_ = MakeImage(image_, kImageBytes, 1234);
    harness_ = Open(false);
  }

  std::unique_ptr<ScsiHarness> Open(bool read_only) {
    auto context = util::AioContext::CreateMain();
    EXPECT_TRUE(context.ok()) << context.status();
    block::BlockOptions options;
    options.engine = GetParam().engine;
    options.direct = GetParam().direct;
    options.read_only = read_only;
    auto backend = block::BlockBackend::Open(image_, options, **context);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return std::make_unique<ScsiHarness>(std::move(*context), std::move(*backend),
                                         ScsiDiskOptions{});
  }

  std::vector<uint8_t> Blocks(uint64_t lba, uint64_t count) const {
    return {model_.begin() + lba * kBlock, model_.begin() + (lba + count) * kBlock};
  }

  ScratchDir scratch_{DiskDirectory()};
  std::string image_;
  std::vector<uint8_t> model_;
  std::unique_ptr<ScsiHarness> harness_;
};

void ExpectGood(const Exchange& exchange) {
  EXPECT_EQ(exchange.completions, 1);
  EXPECT_EQ(exchange.result.response, ScsiResult::Response::kCompleted);
  EXPECT_EQ(exchange.result.status, status::kGood)
      << "sense " << int{exchange.sense().key} << "/" << int{exchange.sense().asc} << "/"
      << int{exchange.sense().ascq};
}

TEST_P(ScsiDiskFileTest, WritesReachTheImageAndReadsReturnIt) {
  std::mt19937 random(1);
  const auto data = block::testing::RandomBytes(random, 16 * kBlock);
  ExpectGood(harness_->Run(Cdb10(opcode::kWrite10, 0x08, 100, 16), {.data_out = data}));
  std::copy(data.begin(), data.end(), model_.begin() + 100 * kBlock);
  EXPECT_EQ(ReadWholeFile(image_), model_);

  const Exchange read =
      harness_->Run(Cdb16(opcode::kRead16, 0, 96, 24), {.data_in_capacity = 24 * kBlock});
  ExpectGood(read);
  EXPECT_EQ(read.data_in, Blocks(96, 24));
}

TEST_P(ScsiDiskFileTest, CapacityMatchesTheImage) {
  const Exchange capacity = harness_->Run(ReadCapacity16(32), {.data_in_capacity = 32});
  ExpectGood(capacity);
  EXPECT_EQ(LoadBigEndian64(&capacity.data_in[0]), kBlocks - 1);
  EXPECT_EQ(LoadBigEndian32(&capacity.data_in[8]), harness_->disk().profile().block_size);
  EXPECT_EQ(capacity.data_in[14] & 0x80, 0x80) << "LBPME: unmap is supported";
}

TEST_P(ScsiDiskFileTest, UnmapDeallocatesAndReadsZeroes) {
  struct stat before {};
  ASSERT_EQ(stat(image_.c_str(), &before), 0);
  const auto list = UnmapList({{0, 2048}, {4096, 2048}});  // two 1 MiB ranges
  ExpectGood(harness_->Run(Unmap(static_cast<uint16_t>(list.size())), {.data_out = list}));
  struct stat after {};
  ASSERT_EQ(stat(image_.c_str(), &after), 0);
  EXPECT_EQ(after.st_size, before.st_size) << "discard keeps the size";
  EXPECT_LE(after.st_blocks + 2 * (1 << 20) / 512, before.st_blocks)
      << "2 MiB must have been deallocated";
  std::fill_n(model_.begin(), 2048 * kBlock, 0);
  std::fill_n(model_.begin() + 4096 * kBlock, 2048 * kBlock, 0);
  EXPECT_EQ(ReadWholeFile(image_), model_);
}

TEST_P(ScsiDiskFileTest, WriteSameFillsThePatternAndZeroes) {
  std::mt19937 random(2);
  const auto pattern = block::testing::RandomBytes(random, kBlock);
  ExpectGood(harness_->Run(Cdb16(opcode::kWriteSame16, 0, 10, 3000), {.data_out = pattern}));
  for (uint64_t lba = 10; lba < 3010; ++lba) {
    std::copy(pattern.begin(), pattern.end(), model_.begin() + lba * kBlock);
  }
  ExpectGood(harness_->Run(Cdb10(opcode::kWriteSame10, 0x08, 5000, 100),
                           {.data_out = std::vector<uint8_t>(kBlock, 0)}));
  std::fill_n(model_.begin() + 5000 * kBlock, 100 * kBlock, 0);
  EXPECT_EQ(ReadWholeFile(image_), model_);
}

TEST_P(ScsiDiskFileTest, ReadOnlyImageRefusesEveryWrite) {
  harness_.reset();
  harness_ = Open(true);
  const auto refuse = [&](std::vector<uint8_t> cdb, std::vector<uint8_t> data_out) {
    const Exchange exchange = harness_->Run(std::move(cdb), {.data_out = std::move(data_out)});
    EXPECT_EQ(exchange.result.status, status::kCheckCondition);
    EXPECT_EQ(exchange.sense(), sense::kWriteProtected);
  };
  refuse(Cdb10(opcode::kWrite10, 0, 0, 1), std::vector<uint8_t>(kBlock, 1));
  refuse(Cdb16(opcode::kWriteSame16, 0x08, 0, 8), std::vector<uint8_t>(kBlock, 0));
  refuse(Unmap(24), UnmapList({{0, 8}}));
  ExpectGood(harness_->Run(Cdb10(opcode::kSynchronizeCache10, 0, 0, 0)));
  const Exchange mode = harness_->Run(ModeSense6(0x08, 0x3f, 0, 255), {.data_in_capacity = 255});
  EXPECT_EQ(mode.data_in[2] & 0x80, 0x80) << "write-protect bit";
  EXPECT_EQ(ReadWholeFile(image_), model_);
}

// Random commands, up to eight in flight on disjoint ranges, against a
// shadow copy of the image.
TEST_P(ScsiDiskFileTest, RandomCommandsMatchTheModel) {
  std::mt19937 random(GetParam().direct ? 11 : 12);
  constexpr int kBatches = 60;
  constexpr uint64_t kSlotBlocks = kBlocks / 8;
  for (int batch = 0; batch < kBatches; ++batch) {
    std::vector<std::unique_ptr<Exchange>> exchanges;
    std::vector<std::function<void()>> checks;
    for (uint64_t slot = 0; slot < 8; ++slot) {
      const uint64_t count = 1 + random() % 64;
      const uint64_t lba = slot * kSlotBlocks + random() % (kSlotBlocks - count);
      auto& exchange = *exchanges.emplace_back(std::make_unique<Exchange>());
      switch (random() % 6) {
        case 0:
        case 1: {
          auto data = block::testing::RandomBytes(random, count * kBlock);
          std::copy(data.begin(), data.end(), model_.begin() + lba * kBlock);
          harness_->Start(exchange, Cdb16(opcode::kWrite16, 0, lba, count),
                          {.data_out = std::move(data)});
          break;
        }
        case 2: {
          const auto expected = Blocks(lba, count);
          harness_->Start(exchange, Cdb10(opcode::kRead10, 0, lba, count),
                          {.data_in_capacity = count * kBlock});
          checks.push_back([&exchange, expected] { EXPECT_EQ(exchange.data_in, expected); });
          break;
        }
        case 3: {
          auto pattern = block::testing::RandomBytes(random, kBlock);
          if (random() % 2) std::fill(pattern.begin(), pattern.end(), 0);
          for (uint64_t i = 0; i < count; ++i) {
            std::copy(pattern.begin(), pattern.end(), model_.begin() + (lba + i) * kBlock);
          }
          harness_->Start(exchange, Cdb10(opcode::kWriteSame10, 0x08, lba, count),
                          {.data_out = std::move(pattern)});
          break;
        }
        case 4: {
          std::fill_n(model_.begin() + lba * kBlock, count * kBlock, 0);
          const auto list = UnmapList({{lba, static_cast<uint32_t>(count)}});
          harness_->Start(exchange, Unmap(static_cast<uint16_t>(list.size())), {.data_out = list});
          break;
        }
        default:
          harness_->Start(exchange, Cdb10(opcode::kSynchronizeCache10, 0, 0, 0), {});
          break;
      }
    }
    harness_->Settle();
    for (const auto& exchange : exchanges) ExpectGood(*exchange);
    for (const auto& check : checks) check();
    if (HasFailure()) return;
  }
  EXPECT_EQ(ReadWholeFile(image_), model_);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, ScsiDiskFileTest,
    ::testing::Values(FileConfig{"IoUring", block::AioEngine::kIoUring, false},
                      FileConfig{"Threads", block::AioEngine::kThreads, false},
                      FileConfig{"IoUringDirect", block::AioEngine::kIoUring, true},
                      FileConfig{"ThreadsDirect", block::AioEngine::kThreads, true}),
    [](const ::testing::TestParamInfo<FileConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::hw::scsi::testing

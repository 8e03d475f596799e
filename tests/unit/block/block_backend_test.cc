// BlockBackend behaviour on each engine: data round trips, discard and
// write-zeroes, range checks, read-only backends, many iovecs, more
// operations at once than the ring holds, and end-of-file handling.
#include "block/block_backend.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::block {
namespace {

using testing::MakeImage;
using testing::Outcome;
using testing::PollUntil;
using testing::ReadNow;
using testing::Record;
using testing::WriteNow;

constexpr size_t kImageSize = 4 << 20;

struct EngineConfig {
  const char* name;
  AioEngine engine;
  bool nowait;
  bool in_memory;  // image in /dev/shm rather than on disk
};

class BlockBackendTest : public testing::MainLoopTest,
                         public ::testing::WithParamInterface<EngineConfig> {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(
        GetParam().in_memory ? testing::MemoryDirectory() : testing::DiskDirectory());
    path_ = scratch_->File("disk.img");
    content_ = MakeImage(path_, kImageSize, 1);
  }
  void TearDown() override {
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  std::unique_ptr<BlockBackend> OpenBackend(bool read_only = false) {
    BlockOptions options;
    options.read_only = read_only;
    options.engine = GetParam().engine;
    options.nowait = GetParam().nowait;
    auto backend = BlockBackend::Open(path_, options, main());
    EXPECT_TRUE(backend.ok()) << backend.status();
    if (!backend.ok()) return nullptr;
    return std::move(*backend);
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
  std::string path_;
  std::vector<uint8_t> content_;
};

TEST_P(BlockBackendTest, UsesTheEngineItWasAskedFor) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  EXPECT_EQ(backend->engine(), GetParam().engine);
  EXPECT_EQ(backend->size_bytes(), kImageSize);
  EXPECT_EQ(backend->path(), path_);
  EXPECT_FALSE(backend->read_only());
  EXPECT_EQ(backend->alignment(), 1u);
  EXPECT_EQ(&backend->context(), &main());
}

TEST_P(BlockBackendTest, WriteThenReadRoundTripsAndCompletesOutsideTheCall) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  std::mt19937 random(2);
  std::vector<uint8_t> data = testing::RandomBytes(random, 12345);
  Outcome write;
  // Split across three buffers so the write is really vectored.
  backend->Write(1000,
                 {iovec{data.data(), 100}, iovec{data.data() + 100, 5000},
                  iovec{data.data() + 5100, data.size() - 5100}},
                 Record(write));
  EXPECT_EQ(write.calls, 0) << "completion ran inside Write()";
  EXPECT_EQ(backend->in_flight(), 1u);
  ASSERT_TRUE(PollUntil(main(), [&] { return write.calls > 0; }));
  EXPECT_EQ(write.calls, 1);
  EXPECT_EQ(write.status, 0);
  EXPECT_EQ(backend->in_flight(), 0u);

  std::vector<uint8_t> back(data.size() + 200);
  Outcome read;
  backend->Read(900, {iovec{back.data(), 7}, iovec{back.data() + 7, back.size() - 7}},
                Record(read));
  EXPECT_EQ(read.calls, 0) << "completion ran inside Read()";
  ASSERT_TRUE(PollUntil(main(), [&] { return read.calls > 0; }));
  EXPECT_EQ(read.status, 0);
  // 100 bytes of the original image, the data, 100 more original bytes.
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 100, content_.begin() + 900));
  EXPECT_TRUE(std::equal(data.begin(), data.end(), back.begin() + 100));
  EXPECT_TRUE(std::equal(back.begin() + 100 + data.size(), back.end(),
                         content_.begin() + 1000 + data.size()));

  Outcome flush;
  backend->Flush(Record(flush));
  EXPECT_EQ(flush.calls, 0);
  ASSERT_TRUE(PollUntil(main(), [&] { return flush.calls > 0; }));
  EXPECT_EQ(flush.status, 0);

  std::vector<uint8_t> file = testing::ReadWholeFile(path_);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), file.begin() + 1000));
}

TEST_P(BlockBackendTest, DiscardAndWriteZeroesReadBackAsZeroesAndKeepTheSize) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  struct Case {
    uint64_t offset, length;
    int kind;  // 0 discard, 1 write-zeroes, 2 write-zeroes may unmap
  };
  // Block-aligned and not, small and several MiB (beyond one zero buffer).
  std::vector<Case> cases = {{0, 4096, 0},       {10000, 3000, 0},   {65536, 65536, 1},
                             {200001, 77777, 1}, {1 << 20, 3 << 20, 2}, {512, 100, 2}};
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "offset " << c.offset << " length " << c.length
                                      << " kind " << c.kind);
    Outcome outcome;
    if (c.kind == 0) {
      backend->Discard(c.offset, c.length, Record(outcome));
    } else {
      backend->WriteZeroes(c.offset, c.length, c.kind == 2, Record(outcome));
    }
    EXPECT_EQ(outcome.calls, 0);
    ASSERT_TRUE(PollUntil(main(), [&] { return outcome.calls > 0; }));
    EXPECT_EQ(outcome.status, 0);
    std::fill(content_.begin() + static_cast<ptrdiff_t>(c.offset),
              content_.begin() + static_cast<ptrdiff_t>(c.offset + c.length), 0);
  }
  std::vector<uint8_t> back(kImageSize);
  ASSERT_EQ(ReadNow(*backend, main(), 0, back.data(), back.size()), 0);
  EXPECT_TRUE(back == content_);
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

TEST_P(BlockBackendTest, WriteZeroesLargerThanOneStepOfZeroBuffers) {
  // More than 64 MiB, so writing zeroes (where fallocate cannot) needs more
  // than one system call's worth of shared zero buffers.
  constexpr uint64_t kBig = 80ull << 20;
  ASSERT_EQ(truncate(path_.c_str(), static_cast<off_t>(kBig + kImageSize)), 0);
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  std::vector<uint8_t> ones(1 << 20, 0xff);
  for (uint64_t offset = kImageSize; offset < kImageSize + kBig; offset += ones.size()) {
    ASSERT_EQ(WriteNow(*backend, main(), offset, ones.data(), ones.size()), 0);
  }
  Outcome outcome;
  backend->WriteZeroes(kImageSize + 1, kBig - 2, /*may_unmap=*/false, Record(outcome));
  ASSERT_TRUE(PollUntil(main(), [&] { return outcome.calls > 0; }));
  EXPECT_EQ(outcome.status, 0);
  std::vector<uint8_t> file = testing::ReadWholeFile(path_);
  ASSERT_EQ(file.size(), kImageSize + kBig);
  EXPECT_EQ(file[kImageSize], 0xff);
  EXPECT_EQ(file[kImageSize + kBig - 1], 0xff);
  EXPECT_TRUE(std::all_of(file.begin() + kImageSize + 1, file.end() - 1,
                          [](uint8_t byte) { return byte == 0; }));
}

TEST_P(BlockBackendTest, RangesBeyondTheImageFailWithEinvalWithoutTouchingIt) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  std::vector<uint8_t> buffer(1024, 0xab);
  std::vector<Outcome> outcomes(7);
  backend->Read(kImageSize - 512, {iovec{buffer.data(), 1024}}, Record(outcomes[0]));
  backend->Write(kImageSize - 512, {iovec{buffer.data(), 1024}}, Record(outcomes[1]));
  backend->Write(UINT64_MAX - 100, {iovec{buffer.data(), 1024}}, Record(outcomes[2]));
  backend->Discard(kImageSize, 1, Record(outcomes[3]));
  backend->WriteZeroes(UINT64_MAX, 2, true, Record(outcomes[4]));
  // Lengths that overflow when added up.
  backend->Read(0, {iovec{buffer.data(), SIZE_MAX}, iovec{buffer.data(), 2}},
                Record(outcomes[5]));
  backend->Discard(1, UINT64_MAX, Record(outcomes[6]));
  for (const Outcome& outcome : outcomes) EXPECT_EQ(outcome.calls, 0);
  ASSERT_TRUE(PollUntil(main(), [&] { return backend->in_flight() == 0; }));
  for (const Outcome& outcome : outcomes) {
    EXPECT_EQ(outcome.calls, 1);
    EXPECT_EQ(outcome.status, -EINVAL);
  }
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

TEST_P(BlockBackendTest, EmptyOperationsSucceed) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  std::vector<Outcome> outcomes(4);
  backend->Read(kImageSize, {}, Record(outcomes[0]));
  backend->Write(0, {iovec{nullptr, 0}}, Record(outcomes[1]));
  backend->Discard(100, 0, Record(outcomes[2]));
  backend->WriteZeroes(kImageSize, 0, false, Record(outcomes[3]));
  ASSERT_TRUE(PollUntil(main(), [&] { return backend->in_flight() == 0; }));
  for (const Outcome& outcome : outcomes) {
    EXPECT_EQ(outcome.calls, 1);
    EXPECT_EQ(outcome.status, 0);
  }
}

TEST_P(BlockBackendTest, ReadOnlyBackendRefusesChangesWithErofsAndStillReads) {
  auto backend = OpenBackend(/*read_only=*/true);
  ASSERT_NE(backend, nullptr);
  EXPECT_TRUE(backend->read_only());
  std::vector<uint8_t> buffer(4096, 0x5a);
  std::vector<Outcome> refused(4);
  backend->Write(0, {iovec{buffer.data(), buffer.size()}}, Record(refused[0]));
  backend->Discard(0, 4096, Record(refused[1]));
  backend->WriteZeroes(4096, 4096, false, Record(refused[2]));
  backend->WriteZeroes(8192, 4096, true, Record(refused[3]));
  Outcome flush;
  backend->Flush(Record(flush));
  ASSERT_TRUE(PollUntil(main(), [&] { return backend->in_flight() == 0; }));
  for (const Outcome& outcome : refused) {
    EXPECT_EQ(outcome.calls, 1);
    EXPECT_EQ(outcome.status, -EROFS);
  }
  EXPECT_EQ(flush.status, 0);
  ASSERT_EQ(ReadNow(*backend, main(), 0, buffer.data(), buffer.size()), 0);
  EXPECT_TRUE(std::equal(buffer.begin(), buffer.end(), content_.begin()));
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

TEST_P(BlockBackendTest, MoreIovecsThanOneSystemCallTakes) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  constexpr size_t kPieces = 2 * IOV_MAX + 17;
  std::mt19937 random(3);
  std::vector<uint8_t> data = testing::RandomBytes(random, kPieces * 3);
  std::vector<iovec> pieces;
  for (size_t i = 0; i < kPieces; ++i) pieces.push_back(iovec{data.data() + 3 * i, 3});
  Outcome write;
  backend->Write(777, pieces, Record(write));
  ASSERT_TRUE(PollUntil(main(), [&] { return write.calls > 0; }));
  ASSERT_EQ(write.status, 0);
  std::vector<uint8_t> back(data.size());
  for (size_t i = 0; i < kPieces; ++i) pieces[i].iov_base = back.data() + 3 * i;
  Outcome read;
  backend->Read(777, pieces, Record(read));
  ASSERT_TRUE(PollUntil(main(), [&] { return read.calls > 0; }));
  ASSERT_EQ(read.status, 0);
  EXPECT_TRUE(back == data);
}

TEST_P(BlockBackendTest, ThousandsAtOnceAllCompleteExactlyOnce) {
  // Far more than the submission queue (256) and the completion queue (512)
  // hold: the rest must wait their turn, not fail.
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  constexpr int kCount = 3000;
  std::vector<std::vector<uint8_t>> buffers(kCount, std::vector<uint8_t>(512));
  std::vector<Outcome> outcomes(kCount);
  for (int i = 0; i < kCount; ++i) {
    uint64_t offset = (static_cast<uint64_t>(i) * 4096) % kImageSize;
    backend->Read(offset, {iovec{buffers[i].data(), 512}}, Record(outcomes[i]));
  }
  EXPECT_EQ(backend->in_flight(), static_cast<uint64_t>(kCount));
  ASSERT_TRUE(PollUntil(main(), [&] { return backend->in_flight() == 0; }));
  for (int i = 0; i < kCount; ++i) {
    ASSERT_EQ(outcomes[i].calls, 1) << i;
    ASSERT_EQ(outcomes[i].status, 0) << i;
    uint64_t offset = (static_cast<uint64_t>(i) * 4096) % kImageSize;
    ASSERT_TRUE(std::equal(buffers[i].begin(), buffers[i].end(), content_.begin() + offset));
  }
}

TEST_P(BlockBackendTest, FileShrunkUnderneathReadsZeroesInsideTheImage) {
  auto backend = OpenBackend();
  ASSERT_NE(backend, nullptr);
  ASSERT_EQ(truncate(path_.c_str(), 8192 + 100), 0);
  std::vector<uint8_t> buffer(16384, 0x77);
  ASSERT_EQ(ReadNow(*backend, main(), 4096, buffer.data(), buffer.size()), 0);
  EXPECT_TRUE(std::equal(buffer.begin(), buffer.begin() + 4196, content_.begin() + 4096));
  EXPECT_TRUE(std::all_of(buffer.begin() + 4196, buffer.end(), [](uint8_t b) { return b == 0; }));
}

INSTANTIATE_TEST_SUITE_P(
    Engines, BlockBackendTest,
    ::testing::Values(EngineConfig{"IoUringNowait", AioEngine::kIoUring, true, true},
                      EngineConfig{"IoUring", AioEngine::kIoUring, false, true},
                      EngineConfig{"IoUringOnDisk", AioEngine::kIoUring, true, false},
                      EngineConfig{"Threads", AioEngine::kThreads, false, true},
                      EngineConfig{"ThreadsNowaitOnDisk", AioEngine::kThreads, true, false}),
    [](const ::testing::TestParamInfo<EngineConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::block

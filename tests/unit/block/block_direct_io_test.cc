// O_DIRECT with buffers the device cannot take as they are. What is
// handled (bounced through an aligned buffer): misaligned buffer addresses,
// buffer lengths that are not whole blocks, and reads at misaligned offsets
// or lengths. What is refused, with -EINVAL and nothing written: writes at
// a misaligned offset or length, which would need a read-modify-write.
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::block {
namespace {

constexpr size_t kImageSize = 1 << 20;

struct DirectConfig {
  const char* name;
  AioEngine engine;
};

class DirectIoTest : public testing::MainLoopTest,
                     public ::testing::WithParamInterface<DirectConfig> {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(testing::DiskDirectory());
    path_ = scratch_->File("direct.img");
    content_ = testing::MakeImage(path_, kImageSize, 3);
    BlockOptions options;
    options.direct = true;
    options.engine = GetParam().engine;
    auto opened = BlockBackend::Open(path_, options, main());
    ASSERT_TRUE(opened.ok()) << opened.status();
    backend_ = std::move(*opened);
    alignment_ = backend_->alignment();
    ASSERT_GE(alignment_, 512u);
    void* memory = nullptr;
    ASSERT_EQ(posix_memalign(&memory, 4096, 4 * kBuffer), 0);
    memory_.reset(static_cast<uint8_t*>(memory));
  }
  void TearDown() override {
    backend_.reset();
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  int Run(bool write, uint64_t offset, std::vector<iovec> buffers) {
    testing::Outcome outcome;
    if (write) {
      backend_->Write(offset, std::move(buffers), testing::Record(outcome));
    } else {
      backend_->Read(offset, std::move(buffers), testing::Record(outcome));
    }
    EXPECT_TRUE(testing::PollUntil(main(), [&] { return outcome.calls > 0; }));
    EXPECT_EQ(outcome.calls, 1);
    return outcome.status;
  }

  static constexpr size_t kBuffer = 64 << 10;
  std::unique_ptr<testing::ScratchDir> scratch_;
  std::string path_;
  std::vector<uint8_t> content_;
  std::unique_ptr<BlockBackend> backend_;
  uint32_t alignment_ = 0;
  std::unique_ptr<uint8_t, decltype(&std::free)> memory_{nullptr, &std::free};
};

TEST_P(DirectIoTest, MisalignedBufferAddressIsBouncedBothWays) {
  uint8_t* odd = memory_.get() + 1;
  const size_t length = 8 * alignment_;
  std::mt19937 random(1);
  std::vector<uint8_t> data = testing::RandomBytes(random, length);
  std::memcpy(odd, data.data(), length);
  const uint64_t offset = 4 * alignment_;
  ASSERT_EQ(Run(true, offset, {iovec{odd, length}}), 0);
  std::memset(odd, 0, length);
  ASSERT_EQ(Run(false, offset, {iovec{odd, length}}), 0);
  EXPECT_EQ(std::memcmp(odd, data.data(), length), 0);
  std::vector<uint8_t> file = testing::ReadWholeFile(path_);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), file.begin() + offset));
}

TEST_P(DirectIoTest, BuffersThatAreNotWholeBlocksAreBounced) {
  // Three pieces adding up to two blocks, none a whole block.
  const size_t length = 2 * alignment_;
  uint8_t* base = memory_.get();
  std::vector<iovec> pieces = {iovec{base, 100}, iovec{base + 1000, alignment_},
                               iovec{base + 3 * alignment_, alignment_ - 100}};
  std::mt19937 random(2);
  std::vector<uint8_t> data = testing::RandomBytes(random, length);
  size_t at = 0;
  for (const iovec& piece : pieces) {
    std::memcpy(piece.iov_base, data.data() + at, piece.iov_len);
    at += piece.iov_len;
  }
  ASSERT_EQ(Run(true, 0, pieces), 0);
  for (const iovec& piece : pieces) std::memset(piece.iov_base, 0, piece.iov_len);
  ASSERT_EQ(Run(false, 0, pieces), 0);
  at = 0;
  for (const iovec& piece : pieces) {
    EXPECT_EQ(std::memcmp(piece.iov_base, data.data() + at, piece.iov_len), 0);
    at += piece.iov_len;
  }
}

TEST_P(DirectIoTest, ReadsAtMisalignedOffsetsAndLengthsAreBounced) {
  struct Case {
    uint64_t offset, length;
  };
  for (Case c : {Case{1, 10}, Case{alignment_ - 1, 2}, Case{12345, 3 * alignment_ + 17},
                 Case{kImageSize - 7, 7}, Case{alignment_, 100}}) {
    SCOPED_TRACE(::testing::Message() << "offset " << c.offset << " length " << c.length);
    std::memset(memory_.get(), 0xee, c.length);
    ASSERT_EQ(Run(false, c.offset, {iovec{memory_.get(), c.length}}), 0);
    EXPECT_TRUE(std::equal(memory_.get(), memory_.get() + c.length,
                           content_.begin() + c.offset));
  }
}

TEST_P(DirectIoTest, WritesAtMisalignedOffsetsOrLengthsFailWithEinvalAndWriteNothing) {
  std::memset(memory_.get(), 0x11, kBuffer);
  EXPECT_EQ(Run(true, 100, {iovec{memory_.get(), alignment_}}), -EINVAL);
  EXPECT_EQ(Run(true, 0, {iovec{memory_.get(), alignment_ + 1}}), -EINVAL);
  EXPECT_EQ(Run(true, alignment_, {iovec{memory_.get() + 1, 10}}), -EINVAL);
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

TEST_P(DirectIoTest, AlignedRequestsOfManySizesRoundTrip) {
  std::mt19937 random(4);
  for (int round = 0; round < 50; ++round) {
    size_t blocks = 1 + random() % (kBuffer / alignment_);
    size_t length = blocks * alignment_;
    uint64_t offset = random() % ((kImageSize - length) / alignment_ + 1) * alignment_;
    std::vector<uint8_t> data = testing::RandomBytes(random, length);
    std::memcpy(memory_.get(), data.data(), length);
    ASSERT_EQ(Run(true, offset, {iovec{memory_.get(), length}}), 0);
    std::memcpy(content_.data() + offset, data.data(), length);
    std::memset(memory_.get(), 0, length);
    ASSERT_EQ(Run(false, offset, {iovec{memory_.get(), length}}), 0);
    ASSERT_EQ(std::memcmp(memory_.get(), data.data(), length), 0);
  }
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

INSTANTIATE_TEST_SUITE_P(Engines, DirectIoTest,
                         ::testing::Values(DirectConfig{"IoUring", AioEngine::kIoUring},
                                           DirectConfig{"Threads", AioEngine::kThreads}),
                         [](const ::testing::TestParamInfo<DirectConfig>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace kvmini::block

// What the kernel may do to any request, forced on every one: short reads
// and writes, EAGAIN and EINTR. A flaky engine does the real system calls
// but transfers only part of what was asked, or refuses at random; the
// backend must resubmit the rest and retry until the bytes match a model.
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <string>
#include <vector>

#include "block/image_file.h"
#include "block/io_engine.h"
#include "block/raw_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::block {
namespace {

class FlakyEngine final : public IoEngine {
 public:
  explicit FlakyEngine(util::AioContext& context) : context_(context) {}

  AioEngine kind() const override { return AioEngine::kThreads; }

  void Submit(IoOperation* operation) override {
    ++submissions_;
    context_.ScheduleOneshot([this, operation] { operation->Finished(Run(*operation)); });
  }

  int submissions() const { return submissions_; }
  int short_transfers() const { return short_transfers_; }
  int refusals() const { return refusals_; }

 private:
  int64_t Run(const IoOperation& operation) {
    uint32_t dice = random_() % 10;
    if (dice == 0) {
      ++refusals_;
      return -EAGAIN;
    }
    if (dice == 1) {
      ++refusals_;
      return -EINTR;
    }
    if (operation.kind != IoOperation::Kind::kReadv &&
        operation.kind != IoOperation::Kind::kWritev) {
      return RunBlocking(operation);
    }
    uint64_t total = 0;
    for (int i = 0; i < operation.iov_count; ++i) total += operation.iov[i].iov_len;
    if (total <= 1 || dice < 5) return RunBlocking(operation);
    // Cut the transfer short, anywhere, even inside a buffer.
    uint64_t keep = 1 + random_() % (total - 1);
    std::vector<iovec> shorter;
    for (int i = 0; i < operation.iov_count && keep > 0; ++i) {
      size_t piece = std::min<uint64_t>(keep, operation.iov[i].iov_len);
      shorter.push_back(iovec{operation.iov[i].iov_base, piece});
      keep -= piece;
    }
    IoOperation::Kind kind = operation.kind;
    struct Shortened final : IoOperation {
      void Finished(int64_t) override {}
    } cut;
    cut.kind = kind;
    cut.fd = operation.fd;
    cut.offset = operation.offset;
    cut.iov = shorter.data();
    cut.iov_count = static_cast<int>(shorter.size());
    ++short_transfers_;
    return RunBlocking(cut);
  }

  util::AioContext& context_;
  std::mt19937 random_{99};
  int submissions_ = 0;
  int short_transfers_ = 0;
  int refusals_ = 0;
};

class ShortIoTest : public testing::MainLoopTest {};

TEST_F(ShortIoTest, ShortTransfersAndRetriesStillMoveEveryByte) {
  testing::ScratchDir scratch(testing::MemoryDirectory());
  std::string path = scratch.File("flaky.img");
  constexpr size_t kImageSize = 2 << 20;
  std::vector<uint8_t> model = testing::MakeImage(path, kImageSize, 5);
  auto image = OpenImageFile(path, /*read_only=*/false, /*direct=*/false);
  ASSERT_TRUE(image.ok()) << image.status();
  FlakyEngine engine(main());
  BlockOptions options;
  options.nowait = false;  // everything through the flaky engine
  RawBackend backend(path, *image, options, main(), engine);

  std::mt19937 random(7);
  int failures = 0;
  for (int round = 0; round < 400; ++round) {
    uint64_t length = 1 + random() % (256 << 10);
    uint64_t offset = random() % (kImageSize - length);
    uint32_t pick = random() % 3;
    testing::Outcome outcome;
    std::vector<uint8_t> data;
    if (pick == 0) {
      data = testing::RandomBytes(random, length);
      // Many small buffers, so cuts land inside and between them.
      std::vector<iovec> buffers;
      for (uint64_t at = 0; at < length; at += 1000) {
        buffers.push_back(iovec{data.data() + at, std::min<uint64_t>(1000, length - at)});
      }
      backend.Write(offset, buffers, testing::Record(outcome));
    } else if (pick == 1) {
      // tmpfs has no zero-range, so this writes zero buffers: short
      // writes of those must go on from the right place too.
      backend.WriteZeroes(offset, length, /*may_unmap=*/false, testing::Record(outcome));
    } else {
      data.assign(length, 0xcc);
      backend.Read(offset, {iovec{data.data(), length / 2}, iovec{data.data() + length / 2,
                                                                   length - length / 2}},
                   testing::Record(outcome));
    }
    ASSERT_TRUE(testing::PollUntil(main(), [&] { return outcome.calls > 0; }));
    ASSERT_EQ(outcome.calls, 1);
    if (outcome.status != 0) {
      ++failures;
      continue;
    }
    if (pick == 0) std::copy(data.begin(), data.end(), model.begin() + offset);
    if (pick == 1) std::fill(model.begin() + offset, model.begin() + offset + length, 0);
    if (pick == 2) {
      ASSERT_TRUE(std::equal(data.begin(), data.end(), model.begin() + offset))
          << "read of " << length << " at " << offset << " differs";
    }
  }
  EXPECT_EQ(failures, 0);
  EXPECT_GT(engine.short_transfers(), 100);
  EXPECT_GT(engine.refusals(), 50);
  EXPECT_TRUE(testing::ReadWholeFile(path) == model);
}

TEST_F(ShortIoTest, EndlessEagainFailsTheRequestInsteadOfLooping) {
  testing::ScratchDir scratch(testing::MemoryDirectory());
  std::string path = scratch.File("stuck.img");
  testing::MakeImage(path, 4096, 5);
  auto image = OpenImageFile(path, false, false);
  ASSERT_TRUE(image.ok());
  class AlwaysEagain final : public IoEngine {
   public:
    explicit AlwaysEagain(util::AioContext& context) : context_(context) {}
    AioEngine kind() const override { return AioEngine::kThreads; }
    void Submit(IoOperation* operation) override {
      ++submissions;
      context_.ScheduleOneshot([operation] { operation->Finished(-EAGAIN); });
    }
    int submissions = 0;

   private:
    util::AioContext& context_;
  } engine(main());
  BlockOptions options;
  options.nowait = false;
  RawBackend backend(path, *image, options, main(), engine);
  std::vector<uint8_t> buffer(512);
  EXPECT_EQ(testing::ReadNow(backend, main(), 0, buffer.data(), buffer.size()), -EAGAIN);
  EXPECT_GT(engine.submissions, 10);
}

}  // namespace
}  // namespace kvmini::block

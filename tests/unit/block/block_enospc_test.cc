// A full file system: the write that does not fit gets -ENOSPC, and nothing
// else breaks: reads, flushes and overwrites of space already allocated go
// on working, through every engine. The file system is a small tmpfs
// mounted for the test (we run as root); if it cannot be mounted the test
// fails rather than skips.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::block {
namespace {

constexpr size_t kFileSystemBytes = 2 << 20;
constexpr size_t kImageBytes = 8 << 20;  // sparse: only 2 MiB of it can exist
constexpr size_t kChunk = 256 << 10;

struct FullDiskConfig {
  const char* name;
  AioEngine engine;
  bool nowait;
};

class EnospcTest : public testing::MainLoopTest,
                   public ::testing::WithParamInterface<FullDiskConfig> {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(testing::DiskDirectory());
    mount_point_ = scratch_->File("small");
    ASSERT_EQ(mkdir(mount_point_.c_str(), 0700), 0) << strerror(errno);
    std::string size = "size=" + std::to_string(kFileSystemBytes);
    ASSERT_EQ(mount("kvmini-enospc", mount_point_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV,
                    size.c_str()),
              0)
        << "mounting a " << kFileSystemBytes << "-byte tmpfs on " << mount_point_
        << " failed: " << strerror(errno) << " (this test needs root)";
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) {
      EXPECT_EQ(umount2(mount_point_.c_str(), MNT_DETACH), 0) << strerror(errno);
    }
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
  std::string mount_point_;
  bool mounted_ = false;
};

TEST_P(EnospcTest, TheWriteThatDoesNotFitGetsEnospcAndTheRestWorks) {
  std::string path = mount_point_ + "/disk.img";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, kImageBytes), 0);
  close(fd);

  BlockOptions options;
  options.engine = GetParam().engine;
  options.nowait = GetParam().nowait;
  auto opened = BlockBackend::Open(path, options, main());
  ASSERT_TRUE(opened.ok()) << opened.status();
  BlockBackend& backend = **opened;

  // All chunks at once, as a guest filling its disk would.
  constexpr size_t kChunks = kImageBytes / kChunk;
  std::vector<std::vector<uint8_t>> data(kChunks);
  std::vector<testing::Outcome> outcomes(kChunks);
  for (size_t i = 0; i < kChunks; ++i) {
    data[i].assign(kChunk, static_cast<uint8_t>(i + 1));
    backend.Write(i * kChunk, {iovec{data[i].data(), kChunk}}, testing::Record(outcomes[i]));
  }
  ASSERT_TRUE(testing::PollUntil(main(), [&] { return backend.in_flight() == 0; }));
  size_t written = 0, full = 0;
  for (size_t i = 0; i < kChunks; ++i) {
    ASSERT_EQ(outcomes[i].calls, 1);
    if (outcomes[i].status == 0) {
      ++written;
    } else {
      EXPECT_EQ(outcomes[i].status, -ENOSPC) << "chunk " << i << ": "
                                             << strerror(-outcomes[i].status);
      ++full;
    }
  }
  EXPECT_GT(written, 0u);
  EXPECT_GT(full, 0u) << "a " << kImageBytes << "-byte write fitted in " << kFileSystemBytes;

  // Everything else still works: reads of what was written (and of holes),
  // a flush, and overwriting space that is already allocated.
  for (size_t i = 0; i < kChunks; ++i) {
    std::vector<uint8_t> back(kChunk);
    ASSERT_EQ(testing::ReadNow(backend, main(), i * kChunk, back.data(), kChunk), 0);
    if (outcomes[i].status == 0) {
      EXPECT_TRUE(back == data[i]) << "chunk " << i;
    }
  }
  testing::Outcome flush;
  backend.Flush(testing::Record(flush));
  ASSERT_TRUE(testing::PollUntil(main(), [&] { return flush.calls > 0; }));
  EXPECT_EQ(flush.status, 0);
  for (size_t i = 0; i < kChunks; ++i) {
    if (outcomes[i].status != 0) continue;
    std::vector<uint8_t> again(kChunk, 0xaa);
    EXPECT_EQ(testing::WriteNow(backend, main(), i * kChunk, again.data(), kChunk), 0);
    std::vector<uint8_t> back(kChunk);
    EXPECT_EQ(testing::ReadNow(backend, main(), i * kChunk, back.data(), kChunk), 0);
    EXPECT_TRUE(back == again);
    break;
  }
  // Freeing space makes writes fit again.
  testing::Outcome discard;
  backend.Discard(0, kImageBytes, testing::Record(discard));
  ASSERT_TRUE(testing::PollUntil(main(), [&] { return discard.calls > 0; }));
  EXPECT_EQ(discard.status, 0);
  size_t last = kChunks - 1;
  EXPECT_EQ(testing::WriteNow(backend, main(), last * kChunk, data[last].data(), kChunk), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, EnospcTest,
    ::testing::Values(FullDiskConfig{"IoUringInline", AioEngine::kIoUring, true},
                      FullDiskConfig{"IoUring", AioEngine::kIoUring, false},
                      FullDiskConfig{"Threads", AioEngine::kThreads, false}),
    [](const ::testing::TestParamInfo<FullDiskConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::block

#include "tests/unit/block/block_test_support.h"

#include <fcntl.h>
#include <ftw.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>

namespace kvmini::block::testing {

ScratchDir::ScratchDir(const std::string& parent) {
  std::string pattern = parent + "/kvmini-block-test-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "cannot create a scratch directory under " << parent << ": "
                  << strerror(errno);
    return;
  }
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  nftw(
      path_.c_str(),
      [](const char* path, const struct stat*, int, FTW*) { return remove(path); }, 16,
      FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

std::string DiskDirectory() {
  const char* configured = getenv("KVMINI_BLOCK_TEST_DISK_DIR");
  std::string directory = configured != nullptr ? configured : ".";
  struct statfs info {};
  if (statfs(directory.c_str(), &info) != 0) {
    ADD_FAILURE() << "cannot statfs " << directory << ": " << strerror(errno);
  } else if (info.f_type == TMPFS_MAGIC) {
    ADD_FAILURE() << directory << " is tmpfs; O_DIRECT tests need a disk file system "
                  << "(set KVMINI_BLOCK_TEST_DISK_DIR)";
  }
  return directory;
}

std::vector<uint8_t> RandomBytes(std::mt19937& random, size_t size) {
  std::vector<uint8_t> bytes(size);
  for (size_t i = 0; i < size; i += 4) {
    uint32_t word = random();
    std::memcpy(bytes.data() + i, &word, std::min<size_t>(4, size - i));
  }
  return bytes;
}

std::vector<uint8_t> MakeImage(const std::string& path, size_t size, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<uint8_t> content = RandomBytes(random, size);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  EXPECT_GE(fd, 0) << path << ": " << strerror(errno);
  if (fd < 0) return content;
  EXPECT_EQ(pwrite(fd, content.data(), size, 0), static_cast<ssize_t>(size));
  close(fd);
  return content;
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  std::vector<uint8_t> content;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path << ": " << strerror(errno);
  if (fd < 0) return content;
  struct stat info {};
  fstat(fd, &info);
  content.resize(static_cast<size_t>(info.st_size));
  EXPECT_EQ(pread(fd, content.data(), content.size(), 0), info.st_size);
  close(fd);
  return content;
}

bool PollUntil(util::AioContext& context, absl::FunctionRef<bool()> done,
               absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  // Wakes a blocking poll at the deadline even if nothing else happens.
  util::AioContext::TimerId timer = context.AddTimer(deadline, [] {});
  while (!done() && absl::Now() < deadline) context.Poll(/*blocking=*/true);
  context.CancelTimer(timer);
  return done();
}

BlockBackend::Completion Record(Outcome& outcome) {
  return [&outcome](int status) {
    ++outcome.calls;
    outcome.status = status;
  };
}

int ReadNow(BlockBackend& backend, util::AioContext& context, uint64_t offset, void* data,
            size_t length) {
  Outcome outcome;
  backend.Read(offset, {iovec{data, length}}, Record(outcome));
  EXPECT_TRUE(PollUntil(context, [&] { return outcome.calls > 0; }));
  EXPECT_EQ(outcome.calls, 1);
  return outcome.status;
}

int WriteNow(BlockBackend& backend, util::AioContext& context, uint64_t offset,
             const void* data, size_t length) {
  Outcome outcome;
  backend.Write(offset, {iovec{const_cast<void*>(data), length}}, Record(outcome));
  EXPECT_TRUE(PollUntil(context, [&] { return outcome.calls > 0; }));
  EXPECT_EQ(outcome.calls, 1);
  return outcome.status;
}

void MainLoopTest::SetUp() {
  auto context = util::AioContext::CreateMain();
  ASSERT_TRUE(context.ok()) << context.status();
  main_ = std::move(*context);
}

}  // namespace kvmini::block::testing

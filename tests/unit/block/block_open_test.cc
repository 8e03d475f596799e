// Opening images: every bad input gives an error naming the path and the
// reason, and the engine is chosen (or refused) as asked, including when
// io_uring is forbidden the way a seccomp profile or sysctl forbids it.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <thread>

#include "block/block_backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"

namespace kvmini::block {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class BlockOpenTest : public testing::MainLoopTest {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(testing::DiskDirectory());
  }
  void TearDown() override {
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  absl::Status OpenStatus(const std::string& path, BlockOptions options = {}) {
    auto backend = BlockBackend::Open(path, options, main());
    return backend.status();
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
};

TEST_F(BlockOpenTest, MissingFileNamesThePath) {
  std::string path = scratch_->File("missing.img");
  absl::Status status = OpenStatus(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("no such file")));
}

TEST_F(BlockOpenTest, DirectoryIsRefusedReadWriteAndReadOnly) {
  BlockOptions read_only;
  read_only.read_only = true;
  for (const BlockOptions& options : {BlockOptions{}, read_only}) {
    absl::Status status = OpenStatus(scratch_->path(), options);
    EXPECT_FALSE(status.ok());
    EXPECT_THAT(status.message(),
                AllOf(HasSubstr(scratch_->path()), HasSubstr("is a directory")));
  }
}

TEST_F(BlockOpenTest, SizeNotAMultipleOf512IsRefusedWithThatMessage) {
  std::string path = scratch_->File("odd.img");
  testing::MakeImage(path, 1000, 1);
  absl::Status status = OpenStatus(path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr(path), HasSubstr("1000 bytes"), HasSubstr("not a multiple of 512")));
}

TEST_F(BlockOpenTest, CharacterDeviceIsRefused) {
  absl::Status status = OpenStatus("/dev/null");
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), AllOf(HasSubstr("/dev/null"),
                                      HasSubstr("neither a regular file nor a block device")));
}

TEST_F(BlockOpenTest, EmptyPathIsRefused) {
  EXPECT_EQ(OpenStatus("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(BlockOpenTest, DirectOnAFileSystemWithoutODirectSaysSo) {
  // sysfs files open fine, 4096 bytes, but refuse O_DIRECT.
  const std::string path = "/sys/kernel/uevent_seqnum";
  BlockOptions options;
  options.read_only = true;
  ASSERT_TRUE(OpenStatus(path, options).ok()) << OpenStatus(path, options);
  options.direct = true;
  absl::Status status = OpenStatus(path, options);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("does not support O_DIRECT")));
}

TEST_F(BlockOpenTest, NoPermissionIsReportedAndReadOnlySuggested) {
  std::string path = scratch_->File("theirs.img");
  testing::MakeImage(path, 4096, 1);
  ASSERT_EQ(chmod(path.c_str(), 0444), 0);
  absl::Status status;
  // We are root here, which bypasses permission checks; a file-system uid
  // other than 0 drops that for this one thread (setfsuid is per thread).
  std::thread unprivileged([&] {
    ASSERT_EQ(syscall(SYS_setfsuid, 65534), 0);
    ASSERT_NE(syscall(SYS_setfsuid, -1), 0) << "setfsuid did not take effect";
    status = OpenStatus(path);
  });
  unprivileged.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), AllOf(HasSubstr(path), HasSubstr("permission denied"),
                                      HasSubstr("read-only")));
}

// Makes io_uring_setup fail with ENOSYS in the calling thread only, as a
// container's seccomp profile does.
void ForbidIoUringInThisThread() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(std::size(filter)), filter};
  ASSERT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
  ASSERT_EQ(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program), 0);
}

TEST_F(BlockOpenTest, WithoutIoUringAutoFallsBackToThreadsAndIoUringIsRefused) {
  std::string path = scratch_->File("disk.img");
  std::vector<uint8_t> content = testing::MakeImage(path, 65536, 7);
  std::thread confined([&] {
    ForbidIoUringInThisThread();
    auto context = util::AioContext::Create("no-uring");
    ASSERT_TRUE(context.ok());
    util::AioContext::SetCurrent(context->get());

    BlockOptions options;
    options.engine = AioEngine::kIoUring;
    auto refused = BlockBackend::Open(path, options, **context);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(refused.status().message(),
                AllOf(HasSubstr(path), HasSubstr("io_uring"), HasSubstr("aio=threads")));

    options.engine = AioEngine::kAuto;
    auto backend = BlockBackend::Open(path, options, **context);
    ASSERT_TRUE(backend.ok()) << backend.status();
    EXPECT_EQ((*backend)->engine(), AioEngine::kThreads);
    std::vector<uint8_t> data(4096, 0x42), back(4096);
    EXPECT_EQ(testing::WriteNow(**backend, **context, 8192, data.data(), data.size()), 0);
    EXPECT_EQ(testing::ReadNow(**backend, **context, 8192, back.data(), back.size()), 0);
    EXPECT_TRUE(back == data);
    backend->reset();
    util::AioContext::SetCurrent(nullptr);
  });
  confined.join();
}

TEST_F(BlockOpenTest, AutoPicksIoUringWhereItWorks) {
  std::string path = scratch_->File("disk.img");
  testing::MakeImage(path, 65536, 7);
  auto backend = BlockBackend::Open(path, BlockOptions{}, main());
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ((*backend)->engine(), AioEngine::kIoUring);
}

TEST_F(BlockOpenTest, DirectReportsTheFileSystemsAlignment) {
  std::string path = scratch_->File("disk.img");
  testing::MakeImage(path, 65536, 7);
  BlockOptions options;
  options.direct = true;
  auto backend = BlockBackend::Open(path, options, main());
  ASSERT_TRUE(backend.ok()) << backend.status();
  uint32_t alignment = (*backend)->alignment();
  EXPECT_GE(alignment, 512u);
  EXPECT_LE(alignment, 4096u);
  EXPECT_EQ(alignment & (alignment - 1), 0u) << alignment;
}

}  // namespace
}  // namespace kvmini::block

// A forbidden system call stops the whole process with SIGSYS and one line
// naming the thread and the call: from a real IOThread (through a bottom
// half: the test-only way to make it misbehave), and for a table of calls
// each kind of thread must not make, including argument-level refusals
// (an ioctl request a vCPU has no business with, executable memory, a
// signal to another process). Death tests: the filter lives and dies with
// the child process.
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <signal.h>
#include <pthread.h>
#include <termios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <functional>

#include "gtest/gtest.h"
#include "tests/unit/vmm/sandbox/sandbox_test_support.h"
#include "util/aio_context.h"
#include "util/aio_wait.h"
#include "util/iothread.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {
namespace {

using testing::RunInFilteredThread;
using testing::ViolationPattern;

constexpr ThreadKind kEveryKind[] = {ThreadKind::kMain, ThreadKind::kVcpu, ThreadKind::kIoThread,
                                     ThreadKind::kBlockWorker, ThreadKind::kStartupHelper};

class SeccompViolationTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Ends a death-test child whose forbidden call did not stop it: exit code
// 3 (with the reason) instead of the expected SIGSYS fails the test.
[[noreturn]] void ChildSurvived(const char* why) {
  std::fprintf(stderr, "child survived: %s\n", why);
  _exit(3);
}

TEST_F(SeccompViolationTest, IoThreadMakingAForbiddenCallStopsTheProcessNamingThreadAndCall) {
  EXPECT_EXIT(
      {
        auto main_context = util::AioContext::CreateMain();
        if (!main_context.ok()) ChildSurvived("no main loop");
        auto iothread = testing::StartFilteredIoThread("sandbox-io");
        if (!iothread.ok()) ChildSurvived(iothread.status().ToString().c_str());
        // The test-only misbehaviour: a bottom half opening a network socket.
        util::AioWaitBhOneshot((*iothread)->context(),
                               [] { (void)socket(AF_INET, SOCK_STREAM, 0); });
        ChildSurvived("socket() in the IOThread returned");
      },
      ::testing::KilledBySignal(SIGSYS),
      ViolationPattern("sandbox-io", ThreadKind::kIoThread, "socket"));
}

struct ForbiddenCase {
  const char* test_name;
  ThreadKind kind;
  const char* syscall_name;  // as the report names it
  std::function<void()> call;
};

class ForbiddenCallTest : public SeccompViolationTest,
                          public ::testing::WithParamInterface<ForbiddenCase> {};

TEST_P(ForbiddenCallTest, IsReportedAndEndsTheProcess) {
  const ForbiddenCase& forbidden = GetParam();
  EXPECT_EXIT(
      {
        absl::Status status = RunInFilteredThread(forbidden.kind, "sandboxed", forbidden.call);
        ChildSurvived(status.ok() ? "the call returned" : status.ToString().c_str());
      },
      ::testing::KilledBySignal(SIGSYS),
      ViolationPattern("sandboxed", forbidden.kind, forbidden.syscall_name));
}

void OpenPasswd() { (void)open("/etc/passwd", O_RDONLY | O_CLOEXEC); }

void CreateVmThroughAnyFd() {
  // Refused by request number, before the kernel even looks at the fd.
  (void)ioctl(STDERR_FILENO, KVM_CREATE_VM, 0);
}

void MapExecutableMemory() {
  (void)mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

void MakeMemoryExecutable() {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) ChildSurvived("mmap without PROT_EXEC failed");
  (void)mprotect(page, 4096, PROT_READ | PROT_EXEC);
}

void SignalInit() { (void)syscall(SYS_tgkill, 1, 1, 0); }

void RunTrue() {
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  execv("/bin/true", argv);
}

void SetUpARing() { (void)syscall(SYS_io_uring_setup, 4, nullptr); }

// The loop threads may enable their ring (IORING_REGISTER_ENABLE_RINGS) and
// nothing else io_uring_register does: registering buffers (here, on no
// ring at all) must not get past the filter to fail with EBADF.
void RegisterBuffersWithARing() {
  (void)syscall(SYS_io_uring_register, -1, IORING_REGISTER_BUFFERS, nullptr, 0);
}

void AcceptOnAnyFd() { (void)accept4(STDIN_FILENO, nullptr, nullptr, 0); }

void KvmRunOutsideAVcpu() { (void)ioctl(STDERR_FILENO, KVM_RUN, 0); }

INSTANTIATE_TEST_SUITE_P(
    Table, ForbiddenCallTest,
    ::testing::Values(
        ForbiddenCase{"VcpuOpensAFile", ThreadKind::kVcpu, "openat", OpenPasswd},
        ForbiddenCase{"VcpuCreatesAVm", ThreadKind::kVcpu, "ioctl", CreateVmThroughAnyFd},
        ForbiddenCase{"VcpuMapsExecutableMemory", ThreadKind::kVcpu, "mmap", MapExecutableMemory},
        ForbiddenCase{"IoThreadMakesMemoryExecutable", ThreadKind::kIoThread, "mprotect",
                      MakeMemoryExecutable},
        ForbiddenCase{"IoThreadSignalsAnotherProcess", ThreadKind::kIoThread, "tgkill",
                      SignalInit},
        ForbiddenCase{"IoThreadSetsUpANewRing", ThreadKind::kIoThread, "io_uring_setup",
                      SetUpARing},
        ForbiddenCase{"IoThreadRegistersBuffersWithARing", ThreadKind::kIoThread,
                      "io_uring_register", RegisterBuffersWithARing},
        ForbiddenCase{"IoThreadAcceptsAConnection", ThreadKind::kIoThread, "accept4",
                      AcceptOnAnyFd},
        ForbiddenCase{"IoThreadRunsAVcpu", ThreadKind::kIoThread, "ioctl", KvmRunOutsideAVcpu},
        ForbiddenCase{"MainRunsAProgram", ThreadKind::kMain, "execve", RunTrue},
        ForbiddenCase{"MainOpensAFile", ThreadKind::kMain, "openat", OpenPasswd},
        ForbiddenCase{"BlockWorkerOpensASocket", ThreadKind::kBlockWorker, "socket",
                      [] { (void)socket(AF_UNIX, SOCK_STREAM, 0); }},
        ForbiddenCase{"BlockWorkerSubmitsToARing", ThreadKind::kBlockWorker, "io_uring_enter",
                      [] { (void)syscall(SYS_io_uring_enter, -1, 0, 0, 0, nullptr, 0); }},
        ForbiddenCase{"StartupHelperReadsAnFd", ThreadKind::kStartupHelper, "read",
                      [] {
                        char byte;
                        (void)read(STDIN_FILENO, &byte, 1);
                      }},
        ForbiddenCase{"StartupHelperOpensAFile", ThreadKind::kStartupHelper, "openat",
                      OpenPasswd}),
    [](const ::testing::TestParamInfo<ForbiddenCase>& info) { return info.param.test_name; });

// A call through the 32-bit ABI (int 0x80; 20 is getpid there) is refused
// whatever its number, and said to be one.
TEST_F(SeccompViolationTest, CallThroughAnotherAbiIsReportedAsSuch) {
  EXPECT_EXIT(
      {
        (void)RunInFilteredThread(ThreadKind::kIoThread, "sandboxed", [] {
          long result;
          asm volatile("int $0x80" : "=a"(result) : "a"(20L) : "memory");
        });
        ChildSurvived("int 0x80 returned");
      },
      ::testing::KilledBySignal(SIGSYS),
      "thread 'sandboxed' \\(IOThread\\) made forbidden system call number 20 of another ABI "
      "than x86-64");
}

// The other side of the argument checks: the values the lists allow get
// through to the kernel, which answers them as usual.
TEST(SeccompArgumentTest, AllowedValuesOfCheckedArgumentsReachTheKernel) {
  int kvm_run_errno = 0;
  bool mapped = false;
  int signal_result = -1;
  int fd = eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  absl::Status status = RunInFilteredThread(ThreadKind::kVcpu, "sandboxed", [&] {
    // KVM_RUN is on the vCPU list; on an eventfd the kernel says ENOTTY.
    if (ioctl(fd, KVM_RUN, 0) < 0) kvm_run_errno = errno;
    void* page =
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mapped = page != MAP_FAILED;
    if (mapped) munmap(page, 4096);
    // Signal 0 to itself: only checks that it could be sent.
    signal_result = static_cast<int>(syscall(SYS_tgkill, getpid(), gettid(), 0));
  });
  close(fd);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(kvm_run_errno, ENOTTY);
  EXPECT_TRUE(mapped);
  EXPECT_EQ(signal_result, 0);
}

// A fatal signal can land in any thread, and its handler takes the terminal
// on stdin out of raw mode: TCSETS on stdin reaches the kernel in every kind
// of thread (stdin is /dev/null here, which answers ENOTTY).
TEST(SeccompTerminalRestoreTest, TcsetsOnStdinIsAllowedInEveryKindOfThread) {
  EXPECT_EXIT(
      {
        const int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null_fd < 0 || dup2(null_fd, STDIN_FILENO) < 0) _exit(3);
        for (ThreadKind kind : kEveryKind) {
          int tcsets_errno = 0;
          absl::Status status = RunInFilteredThread(kind, "sandboxed", [&] {
            termios settings{};
            if (ioctl(STDIN_FILENO, TCSETS, &settings) < 0) tcsets_errno = errno;
          });
          if (!status.ok() || tcsets_errno != ENOTTY) _exit(4);
        }
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Each kind has its own list: unlink (removing the control socket at exit)
// is the main thread's, and an IOThread making it is stopped.
TEST_F(SeccompViolationTest, ListsArePerKind) {
  EXPECT_EXIT(
      {
        (void)RunInFilteredThread(ThreadKind::kIoThread, "sandboxed", [] { (void)unlink(""); });
        ChildSurvived("unlink returned in an IOThread");
      },
      ::testing::KilledBySignal(SIGSYS),
      ViolationPattern("sandboxed", ThreadKind::kIoThread, "unlink"));
  // The same call in a main-thread filter reaches the kernel (ENOENT).
  int unlink_errno = 0;
  absl::Status status = RunInFilteredThread(ThreadKind::kMain, "sandboxed", [&] {
    if (unlink("") < 0) unlink_errno = errno;
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(unlink_errno, ENOENT);
}

// Creating threads (or processes) after set-up fails with EPERM in every
// kind of thread: glibc does it with all signals blocked, where a trap
// could not be reported.
TEST(SeccompThreadCreationTest, FailsWithEpermInEveryKindOfThread) {
  for (ThreadKind kind : kEveryKind) {
    int create_error = 0;
    absl::Status status = RunInFilteredThread(kind, "sandboxed", [&] {
      pthread_t thread;
      create_error = pthread_create(
          &thread, nullptr, [](void*) -> void* { return nullptr; }, nullptr);
      if (create_error == 0) pthread_join(thread, nullptr);
    });
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(create_error, EPERM) << ThreadKindName(kind);
  }
}

// Abseil's lazy CPU-frequency probe opens a /sys file with flags 0 from
// whichever thread first waits on a contended lock: every kind answers
// that open with ENOENT (/etc/passwd exists, so only the filter can say
// so), while an open with any flag still traps (the table above).
TEST(SeccompReadOnlyOpenTest, PlainReadOnlyOpenAnswersEnoentInEveryKindOfThread) {
  for (ThreadKind kind : kEveryKind) {
    int open_result = 0;
    int open_errno = 0;
    absl::Status status = RunInFilteredThread(kind, "sandboxed", [&] {
      open_result = open("/etc/passwd", O_RDONLY);
      open_errno = errno;
    });
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(open_result, -1) << ThreadKindName(kind);
    EXPECT_EQ(open_errno, ENOENT) << ThreadKindName(kind);
    if (open_result >= 0) close(open_result);
  }
}

// The measurement the start-up helper makes in the background works under
// a filter, so it also works in a vCPU that needs the frequency first. A
// death-test child is a fresh process, where nothing has measured yet.
TEST_F(SeccompViolationTest, CpuFrequencyIsMeasuredUnderTheVcpuFilter) {
  EXPECT_EXIT(
      {
        absl::Status status = RunInFilteredThread(ThreadKind::kVcpu, "vcpu0", [] {
          MeasureCpuFrequency();
        });
        _exit(status.ok() ? 0 : 4);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(SeccompSwitchTest, OffInstallsNothingAndModeParsingNamesTheFlag) {
  ASSERT_TRUE(SetSeccompMode("off").ok());
  EXPECT_FALSE(SeccompEnabled());
  int socket_fd = -1;
  absl::Status status = RunInFilteredThread(ThreadKind::kBlockWorker, "unsandboxed", [&] {
    socket_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  });
  ASSERT_TRUE(SetSeccompMode("on").ok());
  EXPECT_TRUE(SeccompEnabled());
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_GE(socket_fd, 0);
  if (socket_fd >= 0) close(socket_fd);

  absl::Status bad = SetSeccompMode("yes");
  EXPECT_TRUE(absl::IsInvalidArgument(bad));
  EXPECT_EQ(bad.message(), "--seccomp: 'yes' is not 'on' or 'off'");
  EXPECT_TRUE(SeccompEnabled());
}

}  // namespace
}  // namespace kvmini::vmm::sandbox

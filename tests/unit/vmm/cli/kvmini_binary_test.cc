// The kvmini binary end to end on the local /dev/kvm, with a tiny bzImage
// (tests/unit/vmm/machine/tiny_bzimage.h) standing in for Linux: the kernel
// command line reaches the guest, the exit port sets the exit status,
// SIGTERM stops a running guest in order, and each kind of bad usage exits
// with status 2 and one line on stderr.
#include <fcntl.h>
#include <pty.h>
#include <termios.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/machine/tiny_bzimage.h"
#include "tests/unit/vmm/machine/tiny_guest.h"

extern char** environ;

namespace kvmini::vmm::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

struct Result {
  int exit_status = -1;
  std::string stderr_text;
};

class KvminiBinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char directory[] = "/tmp/kvmini-binary-test-XXXXXX";
    ASSERT_NE(mkdtemp(directory), nullptr);
    directory_ = directory;
    kernel_ = directory_ + "/tiny.bzImage";
    ASSERT_TRUE(WriteTinyBzImage(kernel_, 42).ok());
  }
  void TearDown() override {
    std::string command = "rm -rf " + directory_;
    ASSERT_EQ(system(command.c_str()), 0);
  }

  // Starts kvmini with `arguments`, stdin from /dev/null, stderr to
  // StderrPath(); returns its pid, or -1.
  pid_t Spawn(const std::vector<std::string>& arguments) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, StderrPath().c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> all = {KVMINI_BINARY};
    all.insert(all.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (std::string& argument : all) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, KVMINI_BINARY, &actions, nullptr, argv.data(), environ) != 0) {
      ADD_FAILURE() << "cannot start " << KVMINI_BINARY;
      pid = -1;
    }
    posix_spawn_file_actions_destroy(&actions);
    return pid;
  }
  std::string StderrPath() const { return directory_ + "/stderr"; }

  // Runs kvmini with `arguments`; sends `signal_number` after `delay` if set.
  Result Run(const std::vector<std::string>& arguments, int signal_number = 0,
             std::chrono::milliseconds delay = std::chrono::milliseconds(0)) {
    Result result;
    pid_t pid = Spawn(arguments);
    if (pid < 0) return result;
    if (signal_number != 0) {
      std::this_thread::sleep_for(delay);
      kill(pid, signal_number);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
    result.stderr_text = ReadFile(StderrPath());
    return result;
  }
  std::string SerialPath() const { return directory_ + "/serial.log"; }

  std::string directory_;
  std::string kernel_;
};

#define REQUIRE_KVM()                                              \
  if (!KvmAvailable()) GTEST_SKIP() << "/dev/kvm is not available"

TEST_F(KvminiBinaryTest, CommandLineReachesTheGuestAndExitPortSetsTheStatus) {
  REQUIRE_KVM();
  Result result = Run({"--kernel", kernel_, "--serial", "file:" + SerialPath(), "--cmdline",
                       "hello", "--append", "-- sh -c 'exit 7'", "--memory", "64M"});
  EXPECT_EQ(result.exit_status, 42) << result.stderr_text;
  EXPECT_EQ(ReadFile(SerialPath()), "hello -- sh -c 'exit 7'");
}

TEST_F(KvminiBinaryTest, SeccompOffRunsTheSameGuest) {
  REQUIRE_KVM();
  Result result = Run({"--kernel", kernel_, "--serial", "file:" + SerialPath(), "--seccomp=off",
                       "--cmdline", "unfiltered"});
  EXPECT_EQ(result.exit_status, 42) << result.stderr_text;
  EXPECT_EQ(ReadFile(SerialPath()), "unfiltered");
}

TEST_F(KvminiBinaryTest, DefaultCommandLineIsPassed) {
  REQUIRE_KVM();
  Result result = Run({"--kernel", kernel_, "--serial", "file:" + SerialPath(), "--cpus", "2"});
  EXPECT_EQ(result.exit_status, 42) << result.stderr_text;
  EXPECT_THAT(ReadFile(SerialPath()), HasSubstr("console=ttyS0"));
}

TEST_F(KvminiBinaryTest, SigtermStopsARunningGuestInOrder) {
  REQUIRE_KVM();
  std::string spinning = directory_ + "/spin.bzImage";
  ASSERT_TRUE(WriteTinyBzImage(spinning, 0, TinyKernelEnd::kSpin).ok());
  Result result = Run({"--kernel", spinning, "--serial", "none"}, SIGTERM,
                      std::chrono::milliseconds(300));
  EXPECT_EQ(result.exit_status, 128 + SIGTERM);
  EXPECT_THAT(result.stderr_text, HasSubstr("SIGTERM"));
}

TEST_F(KvminiBinaryTest, BadUsageExitsTwoWithOneLine) {
  std::string not_a_kernel = directory_ + "/not-a-kernel";
  {
    std::ofstream file(not_a_kernel);
    file << std::string(4096, 'x');
  }
  std::string big_initrd = directory_ + "/big-initrd";
  ASSERT_EQ(truncate(big_initrd.c_str(), 0), -1);  // does not exist yet
  {
    std::ofstream file(big_initrd);
  }
  ASSERT_EQ(truncate(big_initrd.c_str(), 64 << 20), 0);
  struct Case {
    std::vector<std::string> arguments;
    std::string expected;
    bool needs_kvm;
  };
  const Case cases[] = {
      {{}, "--kernel is required", false},
      {{"--kernel", "/nonexistent/vmlinuz"}, "/nonexistent/vmlinuz", false},
      {{"--kernel", kernel_, "--initrd", "/nonexistent/initrd"}, "/nonexistent/initrd", false},
      {{"--kernel", kernel_, "--memory", "8M"}, "below the minimum", false},
      {{"--kernel", kernel_, "--cpus", "999"}, "--cpus 999", false},
      {{"--kernel", kernel_, "--serial", "file:/nonexistent/dir/log"}, "/nonexistent/dir/log",
       true},
      {{"--kernel", not_a_kernel, "--serial", "none"}, "not a bzImage", true},
      {{"--kernel", kernel_, "--initrd", big_initrd, "--memory", "32M", "--serial", "none"},
       "initrd",
       true},
      {{"--kernel", kernel_, "--cmdline", std::string(3000, 'a'), "--serial", "none"},
       "command line",
       true},
      {{"--frobnicate"}, "unknown flag", false},
      {{"--kernel", kernel_, "--blk", "path=/nonexistent/disk.img"}, "/nonexistent/disk.img",
       false},
      {{"--kernel", kernel_, "--blk", "path=" + kernel_ + ",queues=99"}, "queues=99", false},
      {{"--kernel", kernel_, "--scsi", "path=" + kernel_ + ",iothread=io7"},
       "unknown iothread 'io7'", false},
      {{"--kernel", kernel_, "--serial", "none", "--control", kernel_}, "--control " + kernel_,
       true},
      {{"--kernel", kernel_, "--seccomp", "maybe"}, "--seccomp maybe: use on or off", false},
  };
  for (const Case& c : cases) {
    if (c.needs_kvm && !KvmAvailable()) continue;
    Result result = Run(c.arguments);
    EXPECT_EQ(result.exit_status, 2) << c.expected << ": " << result.stderr_text;
    EXPECT_THAT(result.stderr_text, HasSubstr(c.expected));
    // One line: the error, nothing else.
    EXPECT_EQ(std::count(result.stderr_text.begin(), result.stderr_text.end(), '\n'), 1)
        << result.stderr_text;
  }
}

// kvmini-ctl against a running kvmini (a spinning tiny guest with two disks
// on an IOThread): each command answers, stop parks the vCPU, errors exit 1
// naming the device, and quit ends kvmini with status 0 and removes the socket.
TEST_F(KvminiBinaryTest, ControlSocketDrivesARunningMachine) {
  REQUIRE_KVM();
  std::string spinning = directory_ + "/spin.bzImage";
  ASSERT_TRUE(WriteTinyBzImage(spinning, 0, TinyKernelEnd::kSpin).ok());
  std::string image = directory_ + "/disk.img";
  {
    std::ofstream file(image);
  }
  ASSERT_EQ(truncate(image.c_str(), 4 << 20), 0);
  std::string socket_path = directory_ + "/control.sock";
  pid_t pid = Spawn({"--kernel", spinning, "--serial", "none", "--iothread", "io0", "--blk",
                     "path=" + image + ",iothread=io0", "--scsi", "path=" + image + ",readonly=on",
                     "--control", socket_path});
  ASSERT_GT(pid, 0);
  for (int i = 0; i < 200 && access(socket_path.c_str(), F_OK) != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Runs kvmini-ctl; returns its exit status and output (stdout and stderr).
  auto ctl = [&](const std::string& arguments, std::string* output) {
    std::string command =
        std::string(KVMINI_CTL_BINARY) + " --socket " + socket_path + " " + arguments + " 2>&1";
    FILE* pipe = popen(command.c_str(), "r");
    output->clear();
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, n);
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  EXPECT_EQ(ctl("query-status", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("\"status\":\"running\""));
  EXPECT_THAT(out, HasSubstr("\"vcpus\":1"));
  EXPECT_EQ(ctl("stop", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("paused"));
  EXPECT_EQ(ctl("query-status", &out), 0);
  EXPECT_THAT(out, HasSubstr("\"running\":false"));
  EXPECT_EQ(ctl("query-devices", &out), 0);
  EXPECT_THAT(out, HasSubstr("\"id\":\"blk0\""));
  EXPECT_THAT(out, HasSubstr("\"id\":\"scsi0\""));
  EXPECT_THAT(out, HasSubstr("\"iothread\":\"io0\""));
  EXPECT_EQ(ctl("dataplane-stop device=blk0", &out), 0) << out;
  EXPECT_EQ(ctl("device-set-iothread device=scsi0 iothread=io0", &out), 0) << out;
  EXPECT_EQ(ctl("device-set-iothread device=blk0 iothread=null", &out), 0) << out;
  EXPECT_EQ(ctl("dataplane-stop device=nope", &out), 1);
  EXPECT_THAT(out, HasSubstr("no disk 'nope'"));
  EXPECT_EQ(ctl("cont", &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("running"));
  EXPECT_EQ(ctl("quit", &out), 0) << out;
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadFile(StderrPath());
  EXPECT_THAT(ReadFile(StderrPath()), HasSubstr("quit on the control socket"));
  EXPECT_NE(access(socket_path.c_str(), F_OK), 0);
}

// --serial stdio on a terminal: raw mode while the guest runs, the
// original settings back afterwards - after an orderly stop (SIGTERM) and
// after a crash (SIGABRT).
class TerminalTest : public KvminiBinaryTest {
 protected:
  void SetUp() override {
    KvminiBinaryTest::SetUp();
    ASSERT_EQ(openpty(&controller_, &terminal_, nullptr, nullptr, nullptr), 0);
    ASSERT_EQ(tcgetattr(terminal_, &original_), 0);
    ASSERT_NE(original_.c_lflag & ICANON, 0u);
    spinning_ = directory_ + "/spin.bzImage";
    ASSERT_TRUE(WriteTinyBzImage(spinning_, 0, TinyKernelEnd::kSpin).ok());
  }
  void TearDown() override {
    close(controller_);
    close(terminal_);
    KvminiBinaryTest::TearDown();
  }
  // Starts kvmini on the terminal, waits for raw mode, sends `signal_number`
  // and returns how the process ended (1000 + signal if killed).
  int RunUntilRawThenSignal(int signal_number) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
      posix_spawn_file_actions_adddup2(&actions, terminal_, fd);
    }
    std::string binary = KVMINI_BINARY;
    std::vector<std::string> arguments = {binary, "--kernel", spinning_, "--serial", "stdio"};
    std::vector<char*> argv;
    for (std::string& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid;
    EXPECT_EQ(posix_spawn(&pid, KVMINI_BINARY, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    bool raw = false;
    for (int i = 0; i < 500 && !raw; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      termios now{};
      tcgetattr(terminal_, &now);
      raw = (now.c_lflag & (ICANON | ECHO)) == 0;
    }
    EXPECT_TRUE(raw) << "kvmini never put the terminal in raw mode";
    kill(pid, signal_number);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  }
  void ExpectRestored() {
    termios now{};
    ASSERT_EQ(tcgetattr(terminal_, &now), 0);
    EXPECT_EQ(now.c_lflag, original_.c_lflag);
    EXPECT_EQ(now.c_iflag, original_.c_iflag);
  }

  int controller_ = -1;
  int terminal_ = -1;
  termios original_{};
  std::string spinning_;
};

TEST_F(TerminalTest, RawModeIsUndoneAfterAnOrderlyStop) {
  REQUIRE_KVM();
  EXPECT_EQ(RunUntilRawThenSignal(SIGTERM), 128 + SIGTERM);
  ExpectRestored();
}

TEST_F(TerminalTest, RawModeIsUndoneAfterACrash) {
  REQUIRE_KVM();
  EXPECT_EQ(RunUntilRawThenSignal(SIGABRT), 1000 + SIGABRT);
  ExpectRestored();
}

TEST_F(KvminiBinaryTest, HelpExitsZero) {
  Result result = Run({"--help"});
  EXPECT_EQ(result.exit_status, 0);
  EXPECT_THAT(result.stderr_text, Not(HasSubstr("error")));
}

}  // namespace
}  // namespace kvmini::vmm::testing

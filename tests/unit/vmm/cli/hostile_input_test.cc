// kvmini given mistaken or hostile command lines, run as a real process: a
// table of malformed invocations (missing, unreadable and special files,
// directories given as images, a kernel that is not one or is truncated,
// absurd sizes, duplicate ids, unknown keys, undefined iothreads, control
// socket paths that cannot be used, over-long command lines). Each must
// exit with status 2 and exactly one line on stderr naming the problem -
// never a signal, a core dump or a hang - and leave the directory it was
// pointed at as it was: no socket, serial log or image created, nothing
// truncated. Every check runs before /dev/kvm is opened, so this runs on
// hosts without KVM; the few rows that get as far as the loader are
// skipped only where /dev/kvm is absent.
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
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

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << contents;
}

// What a directory holds: name -> (type and mode, size). A changed size
// catches a file kvmini truncated or wrote to.
using Snapshot = std::map<std::string, std::pair<mode_t, off_t>>;

Snapshot TakeSnapshot(const std::string& directory) {
  Snapshot snapshot;
  DIR* dir = opendir(directory.c_str());
  if (dir == nullptr) return snapshot;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    struct stat info {};
    if (lstat((directory + "/" + name).c_str(), &info) == 0) {
      snapshot[name] = {info.st_mode, S_ISREG(info.st_mode) ? info.st_size : 0};
    }
  }
  closedir(dir);
  return snapshot;
}

std::string Describe(const Snapshot& snapshot) {
  std::string text;
  for (const auto& [name, entry] : snapshot) {
    text += name + " (mode " + std::to_string(entry.first) + ", " + std::to_string(entry.second) +
            " bytes)\n";
  }
  return text;
}

struct Outcome {
  bool exited = false;
  int exit_status = -1;
  int signal_number = 0;
  bool core_dumped = false;
  bool hung = false;
  std::string stderr_text;
};

struct Case {
  const char* name;
  std::vector<std::string> arguments;  // "@" is replaced by the work directory
  std::string expected;                // in the error line ("@" as above)
  bool needs_kvm = false;              // the error comes from the kernel loader
};

class HostileInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char directory[] = "/tmp/kvmini-hostile-input-XXXXXX";
    ASSERT_NE(mkdtemp(directory), nullptr);
    root_ = directory;
    work_ = root_ + "/work";
    ASSERT_EQ(mkdir(work_.c_str(), 0755), 0);
    const std::string w = work_ + "/";

    std::vector<uint8_t> kernel = TinyBzImage(42);
    WriteFile(w + "kernel", std::string(kernel.begin(), kernel.end()));
    // The header announces (setup_sects + 1) sectors of setup and then the
    // kernel proper; keep the setup and 16 bytes of the kernel.
    const size_t setup_bytes = (static_cast<size_t>(kernel[0x1F1]) + 1) * 512;
    ASSERT_GT(kernel.size(), setup_bytes + 32);
    WriteFile(w + "truncated", std::string(kernel.begin(), kernel.begin() + setup_bytes + 16));
    WriteFile(w + "not-a-kernel", std::string(8192, 'x'));
    // ELF magic and nothing a loader can use.
    WriteFile(w + "elf-junk", std::string("\x7f"
                                          "ELF",
                                          4) +
                                  std::string(4092, '\0'));
    WriteFile(w + "empty", "");
    WriteFile(w + "initrd", "initrd bytes");
    WriteFile(w + "secret", "unreadable");
    ASSERT_EQ(chmod((w + "secret").c_str(), 0), 0);
    WriteFile(w + "control-file", "a regular file where the socket would go");
    ASSERT_EQ(mkdir((w + "dir").c_str(), 0755), 0);
    ASSERT_EQ(mkfifo((w + "fifo").c_str(), 0644), 0);
    for (const char* image : {"disk.img", "ro.img"}) {
      WriteFile(w + image, "");
      ASSERT_EQ(truncate((w + image).c_str(), 1 << 20), 0);
    }
    ASSERT_EQ(chmod((w + "ro.img").c_str(), 0444), 0);
    // A valid header in front of 4 GiB (sparse): more than any --memory here.
    std::vector<uint8_t> huge = TinyBzImage(42);
    WriteFile(w + "huge-kernel", std::string(huge.begin(), huge.end()));
    ASSERT_EQ(truncate((w + "huge-kernel").c_str(), 4ll << 30), 0);
    WriteFile(w + "big-initrd", "");
    ASSERT_EQ(truncate((w + "big-initrd").c_str(), 64 << 20), 0);

    // A control socket some other process is serving.
    live_socket_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(live_socket_, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    const std::string live = w + "live.sock";
    ASSERT_LT(live.size(), sizeof(address.sun_path));
    std::memcpy(address.sun_path, live.data(), live.size());
    ASSERT_EQ(bind(live_socket_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    ASSERT_EQ(listen(live_socket_, 16), 0);
  }

  void TearDown() override {
    if (live_socket_ >= 0) close(live_socket_);
    std::string command = "rm -rf " + root_;
    ASSERT_EQ(system(command.c_str()), 0);
  }

  std::string Expand(const std::string& text) const {
    std::string result;
    for (char c : text) {
      if (c == '@') {
        result += work_;
      } else {
        result += c;
      }
    }
    return result;
  }

  // Runs kvmini with `arguments`, stdin from /dev/null, stdout discarded,
  // stderr captured. The child runs without the capabilities that let root
  // read any file, so a mode-000 file is unreadable to it as to a user.
  Outcome Run(const std::vector<std::string>& arguments) {
    Outcome outcome;
    const std::string stderr_path = root_ + "/stderr";
    std::vector<std::string> all = {KVMINI_BINARY};
    all.insert(all.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (std::string& argument : all) argv.push_back(argument.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid == 0) {
      int in = open("/dev/null", O_RDONLY);
      int out = open("/dev/null", O_WRONLY);
      int err = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in < 0 || out < 0 || err < 0) _exit(120);
      dup2(in, STDIN_FILENO);
      dup2(out, STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      // Harmless (EPERM) when not root.
      prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0);
      prctl(PR_CAPBSET_DROP, CAP_DAC_READ_SEARCH, 0, 0, 0);
      execve(KVMINI_BINARY, argv.data(), environ);
      _exit(121);
    }
    if (pid < 0) {
      ADD_FAILURE() << "fork: " << strerror(errno);
      return outcome;
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        outcome.hung = true;
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (WIFEXITED(status)) {
      outcome.exited = true;
      outcome.exit_status = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      outcome.signal_number = WTERMSIG(status);
      outcome.core_dumped = WCOREDUMP(status);
    }
    outcome.stderr_text = ReadFile(stderr_path);
    return outcome;
  }

  // Runs one row and checks everything the table promises.
  void Check(const Case& row) {
    SCOPED_TRACE(row.name);
    std::vector<std::string> arguments;
    for (const std::string& argument : row.arguments) arguments.push_back(Expand(argument));
    const Snapshot before = TakeSnapshot(work_);
    Outcome outcome = Run(arguments);
    EXPECT_FALSE(outcome.hung) << "kvmini did not exit within 30 s";
    EXPECT_EQ(outcome.signal_number, 0) << "killed by signal " << outcome.signal_number << "\n"
                                        << outcome.stderr_text;
    EXPECT_FALSE(outcome.core_dumped);
    EXPECT_TRUE(outcome.exited);
    EXPECT_EQ(outcome.exit_status, 2) << outcome.stderr_text;
    EXPECT_THAT(outcome.stderr_text, HasSubstr(Expand(row.expected)));
    EXPECT_EQ(std::count(outcome.stderr_text.begin(), outcome.stderr_text.end(), '\n'), 1)
        << "exactly one line:\n"
        << outcome.stderr_text;
    const Snapshot after = TakeSnapshot(work_);
    EXPECT_EQ(before, after) << "before:\n" << Describe(before) << "after:\n" << Describe(after);
  }

  std::string root_;
  std::string work_;
  int live_socket_ = -1;
};

std::vector<std::string> ManyIothreads(int count) {
  std::vector<std::string> arguments = {"--kernel", "@/kernel"};
  for (int i = 0; i < count; ++i) {
    arguments.push_back("--iothread");
    arguments.push_back("io" + std::to_string(i));
  }
  return arguments;
}

const Case kCases[] = {
    // Files given for the kernel and initrd.
    {"NoKernel", {}, "--kernel is required"},
    {"KernelMissing", {"--kernel", "@/nope"}, "@/nope: No such file"},
    {"KernelIsADirectory", {"--kernel", "@/dir"}, "@/dir: not a regular file"},
    {"KernelIsAFifo", {"--kernel", "@/fifo"}, "@/fifo: not a regular file"},
    {"KernelUnreadable", {"--kernel", "@/secret"}, "@/secret: Permission denied"},
    {"KernelEmpty", {"--kernel", "@/empty"}, "@/empty: the file is empty"},
    {"KernelNotAKernel", {"--kernel", "@/not-a-kernel"}, "@/not-a-kernel: not a bzImage"},
    {"KernelTruncated", {"--kernel", "@/truncated"}, "@/truncated: truncated"},
    {"KernelIsACharacterDevice", {"--kernel", "/dev/zero"}, "/dev/zero: not a regular file"},
    {"KernelLargerThanMemory",
     {"--kernel", "@/huge-kernel", "--memory", "64M", "--serial", "file:@/serial.log"},
     "@/huge-kernel",
     true},
    {"KernelElfJunk", {"--kernel", "@/elf-junk", "--serial", "none"}, "@/elf-junk", true},
    {"InitrdMissing", {"--kernel", "@/kernel", "--initrd", "@/nope"}, "--initrd @/nope"},
    {"InitrdIsADirectory", {"--kernel", "@/kernel", "--initrd", "@/dir"}, "not a regular file"},
    {"InitrdTooBigForMemory",
     {"--kernel", "@/kernel", "--initrd", "@/big-initrd", "--memory", "32M", "--serial",
      "file:@/serial.log", "--control", "@/ctl.sock"},
     "initrd",
     true},
    // Sizes and counts.
    {"MemoryZero", {"--kernel", "@/kernel", "--memory", "0"}, "--memory 0: below the minimum"},
    {"MemoryNegative", {"--kernel", "@/kernel", "--memory", "-1M"}, "--memory -1M: not a size"},
    {"MemoryUnknownUnit", {"--kernel", "@/kernel", "--memory", "1Q"}, "--memory 1Q: unknown unit"},
    {"MemoryHuge", {"--kernel", "@/kernel", "--memory", "99999999G"}, "--memory 99999999G"},
    {"MemoryOverflows",
     {"--kernel", "@/kernel", "--memory", "99999999999999999999G"},
     "--memory 99999999999999999999G"},
    {"MemoryEmpty", {"--kernel", "@/kernel", "--memory="}, "not a size"},
    {"MemoryNotWholePages", {"--kernel", "@/kernel", "--memory", "16385K"}, "4 KiB pages"},
    {"CpusZero", {"--kernel", "@/kernel", "--cpus", "0"}, "--cpus 0"},
    {"CpusNotANumber", {"--kernel", "@/kernel", "--cpus", "many"}, "--cpus many"},
    // Disks and IOThreads.
    {"DuplicateDiskIds",
     {"--kernel", "@/kernel", "--blk", "path=@/disk.img,id=d0", "--scsi", "path=@/disk.img,id=d0"},
     "duplicate disk id 'd0'"},
    {"DuplicateOfADefaultId",
     {"--kernel", "@/kernel", "--blk", "path=@/disk.img", "--blk", "path=@/disk.img,id=blk0"},
     "duplicate disk id 'blk0'"},
    {"UnknownBlkKey",
     {"--kernel", "@/kernel", "--blk", "path=@/disk.img,colour=red"},
     "unknown key 'colour'"},
    {"UnknownScsiKey",
     {"--kernel", "@/kernel", "--scsi", "path=@/disk.img,cache=none"},
     "unknown key 'cache'"},
    {"UndefinedIothread",
     {"--kernel", "@/kernel", "--iothread", "io0", "--blk", "path=@/disk.img,iothread=io9"},
     "unknown iothread 'io9'"},
    {"DuplicateIothread",
     {"--kernel", "@/kernel", "--iothread", "io0", "--iothread", "io0"},
     "--iothread io0: given twice"},
    {"TooManyIothreads", ManyIothreads(65), "--iothread given 65 times"},
    {"ImageMissing", {"--kernel", "@/kernel", "--blk", "path=@/nope.img"}, "@/nope.img"},
    {"ImageIsADirectory", {"--kernel", "@/kernel", "--scsi", "path=@/dir"}, "@/dir"},
    {"ReadOnlyImageIsAFifo",
     {"--kernel", "@/kernel", "--blk", "path=@/fifo,readonly=on"},
     "not a regular file or block device"},
    {"ReadOnlyFileAsWritableImage",
     {"--kernel", "@/kernel", "--blk", "path=@/ro.img"},
     "readonly=on"},
    {"EmptyDiskOption", {"--kernel", "@/kernel", "--blk", ""}, "empty option"},
    {"ZeroQueues", {"--kernel", "@/kernel", "--blk", "path=@/disk.img,queues=0"}, "queues=0"},
    {"TooManyDisks",
     {"--kernel", "@/kernel",
      "--blk",    "path=@/disk.img,id=a",
      "--blk",    "path=@/disk.img,id=b",
      "--blk",    "path=@/disk.img,id=c",
      "--blk",    "path=@/disk.img,id=d",
      "--blk",    "path=@/disk.img,id=e",
      "--blk",    "path=@/disk.img,id=f",
      "--blk",    "path=@/disk.img,id=g",
      "--blk",    "path=@/disk.img,id=h",
      "--blk",    "path=@/disk.img,id=i",
      "--blk",    "path=@/disk.img,id=j",
      "--blk",    "path=@/disk.img,id=k",
      "--blk",    "path=@/disk.img,id=l",
      "--blk",    "path=@/disk.img,id=m",
      "--blk",    "path=@/disk.img,id=n",
      "--blk",    "path=@/disk.img,id=o",
      "--blk",    "path=@/disk.img,id=p",
      "--blk",    "path=@/disk.img,id=q",
      "--blk",    "path=@/disk.img,id=r",
      "--blk",    "path=@/disk.img,id=s",
      "--blk",    "path=@/disk.img,id=t",
      "--blk",    "path=@/disk.img,id=u",
      "--blk",    "path=@/disk.img,id=v",
      "--blk",    "path=@/disk.img,id=w",
      "--blk",    "path=@/disk.img,id=x"},
     "disks requested"},
    // The control socket.
    {"ControlInMissingDirectory",
     {"--kernel", "@/kernel", "--control", "@/missing/ctl.sock"},
     "--control @/missing/ctl.sock"},
    {"ControlInUseByALiveSocket",
     {"--kernel", "@/kernel", "--control", "@/live.sock"},
     "another process is listening"},
    {"ControlIsARegularFile",
     {"--kernel", "@/kernel", "--control", "@/control-file"},
     "not a socket"},
    {"ControlPathTooLong",
     {"--kernel", "@/kernel", "--control", "@/" + std::string(200, 's')},
     "bytes long"},
    // Nothing is created when a later check fails.
    {"NoSocketOrLogLeftWhenTheKernelIsBad",
     {"--kernel", "@/not-a-kernel", "--serial", "file:@/serial.log", "--control", "@/ctl.sock"},
     "not a bzImage"},
    // The kernel command line and other flags.
    {"CommandLineTooLong",
     {"--kernel", "@/kernel", "--cmdline", std::string(3000, 'a')},
     "command line is 3000 bytes"},
    {"AppendTooLong",
     {"--kernel", "@/kernel", "--append", std::string(100000, 'b')},
     "accepts at most 2047"},
    {"SerialInMissingDirectory",
     {"--kernel", "@/kernel", "--serial", "file:@/missing/log"},
     "@/missing"},
    {"SerialLogWouldOverwriteADisk",
     {"--kernel", "@/kernel", "--blk", "path=@/disk.img,id=vda", "--serial", "file:@/disk.img"},
     "is the file of --blk id=vda"},
    {"SerialLogWouldOverwriteTheKernel",
     {"--kernel", "@/kernel", "--serial", "file:@/kernel"},
     "is the file of --kernel"},
    {"SerialIsADirectory", {"--kernel", "@/kernel", "--serial", "file:@/dir"}, "is a directory"},
    {"SerialUnknownKind", {"--kernel", "@/kernel", "--serial", "tcp:1234"}, "--serial"},
    {"UnknownFlag", {"--kernel", "@/kernel", "--frobnicate"}, "unknown flag --frobnicate"},
    {"StrayArgument", {"--kernel", "@/kernel", "vmlinuz"}, "unexpected argument 'vmlinuz'"},
    {"FlagWithoutValue", {"--kernel"}, "--kernel needs a value"},
    {"SeccompNeitherOnNorOff", {"--kernel", "@/kernel", "--seccomp", "maybe"}, "--seccomp maybe"},
};

TEST_F(HostileInputTest, EachExitsTwoWithOneLineAndLeavesNothingBehind) {
  int checked = 0;
  for (const Case& row : kCases) {
    if (row.needs_kvm && !KvmAvailable()) continue;
    Check(row);
    ++checked;
  }
  EXPECT_GE(checked, 25);
  // The live socket still belongs to its owner.
  struct stat info {};
  ASSERT_EQ(lstat((work_ + "/live.sock").c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
}

}  // namespace
}  // namespace kvmini::vmm::testing

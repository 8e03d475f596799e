// The kvmini command line: flag parsing, size parsing, validation of every
// flag, and --help documenting every flag. Each usage mistake must be an
// InvalidArgument error (exit status 2) with a message naming the problem.
#include <unistd.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/machine/cli.h"
#include "vmm/machine/launch_options.h"

namespace kvmini::vmm {
namespace {

using ::testing::HasSubstr;

class TempFile {
 public:
  explicit TempFile(const std::string& contents) {
    char name[] = "/tmp/kvmini-cli-test-XXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, contents.data(), contents.size()),
              static_cast<ssize_t>(contents.size()));
    close(fd);
    path_ = name;
  }
  ~TempFile() { unlink(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ParseCliTest, ReadsBothFlagFormsAndKeepsDefaults) {
  auto request = ParseCli({"--kernel=/k", "--cpus", "4", "-memory=2G", "--append", "-- true"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_FALSE(request->help);
  EXPECT_EQ(request->flags.kernel, "/k");
  EXPECT_EQ(request->flags.cpus, 4);
  EXPECT_EQ(request->flags.memory, "2G");
  EXPECT_EQ(request->flags.append, "-- true");
  EXPECT_EQ(request->flags.serial, "stdio");
  EXPECT_EQ(request->flags.cmdline, kDefaultKernelCommandLine);
  // A second parse starts from the defaults again.
  auto again = ParseCli({"--kernel", "/other"});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->flags.cpus, 1);
  EXPECT_EQ(again->flags.memory, "512M");
}

TEST(ParseCliTest, HelpIsRecognised) {
  for (const char* flag : {"--help", "-h", "--helpfull"}) {
    auto request = ParseCli({"--kernel", "/k", flag});
    ASSERT_TRUE(request.ok());
    EXPECT_TRUE(request->help) << flag;
  }
}

TEST(ParseCliTest, MistakesAreOneLineInvalidArgumentErrors) {
  struct Case {
    std::vector<std::string> arguments;
    std::string expected;
  };
  const Case cases[] = {
      {{"--bogus", "1"}, "unknown flag --bogus"},
      {{"--kernel"}, "--kernel needs a value"},
      {{"--cpus", "many"}, "--cpus many"},
      {{"vmlinuz"}, "unexpected argument 'vmlinuz'"},
      {{"--kernel", "/k", "--", "sh"}, "unexpected argument '--'"},
  };
  for (const Case& c : cases) {
    auto request = ParseCli(c.arguments);
    ASSERT_FALSE(request.ok()) << c.expected;
    EXPECT_TRUE(absl::IsInvalidArgument(request.status()));
    EXPECT_THAT(request.status().message(), HasSubstr(c.expected));
    EXPECT_EQ(request.status().message().find('\n'), absl::string_view::npos);
  }
}

TEST(UsageTextTest, DocumentsEveryFlagAndTheExitStatuses) {
  std::string usage = UsageText("kvmini");
  for (const char* flag :
       {"--kernel", "--initrd", "--cmdline", "--append", "--cpus", "--memory", "--serial"}) {
    EXPECT_THAT(usage, HasSubstr(flag));
  }
  EXPECT_THAT(usage, HasSubstr("default: 512M"));
  EXPECT_THAT(usage, HasSubstr("Exit status"));
  EXPECT_THAT(usage, HasSubstr("0xf4"));
}

TEST(ParseMemorySizeTest, AcceptsUnitsAndBareMebibytes) {
  EXPECT_EQ(*ParseMemorySize("512M"), 512ull << 20);
  EXPECT_EQ(*ParseMemorySize("2G"), 2ull << 30);
  EXPECT_EQ(*ParseMemorySize("1536m"), 1536ull << 20);
  EXPECT_EQ(*ParseMemorySize("4096K"), 4ull << 20);
  EXPECT_EQ(*ParseMemorySize("1T"), 1ull << 40);
  EXPECT_EQ(*ParseMemorySize("256"), 256ull << 20);
}

TEST(ParseMemorySizeTest, RejectsNonsense) {
  for (const char* bad : {"", "M", "12X", "-1G", "1.5G", "3K", "99999999999999999999G"}) {
    auto size = ParseMemorySize(bad);
    ASSERT_FALSE(size.ok()) << bad;
    EXPECT_THAT(size.status().message(), HasSubstr("--memory"));
  }
}

class ValidateTest : public ::testing::Test {
 protected:
  LaunchFlags Flags() {
    LaunchFlags flags;
    flags.kernel = kernel_.path();
    return flags;
  }
  void ExpectUsageError(const LaunchFlags& flags, const std::string& expected) {
    auto options = ValidateLaunchFlags(flags);
    ASSERT_FALSE(options.ok()) << expected;
    EXPECT_TRUE(absl::IsInvalidArgument(options.status()));
    EXPECT_THAT(options.status().message(), HasSubstr(expected));
  }
  TempFile kernel_{"not really a kernel"};
  TempFile initrd_{"initrd bytes"};
};

TEST_F(ValidateTest, GoodFlagsBecomeOptions) {
  LaunchFlags flags = Flags();
  flags.initrd = initrd_.path();
  flags.cpus = 2;
  flags.memory = "1G";
  flags.serial = "file:/tmp/x.log";
  flags.append = "-- sh -c 'exit 7'";
  auto options = ValidateLaunchFlags(flags);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->kernel_path, kernel_.path());
  EXPECT_EQ(options->initrd_path, initrd_.path());
  EXPECT_EQ(options->vcpu_count, 2u);
  EXPECT_EQ(options->memory_bytes, 1ull << 30);
  EXPECT_EQ(options->serial.kind, hw::SerialSpec::Kind::kFile);
  EXPECT_EQ(options->kernel_command_line,
            std::string(kDefaultKernelCommandLine) + " -- sh -c 'exit 7'");
}

TEST_F(ValidateTest, EachBadFlagIsNamed) {
  ExpectUsageError(LaunchFlags{}, "--kernel is required");
  LaunchFlags flags = Flags();
  flags.kernel = "/nonexistent/vmlinuz";
  ExpectUsageError(flags, "--kernel /nonexistent/vmlinuz: No such file");
  flags = Flags();
  flags.kernel = "/tmp";
  ExpectUsageError(flags, "not a regular file");
  flags = Flags();
  flags.initrd = "/nonexistent/initrd";
  ExpectUsageError(flags, "--initrd /nonexistent/initrd");
  flags = Flags();
  flags.memory = "8M";
  ExpectUsageError(flags, "below the minimum");
  flags = Flags();
  flags.cpus = 0;
  ExpectUsageError(flags, "--cpus 0");
  flags = Flags();
  flags.cpus = 256;
  ExpectUsageError(flags, "--cpus 256");
  flags = Flags();
  flags.serial = "pty";
  ExpectUsageError(flags, "--serial");
}

TEST_F(ValidateTest, EmptyKernelFileIsRejected) {
  TempFile empty("");
  LaunchFlags flags = Flags();
  flags.kernel = empty.path();
  ExpectUsageError(flags, "empty");
}

}  // namespace
}  // namespace kvmini::vmm

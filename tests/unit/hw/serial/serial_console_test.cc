// --serial parsing and the file console.
#include "hw/serial/serial_console.h"

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvmini::hw {
namespace {

using ::testing::HasSubstr;

TEST(SerialSpecTest, ParsesTheThreeForms) {
  auto stdio = ParseSerialSpec("stdio");
  ASSERT_TRUE(stdio.ok());
  EXPECT_EQ(stdio->kind, SerialSpec::Kind::kStdio);
  auto none = ParseSerialSpec("none");
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->kind, SerialSpec::Kind::kNone);
  auto file = ParseSerialSpec("file:/tmp/console.log");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->kind, SerialSpec::Kind::kFile);
  EXPECT_EQ(file->path, "/tmp/console.log");
}

TEST(SerialSpecTest, RejectsAnythingElseSayingWhatIsAccepted) {
  for (const char* bad : {"", "file:", "tcp:1234", "STDIO"}) {
    auto spec = ParseSerialSpec(bad);
    ASSERT_FALSE(spec.ok()) << bad;
    EXPECT_THAT(spec.status().message(), HasSubstr("stdio, file:PATH, none"));
  }
}

TEST(SerialConsoleTest, FileConsoleWritesGuestOutput) {
  char path[] = "/tmp/kvmini-serial-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    auto console = SerialConsole::Create({SerialSpec::Kind::kFile, path});
    ASSERT_TRUE(console.ok()) << console.status();
    for (char c : std::string("boot ok\n")) (*console)->Output(static_cast<uint8_t>(c));
  }
  std::ifstream file(path);
  std::stringstream contents;
  contents << file.rdbuf();
  EXPECT_EQ(contents.str(), "boot ok\n");
  unlink(path);
}

TEST(SerialConsoleTest, UncreatableFileIsAnErrorNamingIt) {
  auto console = SerialConsole::Create({SerialSpec::Kind::kFile, "/nonexistent/dir/log"});
  ASSERT_FALSE(console.ok());
  EXPECT_THAT(console.status().message(), HasSubstr("/nonexistent/dir/log"));
}

}  // namespace
}  // namespace kvmini::hw

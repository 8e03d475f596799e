// util::ParentDirectory: the directory a new file would land in, for the
// checks made before kvmini creates its serial log or control socket.
#include "util/path.h"

#include "gtest/gtest.h"

namespace kvmini::util {
namespace {

TEST(ParentDirectoryTest, IsEverythingBeforeTheLastSlash) {
  EXPECT_EQ(ParentDirectory("a/b"), "a");
  EXPECT_EQ(ParentDirectory("/run/kvmini/control.sock"), "/run/kvmini");
  EXPECT_EQ(ParentDirectory("./log"), ".");
  EXPECT_EQ(ParentDirectory("../x/y"), "../x");
}

TEST(ParentDirectoryTest, FileInTheRootIsInTheRoot) {
  EXPECT_EQ(ParentDirectory("/a"), "/");
  EXPECT_EQ(ParentDirectory("/"), "/");
}

TEST(ParentDirectoryTest, BareNameIsInTheCurrentDirectory) {
  EXPECT_EQ(ParentDirectory("a"), ".");
  EXPECT_EQ(ParentDirectory(""), ".");
}

// Textual, without normalising: a trailing slash or a doubled one is kept
// as part of what comes before the last slash.
TEST(ParentDirectoryTest, TrailingAndDoubledSlashesAreNotNormalised) {
  EXPECT_EQ(ParentDirectory("a/b/"), "a/b");
  EXPECT_EQ(ParentDirectory("a//b"), "a/");
  EXPECT_EQ(ParentDirectory("//a"), "/");
}

}  // namespace
}  // namespace kvmini::util

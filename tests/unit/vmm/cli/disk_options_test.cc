// The disk and IOThread options of the command line (--iothread, --blk,
// --scsi, --control): repeatable flags collected in order, every key of a
// disk option, default ids, and a one-line InvalidArgument error naming the
// flag for each mistake (kvmini exits 2 on it).
#include "vmm/machine/disk_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/machine/cli.h"
#include "vmm/machine/launch_options.h"

namespace kvmini::vmm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A scratch folder with two small images.
class DiskOptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/kvmini-disk-options-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    directory_ = name;
    image_a_ = directory_ + "/a.img";
    image_b_ = directory_ + "/b.img";
    for (const std::string& path : {image_a_, image_b_}) {
      FILE* file = fopen(path.c_str(), "w");
      ASSERT_NE(file, nullptr);
      fclose(file);
      ASSERT_EQ(truncate(path.c_str(), 1 << 20), 0);
    }
  }
  void TearDown() override {
    unlink(image_a_.c_str());
    unlink(image_b_.c_str());
    rmdir(directory_.c_str());
  }

  std::string directory_, image_a_, image_b_;
};

void ExpectOneLineUsageError(const absl::Status& status, const std::string& expected) {
  ASSERT_FALSE(status.ok()) << expected;
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_THAT(status.message(), HasSubstr(expected));
  EXPECT_EQ(status.message().find('\n'), absl::string_view::npos) << status.message();
}

TEST(DiskCliTest, RepeatableFlagsAreCollectedInOrder) {
  auto request =
      ParseCli({"--kernel", "/k", "--iothread", "io0", "--blk", "path=/a", "--scsi=path=/b",
                "--iothread=io1", "--blk", "path=/c,id=x", "--control", "/run/k.sock"});
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->flags.iothreads, ElementsAre("io0", "io1"));
  EXPECT_THAT(request->flags.blk, ElementsAre("path=/a", "path=/c,id=x"));
  EXPECT_THAT(request->flags.scsi, ElementsAre("path=/b"));
  EXPECT_EQ(request->flags.control, "/run/k.sock");
  // The next parse starts empty again.
  auto again = ParseCli({"--kernel", "/k"});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->flags.blk.empty());
  EXPECT_TRUE(again->flags.iothreads.empty());
  EXPECT_EQ(again->flags.control, "");
  ExpectOneLineUsageError(ParseCli({"--kernel", "/k", "--blk"}).status(), "--blk needs a value");
}

TEST(DiskCliTest, HelpDocumentsTheDiskFlags) {
  std::string usage = UsageText("kvmini");
  for (const char* text : {"--iothread", "--blk", "--scsi", "--control", "--seccomp", "queues=N",
                           "aio=io_uring|threads", "readonly=on", "poll-max-ns=N"}) {
    EXPECT_THAT(usage, HasSubstr(text));
  }
}

TEST(ParseDiskSpecTest, EveryKeyIsRead) {
  auto spec = ParseDiskSpec(DiskType::kBlk,
                            "path=/img,id=vda,iothread=io0,readonly=on,direct=on,queues=4,"
                            "serial=SER-1 x,aio=threads");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->type, DiskType::kBlk);
  EXPECT_EQ(spec->path, "/img");
  EXPECT_EQ(spec->id, "vda");
  EXPECT_EQ(spec->iothread, "io0");
  EXPECT_TRUE(spec->read_only);
  EXPECT_TRUE(spec->direct);
  EXPECT_EQ(spec->queues, 4);
  EXPECT_EQ(spec->serial, "SER-1 x");
  EXPECT_EQ(spec->engine, block::AioEngine::kThreads);
}

TEST(ParseDiskSpecTest, DefaultsAndOtherGoodForms) {
  auto spec = ParseDiskSpec(DiskType::kScsi, "path=/img");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->id, "");  // picked by ValidateDisks
  EXPECT_EQ(spec->iothread, "");
  EXPECT_FALSE(spec->read_only);
  EXPECT_FALSE(spec->direct);
  EXPECT_EQ(spec->queues, 1);
  EXPECT_EQ(spec->engine, block::AioEngine::kAuto);

  struct Case {
    DiskType type;
    std::string text;
    std::string path;
  };
  const Case cases[] = {
      {DiskType::kBlk, "path=/a,,b", "/a,b"},                     // ",," is a comma
      {DiskType::kBlk, "readonly=off,path=/x,direct=off", "/x"},  // any order
      {DiskType::kBlk, "path=/x,queues=64,aio=io_uring", "/x"},
      {DiskType::kBlk, "path=/x,serial=" + std::string(20, 'S'), "/x"},
      {DiskType::kScsi, "path=/x,serial=" + std::string(36, 'S'), "/x"},
      {DiskType::kScsi, "path=/x,id=Disk_2.b-c", "/x"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseDiskSpec(c.type, c.text);
    ASSERT_TRUE(parsed.ok()) << c.text << ": " << parsed.status();
    EXPECT_EQ(parsed->path, c.path) << c.text;
  }
}

TEST(ParseDiskSpecTest, EachMistakeIsNamed) {
  struct Case {
    DiskType type;
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {DiskType::kBlk, "id=vda", "--blk id=vda: path=IMAGE is missing"},
      {DiskType::kBlk, "", "empty option"},
      {DiskType::kBlk, "path=/x,", "empty option"},
      {DiskType::kBlk, "/x", "'/x' is not KEY=VALUE"},
      {DiskType::kBlk, "path=/x,bogus=1", "unknown key 'bogus'"},
      {DiskType::kScsi, "path=/x,cache=none", "--scsi path=/x,cache=none: unknown key 'cache'"},
      {DiskType::kBlk, "path=/x,path=/y", "key 'path' given twice"},
      {DiskType::kBlk, "path=", "path= has no value"},
      {DiskType::kBlk, "path=/x,queues=0", "queues=0 is out of range (1 to 64)"},
      {DiskType::kBlk, "path=/x,queues=65", "queues=65 is out of range"},
      {DiskType::kBlk, "path=/x,queues=two", "queues=two is out of range"},
      {DiskType::kBlk, "path=/x,queues=-1", "queues=-1 is out of range"},
      {DiskType::kBlk, "path=/x,queues=+2", "queues=+2 is out of range"},
      {DiskType::kBlk, "path=/x,readonly=yes", "readonly=yes is neither 'on' nor 'off'"},
      {DiskType::kScsi, "path=/x,direct=1", "direct=1 is neither 'on' nor 'off'"},
      {DiskType::kBlk, "path=/x,serial=" + std::string(21, 'S'), "at most 20 printable"},
      {DiskType::kScsi, "path=/x,serial=" + std::string(37, 'S'), "at most 36 printable"},
      {DiskType::kBlk, "path=/x,serial=a\tb", "serial 'a\\tb'"},
      {DiskType::kBlk, "path=/x,id=1disk", "id '1disk' is not a valid id"},
      {DiskType::kBlk, "path=/x,id=a/b", "id 'a/b' is not a valid id"},
      {DiskType::kBlk, "path=/x,id=" + std::string(33, 'a'), "is not a valid id"},
      {DiskType::kBlk, "path=/x,aio=native", "aio=native is not an engine"},
      // The first mistake from the left is the one named, whatever its kind.
      {DiskType::kBlk, "path=/x,queues=0,/y", "queues=0 is out of range"},
      {DiskType::kBlk, "path=,path=/y", "path= has no value"},
  };
  for (const Case& c : cases) {
    ExpectOneLineUsageError(ParseDiskSpec(c.type, c.text).status(), c.expected);
  }
}

TEST_F(DiskOptionsTest, DisksComeBlkFirstWithDefaultIds) {
  auto disks =
      ValidateDisks({"path=" + image_a_, "path=" + image_b_ + ",id=data,iothread=io1"},
                    {"path=" + image_a_ + ",readonly=on", "path=" + image_b_}, {"io0", "io1"}, 8);
  ASSERT_TRUE(disks.ok()) << disks.status();
  ASSERT_EQ(disks->size(), 4u);
  EXPECT_EQ((*disks)[0].id, "blk0");
  EXPECT_EQ((*disks)[0].type, DiskType::kBlk);
  EXPECT_EQ((*disks)[1].id, "data");
  EXPECT_EQ((*disks)[1].iothread, "io1");
  EXPECT_EQ((*disks)[2].id, "scsi0");
  EXPECT_EQ((*disks)[2].type, DiskType::kScsi);
  EXPECT_TRUE((*disks)[2].read_only);
  EXPECT_EQ((*disks)[3].id, "scsi1");
  EXPECT_EQ((*disks)[3].path, image_b_);
}

TEST_F(DiskOptionsTest, WholeCommandLineMistakesAreNamed) {
  const std::string a = "path=" + image_a_;
  struct Case {
    std::vector<std::string> blk, scsi;
    std::vector<IoThreadSpec> iothreads;
    size_t max_disks;
    std::string expected;
  };
  const Case cases[] = {
      {{a + ",id=vda", a + ",id=vda"}, {}, {}, 8, "duplicate disk id 'vda'"},
      {{a, a + ",id=blk0"}, {}, {}, 8, "duplicate disk id 'blk0' (also used by --blk " + a},
      {{a + ",id=d"}, {a + ",id=d"}, {}, 8, "--scsi " + a + ",id=d: duplicate disk id 'd'"},
      {{a + ",iothread=io9"}, {}, {"io0"}, 8, "unknown iothread 'io9'"},
      {{a, a, a}, {a}, {}, 3, "4 disks requested (--blk and --scsi); kvmini has 3"},
      {{"path=" + directory_ + "/missing.img"}, {}, {}, 8, "missing.img: No such file"},
      {{"path=" + directory_}, {}, {}, 8, "--blk id=blk0: image " + directory_},
      {{"path=" + directory_ + ",readonly=on"}, {}, {}, 8, "not a regular file or block device"},
  };
  for (const Case& c : cases) {
    ExpectOneLineUsageError(ValidateDisks(c.blk, c.scsi, c.iothreads, c.max_disks).status(),
                            c.expected);
  }
}

TEST_F(DiskOptionsTest, LaunchOptionsCarryDisksIoThreadsAndControl) {
  LaunchFlags flags;
  flags.kernel = image_a_;
  flags.iothreads = {"io0"};
  flags.blk = {"path=" + image_a_ + ",iothread=io0,serial=S1"};
  flags.scsi = {"path=" + image_b_};
  flags.control = directory_ + "/control.sock";
  auto options = ValidateLaunchFlags(flags);
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->iothreads.size(), 1u);
  EXPECT_EQ(options->iothreads[0].id, "io0");
  EXPECT_EQ(options->iothreads[0].poll_max_ns, util::AioContext::kDefaultPollMaxNs);
  ASSERT_EQ(options->disks.size(), 2u);
  EXPECT_EQ(options->disks[0].serial, "S1");
  EXPECT_EQ(options->disks[1].id, "scsi0");
  EXPECT_EQ(options->control_path, directory_ + "/control.sock");
  EXPECT_TRUE(options->seccomp);
  flags.seccomp = "off";
  EXPECT_FALSE(ValidateLaunchFlags(flags)->seccomp);
  flags.seccomp = "yes";
  ExpectOneLineUsageError(ValidateLaunchFlags(flags).status(), "--seccomp yes: use on or off");
  flags.seccomp = "on";

  flags.blk = {"path=" + image_a_ + ",iothread=nope"};
  ExpectOneLineUsageError(ValidateLaunchFlags(flags).status(), "unknown iothread 'nope'");
  flags.blk.assign(9, "path=" + image_a_);
  flags.scsi.clear();
  ExpectOneLineUsageError(ValidateLaunchFlags(flags).status(), "9 disks requested");
}

TEST(IoThreadOptionTest, ShortAndLongFormsGiveTheIdAndPollCap) {
  auto bare = ParseIoThreadSpec("io0");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->id, "io0");
  EXPECT_EQ(bare->poll_max_ns, util::AioContext::kDefaultPollMaxNs);
  auto tuned = ParseIoThreadSpec("id=io1,poll-max-ns=100000");
  ASSERT_TRUE(tuned.ok()) << tuned.status();
  EXPECT_EQ(tuned->id, "io1");
  EXPECT_EQ(tuned->poll_max_ns, 100000);
  auto off = ParseIoThreadSpec("poll-max-ns=0,id=io2");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(off->poll_max_ns, 0);
}

TEST(IoThreadOptionTest, BadValuesAreOneLineUsageErrors) {
  struct Case {
    std::string text;
    std::string expected;
  };
  const Case cases[] = {
      {"id=io0,poll-max-ns=-1", "poll-max-ns=-1 is not a number of nanoseconds"},
      {"id=io0,poll-max-ns=12us", "poll-max-ns=12us is not a number"},
      {"id=io0,poll-max-ns=", "poll-max-ns= is not a number"},
      {"id=io0,poll-max-ns=1000000001", "to 1000000000"},
      {"poll-max-ns=5", "id=ID is missing"},
      {"id=io0,poll=5", "unknown key 'poll'"},
      {"id=io0,id=io1", "id given twice"},
      {"id=io0,fast", "'fast' is not KEY=VALUE"},
      {"id=io0,", "--iothread id=io0,: '' is not KEY=VALUE (keys: id, poll-max-ns)"},
      {"poll-max-ns=x,id=io0,id=io1", "poll-max-ns=x is not a number"},
  };
  for (const Case& c : cases) {
    ExpectOneLineUsageError(ParseIoThreadSpec(c.text).status(), c.expected);
  }
}

TEST(IoThreadOptionTest, IdsAreCheckedTogether) {
  auto specs = ValidateIoThreads({"io0", "id=io1,poll-max-ns=0"});
  ASSERT_TRUE(specs.ok()) << specs.status();
  ASSERT_EQ(specs->size(), 2u);
  EXPECT_EQ((*specs)[0].id, "io0");
  EXPECT_EQ((*specs)[1].id, "io1");
  EXPECT_EQ((*specs)[1].poll_max_ns, 0);

  struct Case {
    std::vector<std::string> iothreads;
    std::string expected;
  };
  const Case cases[] = {
      {{"io0", "io0"}, "--iothread io0: given twice"},
      {{"io0", "id=io0"}, "--iothread io0: given twice"},
      {{"9lives"}, "--iothread 9lives: not a valid id"},
      {{"id=a/b"}, "--iothread a/b: not a valid id"},
      {{"io0", "id=io1,bad"}, "--iothread id=io1,bad: 'bad' is not KEY=VALUE"},
      {std::vector<std::string>(kMaxIoThreads + 1, "io0"),
       "--iothread given 65 times; kvmini runs at most 64 IOThreads"},
  };
  for (const Case& c : cases) {
    ExpectOneLineUsageError(ValidateIoThreads(c.iothreads).status(), c.expected);
  }
}

TEST_F(DiskOptionsTest, LaunchOptionsCarryEachIoThreadsPollCap) {
  LaunchFlags flags;
  flags.kernel = image_a_;
  flags.iothreads = {"id=io0,poll-max-ns=0", "io1"};
  flags.blk = {"path=" + image_a_ + ",iothread=io0"};
  auto options = ValidateLaunchFlags(flags);
  ASSERT_TRUE(options.ok()) << options.status();
  ASSERT_EQ(options->iothreads.size(), 2u);
  EXPECT_EQ(options->iothreads[0].id, "io0");
  EXPECT_EQ(options->iothreads[0].poll_max_ns, 0);
  EXPECT_EQ(options->iothreads[1].id, "io1");
  EXPECT_EQ(options->iothreads[1].poll_max_ns, util::AioContext::kDefaultPollMaxNs);
  // Ids are still checked for duplicates whatever form names them.
  flags.iothreads = {"id=io0,poll-max-ns=0", "io0"};
  ExpectOneLineUsageError(ValidateLaunchFlags(flags).status(), "--iothread io0: given twice");
}

}  // namespace
}  // namespace kvmini::vmm

#include "vmm/x86/bzimage.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/x86/fake_bzimage.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::x86 {
namespace {

using testing::FakeKernelOptions;
using ::testing::HasSubstr;
using testing::MakeFakeBzImage;

constexpr std::string_view kName = "/images/vmlinuz";

std::string ErrorFor(const std::vector<uint8_t>& image) {
  auto parsed = ParseBzImage(image, image.size(), kName);
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(parsed.status().message(), HasSubstr(std::string(kName) + ":"));
  return std::string(parsed.status().message());
}

TEST(BzImageTest, ParsesTheHeaderFields) {
  const std::vector<uint8_t> image = MakeFakeBzImage();
  auto kernel = ParseBzImage(image, image.size(), kName);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protocol_version, 0x020F);
  EXPECT_EQ(kernel->initrd_addr_max, 0x7FFFFFFFu);
  EXPECT_EQ(kernel->cmdline_size, 2047u);
  EXPECT_TRUE(kernel->relocatable);
  EXPECT_EQ(kernel->kernel_alignment, 0x200000u);
  EXPECT_EQ(kernel->pref_address, 0x1000000u);
  EXPECT_EQ(kernel->init_size, 0x3F98000u);
  // Setup header: [0x1F1, 0x202 + jump displacement).
  EXPECT_EQ(kernel->setup_header.data(), image.data() + 0x1F1);
  EXPECT_EQ(kernel->setup_header.size(), 0x26Cu - 0x1F1);
  // Protected-mode kernel: after (setup_sects + 1) sectors, to the end.
  EXPECT_EQ(kernel->protected_mode_offset, 5u * 512);
  EXPECT_EQ(kernel->protected_mode_size, 64u * 1024);
}

TEST(BzImageTest, TheHeaderAreaAloneIsEnoughToParse) {
  const std::vector<uint8_t> image = MakeFakeBzImage();
  const std::span<const uint8_t> head(image.data(), setup_header::kLimit);
  auto kernel = ParseBzImage(head, image.size(), kName);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protected_mode_size, 64u * 1024);
  // The size check uses the file size, not the bytes at hand.
  EXPECT_FALSE(ParseBzImage(head, image.size() - 16, kName).ok());
}

TEST(BzImageTest, ZeroSetupSectorsMeansFour) {
  FakeKernelOptions options;
  options.setup_sectors = 0;
  const std::vector<uint8_t> image = MakeFakeBzImage(options);
  auto kernel = ParseBzImage(image, image.size(), kName);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protected_mode_offset, 5u * 512);
}

TEST(BzImageTest, ExtraBytesAfterTheKernelAreLoadedToo) {
  std::vector<uint8_t> image = MakeFakeBzImage();
  image.resize(image.size() + 1472, 0xEE);  // like Debian's signed image
  auto kernel = ParseBzImage(image, image.size(), kName);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->protected_mode_size, 64u * 1024 + 1472);
}

TEST(BzImageTest, RejectsRandomData) {
  std::vector<uint8_t> image(8192, 0x5A);
  EXPECT_THAT(ErrorFor(image), HasSubstr("not a bzImage: no Linux boot signature"));
}

TEST(BzImageTest, RejectsTinyAndEmptyFiles) {
  EXPECT_THAT(ErrorFor({}), HasSubstr("only 0 bytes"));
  std::vector<uint8_t> image = MakeFakeBzImage();
  image.resize(0x250);
  EXPECT_THAT(ErrorFor(image), HasSubstr("too short to hold the boot setup header"));
}

TEST(BzImageTest, RejectsMissingHdrS) {
  std::vector<uint8_t> image = MakeFakeBzImage();
  image[0x202] = 'X';
  EXPECT_THAT(ErrorFor(image), HasSubstr("no Linux boot signature"));
}

TEST(BzImageTest, RejectsOldProtocolVersions) {
  FakeKernelOptions options;
  options.version = 0x020B;
  EXPECT_THAT(ErrorFor(MakeFakeBzImage(options)),
              HasSubstr("boot protocol 2.11; kvmini needs 2.12 or newer"));
}

TEST(BzImageTest, RejectsZImages) {
  FakeKernelOptions options;
  options.loadflags = 0;
  EXPECT_THAT(ErrorFor(MakeFakeBzImage(options)), HasSubstr("is a zImage"));
}

TEST(BzImageTest, Rejects32BitOnlyKernels) {
  FakeKernelOptions options;
  options.xloadflags = 0x02;
  EXPECT_THAT(ErrorFor(MakeFakeBzImage(options)), HasSubstr("no 64-bit entry point"));
}

TEST(BzImageTest, RejectsTruncatedFiles) {
  std::vector<uint8_t> image = MakeFakeBzImage();
  image.resize(image.size() - 1);
  EXPECT_THAT(ErrorFor(image), HasSubstr("truncated: the header announces"));
  // Cut inside the setup code: still truncated, not a crash.
  image.resize(0x400);
  EXPECT_THAT(ErrorFor(image), HasSubstr("truncated"));
}

TEST(BzImageTest, RejectsAHeaderRunningPastItsArea) {
  std::vector<uint8_t> image = MakeFakeBzImage();
  image[0x201] = 0x90;  // header would end at 0x292
  EXPECT_THAT(ErrorFor(image), HasSubstr("past the zero page's header area"));
  image[0x201] = 0x10;  // header would end before init_size
  EXPECT_THAT(ErrorFor(image), HasSubstr("too short for boot protocol 2.15"));
}

TEST(BzImageTest, RejectsMissingInitSize) {
  FakeKernelOptions options;
  options.init_size = 0;
  EXPECT_THAT(ErrorFor(MakeFakeBzImage(options)), HasSubstr("no init_size"));
}

}  // namespace
}  // namespace kvmini::vmm::x86

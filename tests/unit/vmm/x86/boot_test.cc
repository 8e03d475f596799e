#include "vmm/x86/boot.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/x86/fake_bzimage.h"
#include "tests/unit/vmm/x86/test_guest.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

using testing::FakeKernelOptions;
using ::testing::HasSubstr;
using testing::MakeFakeBzImage;
using testing::MakeTestGuest;
using testing::ReadGuestBytes;
namespace bp = boot_params;
namespace sh = setup_header;

std::vector<uint8_t> MakeInitrd(uint64_t size) {
  std::vector<uint8_t> initrd(size);
  for (uint64_t i = 0; i < size; ++i) initrd[i] = static_cast<uint8_t>(i ^ (i >> 8));
  return initrd;
}

std::vector<E820Entry> ZeroPageE820(const std::vector<uint8_t>& page) {
  std::vector<E820Entry> map;
  for (uint8_t i = 0; i < page[bp::kE820EntryCount]; ++i) {
    const uint64_t offset = bp::kE820Table + i * bp::kE820EntrySize;
    map.push_back({LoadLittleEndian<uint64_t>(page, offset),
                   LoadLittleEndian<uint64_t>(page, offset + 8),
                   static_cast<E820Type>(LoadLittleEndian<uint32_t>(page, offset + 16))});
  }
  return map;
}

uint64_t RamdiskImage(const std::vector<uint8_t>& page) {
  return LoadLittleEndian<uint32_t>(page, sh::kRamdiskImage) |
         static_cast<uint64_t>(LoadLittleEndian<uint32_t>(page, bp::kExtRamdiskImage)) << 32;
}

class LoadLinuxTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(LoadLinuxTest, WritesZeroPageKernelCommandLineAndInitrd) {
  const uint64_t memory_bytes = GetParam();
  auto memory = MakeTestGuest(memory_bytes);
  const std::vector<uint8_t> kernel = MakeFakeBzImage();
  const std::vector<uint8_t> initrd = MakeInitrd(3 * kMiB + 123);
  LinuxBootConfig config;
  config.kernel = kernel;
  config.kernel_name = "vmlinuz";
  config.initrd = initrd;
  config.initrd_name = "initrd.img";
  config.command_line = "console=ttyS0 panic=-1";
  config.acpi_rsdp_address = kRsdpAddress;
  auto state = LoadLinux(*memory, config);
  ASSERT_TRUE(state.ok()) << state.status();

  const std::vector<uint8_t> page = ReadGuestBytes(*memory, kZeroPageAddress, kZeroPageSize);
  // The kernel's setup header, byte for byte, except what the loader fills.
  std::vector<uint8_t> header(page.begin() + 0x1F1, page.begin() + 0x26C);
  std::vector<uint8_t> expected(kernel.begin() + 0x1F1, kernel.begin() + 0x26C);
  for (uint64_t offset : {sh::kTypeOfLoader}) expected[offset - 0x1F1] = 0xFF;
  for (uint64_t offset : {sh::kRamdiskImage, sh::kRamdiskSize, sh::kCmdLinePtr}) {
    for (int i = 0; i < 4; ++i) expected[offset - 0x1F1 + i] = header[offset - 0x1F1 + i];
  }
  EXPECT_EQ(header, expected);
  // Nothing beyond the header was copied; the sentinel stays 0.
  EXPECT_EQ(page[0x26C], 0);
  EXPECT_EQ(page[bp::kSentinel], 0);
  EXPECT_EQ(page[sh::kTypeOfLoader], 0xFF);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(page, bp::kAcpiRsdpAddress), kRsdpAddress);

  // Command line.
  EXPECT_EQ(LoadLittleEndian<uint32_t>(page, sh::kCmdLinePtr), kCommandLineAddress);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(page, bp::kExtCmdLinePtr), 0u);
  const std::string expected_line = "console=ttyS0 panic=-1";
  std::vector<uint8_t> line =
      ReadGuestBytes(*memory, kCommandLineAddress, expected_line.size() + 1);
  EXPECT_EQ(std::string(line.begin(), line.end() - 1), expected_line);
  EXPECT_EQ(line.back(), 0);

  // Kernel at 1 MiB.
  EXPECT_EQ(ReadGuestBytes(*memory, kKernelLoadAddress, 64 * 1024),
            std::vector<uint8_t>(kernel.begin() + 5 * 512, kernel.end()));

  // Initrd: page aligned, as high as allowed, contents intact.
  const uint64_t initrd_address = RamdiskImage(page);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(page, sh::kRamdiskSize), initrd.size());
  EXPECT_EQ(initrd_address % kPageSize, 0u);
  const uint64_t top =
      std::min<uint64_t>(memory_bytes, std::min<uint64_t>(kMmioHoleStart, 0x80000000));
  EXPECT_LE(initrd_address + initrd.size(), top);
  EXPECT_GT(initrd_address + initrd.size() + kPageSize, top);
  EXPECT_EQ(ReadGuestBytes(*memory, initrd_address, initrd.size()), initrd);

  // e820 in the zero page matches the layout.
  auto ranges = GuestRamRanges(memory_bytes);
  ASSERT_TRUE(ranges.ok());
  EXPECT_EQ(ZeroPageE820(page), BuildE820Map(*ranges));

  // Registers for the 64-bit entry.
  EXPECT_EQ(state->rip, 0x100200u);
  EXPECT_EQ(state->rsi, kZeroPageAddress);
}

INSTANTIATE_TEST_SUITE_P(MemorySizes, LoadLinuxTest,
                         ::testing::Values(256 * kMiB, 3 * kGiB, 5 * kGiB),
                         [](const ::testing::TestParamInfo<uint64_t>& info) {
                           return std::to_string(info.param / kMiB) + "MiB";
                         });

LinuxBootConfig ConfigFor(const std::vector<uint8_t>& kernel, const std::vector<uint8_t>& initrd) {
  LinuxBootConfig config;
  config.kernel = kernel;
  config.kernel_name = "vmlinuz";
  config.initrd = initrd;
  config.initrd_name = "initrd.img";
  return config;
}

TEST(LoadLinuxRulesTest, InitrdStaysBelowInitrdAddrMax) {
  auto memory = MakeTestGuest(256 * kMiB);
  FakeKernelOptions options;
  options.initrd_addr_max = 200 * kMiB - 1;
  const std::vector<uint8_t> kernel = MakeFakeBzImage(options);
  const std::vector<uint8_t> initrd = MakeInitrd(kMiB);
  ASSERT_TRUE(LoadLinux(*memory, ConfigFor(kernel, initrd)).ok());
  const std::vector<uint8_t> page = ReadGuestBytes(*memory, kZeroPageAddress, kZeroPageSize);
  EXPECT_EQ(RamdiskImage(page), 199 * kMiB);
}

TEST(LoadLinuxRulesTest, InitrdMustClearTheKernelDecompressionArea) {
  // Decompression area [16 MiB, 16 MiB + init_size): with 96 MiB of RAM and
  // a 63.6 MiB init_size, 16.4 MiB remain above it.
  auto memory = MakeTestGuest(96 * kMiB);
  const std::vector<uint8_t> kernel = MakeFakeBzImage();
  const std::vector<uint8_t> fits = MakeInitrd(16 * kMiB);
  ASSERT_TRUE(LoadLinux(*memory, ConfigFor(kernel, fits)).ok());
  const uint64_t address = RamdiskImage(ReadGuestBytes(*memory, kZeroPageAddress, kZeroPageSize));
  EXPECT_GE(address, 16 * kMiB + 0x3F98000);

  const std::vector<uint8_t> too_big = MakeInitrd(17 * kMiB);
  auto state = LoadLinux(*memory, ConfigFor(kernel, too_big));
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(state.status().message(),
              HasSubstr("initrd.img: the initrd (17.0 MiB) does not fit in guest RAM"));
  EXPECT_THAT(state.status().message(), HasSubstr("give the guest more memory"));
}

TEST(LoadLinuxRulesTest, InitrdNeverOverlapsALargeLoadedKernel) {
  // A kernel whose loaded image reaches beyond its decompression area.
  FakeKernelOptions options;
  options.payload_bytes = 40 * kMiB;
  options.init_size = 4 * kMiB;
  options.pref_address = 2 * kMiB;
  const std::vector<uint8_t> kernel = MakeFakeBzImage(options);
  auto memory = MakeTestGuest(48 * kMiB);
  auto state = LoadLinux(*memory, ConfigFor(kernel, MakeInitrd(8 * kMiB)));
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr("needs up to 41.0 MiB"));
  ASSERT_TRUE(LoadLinux(*memory, ConfigFor(kernel, MakeInitrd(7 * kMiB - 100))).ok());
}

TEST(LoadLinuxRulesTest, KernelTooBigForMemory) {
  auto memory = MakeTestGuest(64 * kMiB);
  const std::vector<uint8_t> kernel = MakeFakeBzImage();  // needs 16 + 63.6 MiB
  auto state = LoadLinux(*memory, ConfigFor(kernel, {}));
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(state.status().message(), HasSubstr("vmlinuz: the kernel needs guest RAM up to"));
}

TEST(LoadLinuxRulesTest, PrefAddressNearTheTopOfTheAddressSpaceIsRefused) {
  // pref_address + init_size used to wrap to a small address and pass the
  // RAM check (found by the boot_loader fuzz target).
  FakeKernelOptions options;
  options.pref_address = 0xFFFF'FFFF'FF00'0000;
  const std::vector<uint8_t> kernel = MakeFakeBzImage(options);
  auto memory = MakeTestGuest(256 * kMiB);
  auto state = LoadLinux(*memory, ConfigFor(kernel, {}));
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(state.status().message(), HasSubstr("vmlinuz: the kernel needs guest RAM up to"));
}

TEST(LoadLinuxRulesTest, NoInitrdLeavesRamdiskFieldsZero) {
  auto memory = MakeTestGuest(256 * kMiB);
  const std::vector<uint8_t> kernel = MakeFakeBzImage();
  ASSERT_TRUE(LoadLinux(*memory, ConfigFor(kernel, {})).ok());
  const std::vector<uint8_t> page = ReadGuestBytes(*memory, kZeroPageAddress, kZeroPageSize);
  EXPECT_EQ(RamdiskImage(page), 0u);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(page, sh::kRamdiskSize), 0u);
  // An empty command line is still a valid, NUL-terminated string.
  EXPECT_EQ(LoadLittleEndian<uint32_t>(page, sh::kCmdLinePtr), kCommandLineAddress);
  EXPECT_EQ(ReadGuestBytes(*memory, kCommandLineAddress, 1)[0], 0);
}

TEST(LoadLinuxRulesTest, CommandLineLimitIsTheKernelsCmdlineSize) {
  auto memory = MakeTestGuest(256 * kMiB);
  FakeKernelOptions options;
  options.cmdline_size = 255;
  const std::vector<uint8_t> kernel = MakeFakeBzImage(options);
  LinuxBootConfig config = ConfigFor(kernel, {});
  const std::string longest(255, 'x');
  config.command_line = longest;
  ASSERT_TRUE(LoadLinux(*memory, config).ok());
  const std::string too_long(256, 'x');
  config.command_line = too_long;
  auto state = LoadLinux(*memory, config);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(state.status().message(),
              HasSubstr("the kernel command line is 256 bytes; vmlinuz accepts at most 255"));
}

TEST(LoadLinuxRulesTest, BadKernelIsReportedWithItsName) {
  auto memory = MakeTestGuest(256 * kMiB);
  const std::vector<uint8_t> not_a_kernel(4096, 0);
  auto state = LoadLinux(*memory, ConfigFor(not_a_kernel, {}));
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr("vmlinuz: not a bzImage"));
}

std::vector<uint8_t> Bytes(std::string_view text) {
  std::vector<uint8_t> bytes(text.begin(), text.end());
  bytes.push_back(0);
  return bytes;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "kvmini_boot_XXXXXX";
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string Write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = path_ + "/" + name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LoadLinuxFromFilesTest, LoadsFilesAndNamesMissingOnes) {
  TempDir dir;
  auto memory = MakeTestGuest(256 * kMiB);
  LinuxBootFiles files;
  files.kernel_path = dir.Write("vmlinuz", MakeFakeBzImage());
  files.initrd_path = dir.Write("initrd.img", MakeInitrd(kMiB));
  files.command_line = "quiet";
  auto state = LoadLinuxFromFiles(*memory, files);
  ASSERT_TRUE(state.ok()) << state.status();
  const std::vector<uint8_t> page = ReadGuestBytes(*memory, kZeroPageAddress, kZeroPageSize);
  EXPECT_EQ(ReadGuestBytes(*memory, RamdiskImage(page), kMiB), MakeInitrd(kMiB));
  const std::vector<uint8_t> kernel = MakeFakeBzImage();
  EXPECT_EQ(ReadGuestBytes(*memory, kKernelLoadAddress, kernel.size() - 5 * 512),
            std::vector<uint8_t>(kernel.begin() + 5 * 512, kernel.end()));
  EXPECT_EQ(ReadGuestBytes(*memory, kCommandLineAddress, 6), Bytes("quiet"));

  files.initrd_path = dir.path() + "/missing.img";
  state = LoadLinuxFromFiles(*memory, files);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(state.status().message(), HasSubstr("cannot open initrd file " + files.initrd_path));

  files.initrd_path = dir.Write("empty.img", {});
  state = LoadLinuxFromFiles(*memory, files);
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(),
              HasSubstr("initrd file " + files.initrd_path + " is empty"));

  files.initrd_path = "";
  files.kernel_path = dir.Write("not-a-kernel", std::vector<uint8_t>(100000, 0x90));
  state = LoadLinuxFromFiles(*memory, files);
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr(files.kernel_path + ": not a bzImage"));

  files.kernel_path = dir.path() + "/no-such-kernel";
  state = LoadLinuxFromFiles(*memory, files);
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr("cannot open kernel file " + files.kernel_path));

  files.kernel_path = dir.path();
  state = LoadLinuxFromFiles(*memory, files);
  ASSERT_FALSE(state.ok());
  EXPECT_THAT(state.status().message(), HasSubstr("is not a regular file"));
}

}  // namespace
}  // namespace kvmini::vmm::x86

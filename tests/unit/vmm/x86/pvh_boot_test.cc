#include "vmm/x86/pvh_boot.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/x86/fake_vmlinux.h"
#include "tests/unit/vmm/x86/test_guest.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

using testing::FakeSegment;
using testing::FakeVmlinuxOptions;
using ::testing::HasSubstr;
using testing::MakeFakeVmlinux;
using testing::MakeTestGuest;
using testing::ReadGuestBytes;

std::string ErrorFor(const std::vector<uint8_t>& kernel, uint64_t memory_bytes = 256 * kMiB,
                     const std::vector<uint8_t>& initrd = {}, std::string_view command_line = "") {
  auto memory = MakeTestGuest(memory_bytes);
  LinuxBootConfig config;
  config.kernel = kernel;
  config.kernel_name = "vmlinux";
  config.initrd = initrd;
  config.initrd_name = "initrd.img";
  config.command_line = command_line;
  auto state = LoadLinux(*memory, config);
  EXPECT_FALSE(state.ok());
  if (state.ok()) return "";
  EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(state.status().message());
}

TEST(ParsePvhKernelTest, FindsSegmentsAndTheEntryNote) {
  const std::vector<uint8_t> file = MakeFakeVmlinux();
  auto kernel = ParsePvhKernel(SourceFromBytes(file, "vmlinux"));
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->entry, 0x1000850u);
  ASSERT_EQ(kernel->segments.size(), 2u);
  EXPECT_EQ(kernel->segments[1].physical_address, 0x1004000u);
  EXPECT_EQ(kernel->segments[1].file_size, 0x1800u);
  EXPECT_EQ(kernel->segments[1].memory_size, 0x5000u);
  EXPECT_EQ(kernel->end, 0x1009000u);
}

TEST(ParsePvhKernelTest, AcceptsAFourByteEntryNote) {
  FakeVmlinuxOptions options;
  options.pvh_entry_size = 4;
  options.pvh_entry = 0x1234567;
  const std::vector<uint8_t> file = MakeFakeVmlinux(options);
  auto kernel = ParsePvhKernel(SourceFromBytes(file, "vmlinux"));
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  EXPECT_EQ(kernel->entry, 0x1234567u);
}

TEST(LoadPvhTest, LoadsSegmentsStartInfoModulesAndMemoryMap) {
  auto memory = MakeTestGuest(256 * kMiB);
  // Stale bytes where .bss goes: the loader must clear them.
  std::vector<uint8_t> stale(0x5000, 0xEE);
  ASSERT_TRUE(memory->Write(0x1004000, stale).ok());
  const FakeVmlinuxOptions options;
  const std::vector<uint8_t> kernel = MakeFakeVmlinux(options);
  const std::vector<uint8_t> initrd(3 * kMiB + 7, 0x42);
  LinuxBootConfig config;
  config.kernel = kernel;
  config.kernel_name = "vmlinux";
  config.initrd = initrd;
  config.initrd_name = "initrd.img";
  config.command_line = "console=ttyS0";
  config.acpi_rsdp_address = kRsdpAddress;
  auto state = LoadLinux(*memory, config);
  ASSERT_TRUE(state.ok()) << state.status();

  // Segments at their physical addresses; .bss zeroed.
  for (size_t i = 0; i < options.segments.size(); ++i) {
    const FakeSegment& segment = options.segments[i];
    const uint64_t offset = testing::FakeSegmentOffset(options, i);
    EXPECT_EQ(
        ReadGuestBytes(*memory, segment.physical_address, segment.file_size),
        std::vector<uint8_t>(kernel.begin() + offset, kernel.begin() + offset + segment.file_size));
  }
  EXPECT_EQ(ReadGuestBytes(*memory, 0x1005800, 0x3800), std::vector<uint8_t>(0x3800, 0));

  // hvm_start_info.
  const std::vector<uint8_t> info =
      ReadGuestBytes(*memory, kPvhStartInfoAddress, pvh::kStartInfoSize);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(info, 0), 0x336EC578u);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(info, 4), 1u);   // version
  EXPECT_EQ(LoadLittleEndian<uint32_t>(info, 12), 1u);  // modules
  EXPECT_EQ(LoadLittleEndian<uint64_t>(info, 16), kPvhModuleListAddress);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(info, 24), kCommandLineAddress);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(info, 32), kRsdpAddress);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(info, 40), kPvhMemoryMapAddress);
  const std::vector<E820Entry> expected_map = BuildE820Map(*GuestRamRanges(256 * kMiB));
  ASSERT_EQ(LoadLittleEndian<uint32_t>(info, 48), expected_map.size());

  // The initrd module: high in RAM, page aligned, intact.
  const std::vector<uint8_t> module = ReadGuestBytes(*memory, kPvhModuleListAddress, 32);
  const uint64_t initrd_address = LoadLittleEndian<uint64_t>(module, 0);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(module, 8), initrd.size());
  EXPECT_EQ(initrd_address % kPageSize, 0u);
  EXPECT_LE(initrd_address + initrd.size(), 256 * kMiB);
  EXPECT_GT(initrd_address + initrd.size() + kPageSize, 256 * kMiB);
  EXPECT_EQ(ReadGuestBytes(*memory, initrd_address, initrd.size()), initrd);

  // The memory map: e820 entries, 24 bytes each.
  const std::vector<uint8_t> map =
      ReadGuestBytes(*memory, kPvhMemoryMapAddress, expected_map.size() * pvh::kMemoryMapEntrySize);
  for (size_t i = 0; i < expected_map.size(); ++i) {
    const uint64_t offset = i * pvh::kMemoryMapEntrySize;
    EXPECT_EQ(LoadLittleEndian<uint64_t>(map, offset), expected_map[i].address);
    EXPECT_EQ(LoadLittleEndian<uint64_t>(map, offset + 8), expected_map[i].size);
    EXPECT_EQ(LoadLittleEndian<uint32_t>(map, offset + 16),
              static_cast<uint32_t>(expected_map[i].type));
  }
  const std::vector<uint8_t> line = ReadGuestBytes(*memory, kCommandLineAddress, 14);
  EXPECT_EQ(std::string(line.begin(), line.end()), std::string("console=ttyS0\0", 14));

  // 32-bit entry with EBX = start_info.
  EXPECT_EQ(state->rip, 0x1000850u);
  EXPECT_EQ(state->rbx, kPvhStartInfoAddress);
  EXPECT_EQ(state->cs.selector, 0x20);
  EXPECT_EQ(state->efer, 0u);
}

TEST(LoadPvhTest, NoInitrdMeansNoModules) {
  auto memory = MakeTestGuest(64 * kMiB);
  const std::vector<uint8_t> kernel = MakeFakeVmlinux();
  LinuxBootConfig config;
  config.kernel = kernel;
  config.kernel_name = "vmlinux";
  ASSERT_TRUE(LoadLinux(*memory, config).ok());
  const std::vector<uint8_t> info =
      ReadGuestBytes(*memory, kPvhStartInfoAddress, pvh::kStartInfoSize);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(info, 12), 0u);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(info, 16), 0u);
}

TEST(LoadPvhTest, RejectsKernelsWithoutPvhNote) {
  FakeVmlinuxOptions options;
  options.pvh_note = false;
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(options)),
              HasSubstr("vmlinux: ELF kernel has no PVH entry point"));
}

TEST(LoadPvhTest, RejectsNon64BitElf) {
  FakeVmlinuxOptions options;
  options.elf_class = 1;
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(options)),
              HasSubstr("not a 64-bit little-endian x86-64 ELF file"));
}

TEST(LoadPvhTest, RejectsTruncatedFiles) {
  std::vector<uint8_t> kernel = MakeFakeVmlinux();
  kernel.resize(kernel.size() - 1);
  EXPECT_THAT(ErrorFor(kernel), HasSubstr("truncated: segment 1"));
  kernel.resize(40);
  EXPECT_THAT(ErrorFor(kernel), HasSubstr("truncated ELF file"));
}

TEST(LoadPvhTest, RejectsSegmentsBelowOneMib) {
  FakeVmlinuxOptions options;
  options.segments = {{0x8000, 0x1000, 0x1000}};
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(options)), HasSubstr("below 1 MiB"));
}

TEST(LoadPvhTest, RejectsKernelsLargerThanMemory) {
  FakeVmlinuxOptions options;
  options.segments = {{0x1000000, 0x1000, 40 * kMiB}};
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(options), 32 * kMiB),
              HasSubstr("the kernel needs guest RAM up to 56.0 MiB"));
}

TEST(LoadPvhTest, RejectsAnInitrdThatDoesNotFit) {
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(), 20 * kMiB, std::vector<uint8_t>(4 * kMiB, 1)),
              HasSubstr("initrd.img: the initrd (4.0 MiB) does not fit"));
}

TEST(LoadPvhTest, CommandLineLimitIsLinuxs) {
  EXPECT_THAT(ErrorFor(MakeFakeVmlinux(), 256 * kMiB, {}, std::string(2048, 'x')),
              HasSubstr("the kernel command line is 2048 bytes; vmlinux accepts at most 2047"));
}

}  // namespace
}  // namespace kvmini::vmm::x86

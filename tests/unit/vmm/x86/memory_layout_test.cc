#include "vmm/x86/memory_layout.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvmini::vmm::x86 {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

MATCHER_P2(IsRange, address, size, "") {
  return arg.guest_address == static_cast<uint64_t>(address) &&
         arg.size == static_cast<uint64_t>(size);
}

std::vector<E820Entry> MapFor(uint64_t memory_bytes) {
  auto ranges = GuestRamRanges(memory_bytes);
  EXPECT_TRUE(ranges.ok()) << ranges.status();
  return BuildE820Map(*ranges);
}

TEST(GuestRamRangesTest, SmallGuestIsOneRangeFromZero) {
  auto ranges = GuestRamRanges(256 * kMiB);
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_THAT(*ranges, ElementsAre(IsRange(0, 256 * kMiB)));
}

TEST(GuestRamRangesTest, ThreeGibStopsExactlyAtTheHole) {
  auto ranges = GuestRamRanges(3 * kGiB);
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_THAT(*ranges, ElementsAre(IsRange(0, 3 * kGiB)));
}

TEST(GuestRamRangesTest, RamAboveThreeGibMovesAboveFourGib) {
  auto ranges = GuestRamRanges(5 * kGiB);
  ASSERT_TRUE(ranges.ok()) << ranges.status();
  EXPECT_THAT(*ranges, ElementsAre(IsRange(0, 3 * kGiB), IsRange(4 * kGiB, 2 * kGiB)));
}

TEST(GuestRamRangesTest, RejectsTooSmallAndUnalignedSizes) {
  auto small = GuestRamRanges(8 * kMiB);
  ASSERT_FALSE(small.ok());
  EXPECT_THAT(small.status().message(), HasSubstr("below the minimum of 16 MiB"));
  auto unaligned = GuestRamRanges(256 * kMiB + 100);
  ASSERT_FALSE(unaligned.ok());
  EXPECT_THAT(unaligned.status().message(), HasSubstr("not a multiple of 4 KiB"));
}

TEST(E820Test, SmallGuest) {
  EXPECT_THAT(MapFor(256 * kMiB),
              ElementsAre(E820Entry{0, 0x9FC00, E820Type::kRam},
                          E820Entry{0x9FC00, 0x100000 - 0x9FC00, E820Type::kReserved},
                          E820Entry{0x100000, 255 * kMiB, E820Type::kRam}));
}

TEST(E820Test, ThreeGibGuestLeavesTheHoleOut) {
  EXPECT_THAT(MapFor(3 * kGiB),
              ElementsAre(E820Entry{0, 0x9FC00, E820Type::kRam},
                          E820Entry{0x9FC00, 0x100000 - 0x9FC00, E820Type::kReserved},
                          E820Entry{0x100000, 3 * kGiB - kMiB, E820Type::kRam}));
}

TEST(E820Test, FiveGibGuestHasRamAboveFourGib) {
  EXPECT_THAT(MapFor(5 * kGiB),
              ElementsAre(E820Entry{0, 0x9FC00, E820Type::kRam},
                          E820Entry{0x9FC00, 0x100000 - 0x9FC00, E820Type::kReserved},
                          E820Entry{0x100000, 3 * kGiB - kMiB, E820Type::kRam},
                          E820Entry{4 * kGiB, 2 * kGiB, E820Type::kRam}));
}

TEST(E820Test, BootStructuresAreRamAndAcpiAreaIsReserved) {
  const std::vector<E820Entry> map = MapFor(256 * kMiB);
  auto type_at = [&map](uint64_t address) {
    for (const E820Entry& entry : map) {
      if (address >= entry.address && address - entry.address < entry.size) return entry.type;
    }
    return E820Type{0};
  };
  EXPECT_EQ(type_at(kZeroPageAddress), E820Type::kRam);
  EXPECT_EQ(type_at(kPml4Address), E820Type::kRam);
  EXPECT_EQ(type_at(kCommandLineAddress), E820Type::kRam);
  EXPECT_EQ(type_at(kRsdpAddress), E820Type::kReserved);
  EXPECT_EQ(type_at(kAcpiAreaEnd - 1), E820Type::kReserved);
  EXPECT_EQ(type_at(kKernelLoadAddress), E820Type::kRam);
}

TEST(VirtioMmioSlotTest, SlotsCountUpInTheHoleWithGsisFrom16) {
  auto first = VirtioMmioSlot(0);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->base, 0xD0000000u);
  EXPECT_EQ(first->size, 0x1000u);
  EXPECT_EQ(first->gsi, 16u);
  auto last = VirtioMmioSlot(kMaxVirtioMmioDevices - 1);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->base, 0xD0000000u + 7 * 0x1000);
  EXPECT_EQ(last->gsi, 23u);
  EXPECT_LT(last->base + last->size, kIoapicAddress);
  auto beyond = VirtioMmioSlot(kMaxVirtioMmioDevices);
  ASSERT_FALSE(beyond.ok());
  EXPECT_THAT(beyond.status().message(), HasSubstr("too many virtio-mmio devices"));
}

TEST(LayoutTest, KvmPrivatePagesStayOutOfDeviceWindowsAndRam) {
  EXPECT_GE(kKvmIdentityMapAddress, kMmioHoleStart);
  EXPECT_EQ(kKvmIdentityMapAddress + kPageSize, kKvmTssAddress);
  EXPECT_GT(kKvmIdentityMapAddress, kLocalApicAddress + kPageSize);
  EXPECT_LE(kKvmTssAddress + 3 * kPageSize, kMmioHoleEnd);
}

}  // namespace
}  // namespace kvmini::vmm::x86

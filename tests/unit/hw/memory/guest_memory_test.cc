#include "hw/memory/guest_memory.h"

#include <cstdint>
#include <limits>

#include "gtest/gtest.h"

namespace kvmini::hw {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGiB = 1ull << 30;

std::unique_ptr<GuestMemory> TwoRegions() {
  // Shaped like a guest with RAM below the 32-bit hole and above 4 GiB.
  auto memory = GuestMemory::Allocate({{0, 2 * kMiB}, {4 * kGiB, 1 * kMiB}});
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

TEST(GuestMemoryTest, TranslatesInsideRegionsOnly) {
  auto memory = TwoRegions();
  EXPECT_EQ(memory->total_size(), 3 * kMiB);
  EXPECT_TRUE(memory->Contains(0, 2 * kMiB));
  EXPECT_TRUE(memory->Contains(4 * kGiB + kMiB - 1, 1));
  EXPECT_FALSE(memory->Contains(2 * kMiB - 1, 2));          // runs past the end
  EXPECT_FALSE(memory->Contains(3 * kGiB, 1));               // in the hole
  EXPECT_FALSE(memory->Contains(2 * kMiB - 4, 4 * kGiB));  // straddles the hole
  EXPECT_FALSE(memory->Contains(4 * kGiB + kMiB, 1));
}

TEST(GuestMemoryTest, OverflowingRangesAreRejected) {
  auto memory = TwoRegions();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  EXPECT_FALSE(memory->Contains(kMax, 2));
  EXPECT_FALSE(memory->Contains(16, kMax));
  EXPECT_FALSE(memory->Contains(4 * kGiB + 16, kMax - 8));
}

TEST(GuestMemoryTest, ReadWriteRoundTripAndOutOfRangeErrors) {
  auto memory = TwoRegions();
  uint32_t value = 0xdeadbeef;
  ASSERT_TRUE(memory->WriteObject(4 * kGiB + 100, value).ok());
  auto read = memory->ReadObject<uint32_t>(4 * kGiB + 100);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, value);
  absl::Status status = memory->WriteObject(3 * kGiB, value);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(status.message().find("outside guest RAM"), std::string::npos);
  EXPECT_FALSE(memory->ReadObject<uint64_t>(2 * kMiB - 4).ok());
}

TEST(GuestMemoryTest, ZeroLengthAccessesInsideRamSucceed) {
  auto memory = TwoRegions();
  EXPECT_TRUE(memory->Read(100, std::span<uint8_t>()).ok());
  EXPECT_TRUE(memory->Write(2 * kMiB, std::span<const uint8_t>()).ok());
  EXPECT_FALSE(memory->Write(3 * kGiB, std::span<const uint8_t>()).ok());
}

TEST(GuestMemoryTest, AtomicAccessorsNeedAlignmentAndRam) {
  auto memory = TwoRegions();
  EXPECT_TRUE(memory->StoreRelease<uint16_t>(2, 7));
  EXPECT_EQ(memory->LoadAcquire<uint16_t>(2), 7);
  EXPECT_FALSE(memory->StoreRelease<uint16_t>(3, 7));
  EXPECT_FALSE(memory->LoadAcquire<uint32_t>(2 * kMiB).has_value());
}

TEST(GuestMemoryTest, BadRangesAreRefused) {
  EXPECT_FALSE(GuestMemory::Allocate({{0, 100}}).ok());
  EXPECT_FALSE(GuestMemory::Allocate({{0, 0}}).ok());
  EXPECT_FALSE(GuestMemory::Allocate({{kMiB, kMiB}, {0, kMiB}}).ok());
  EXPECT_FALSE(GuestMemory::Allocate({{0, 2 * kMiB}, {kMiB, kMiB}}).ok());
}

}  // namespace
}  // namespace kvmini::hw

// Runs the SCSI fuzzing entry point over structured pseudo-random inputs
// (fixed seed, so every run is the same) that reach every command with
// random fields, buffer sizes, LUNs, aborts, resets and injected I/O errors.
// ScsiFuzzOneInput aborts the test binary, naming the broken invariant, if
// a completion runs twice or never, data lands outside a buffer, residuals
// do not add up, or sense and status disagree.
#include <random>

#include "gtest/gtest.h"
#include "hw/scsi/scsi_protocol.h"
#include "hw/scsi/testing/scsi_fuzz.h"

namespace kvmini::hw::scsi {
namespace {

// Writes inputs in the layout ScsiFuzzOneInput reads.
class FuzzInput {
 public:
  explicit FuzzInput(uint8_t setup) { bytes_.push_back(setup); }

  void AddRequest(std::mt19937& random, uint8_t flags, const std::vector<uint8_t>& cdb) {
    bytes_.push_back(flags);
    if ((flags & 0x03) == 1) bytes_.push_back(Byte(random));
    if ((flags & 0x03) == 3) {
      for (int i = 0; i < 8; ++i) bytes_.push_back(Byte(random));
    }
    bytes_.push_back(static_cast<uint8_t>(cdb.size()));
    bytes_.insert(bytes_.end(), cdb.begin(), cdb.end());
    const uint16_t out_length = Size(random);
    Word(out_length);
    if (!(flags & 0x20)) Word(Size(random));
    for (uint16_t i = 0; i < out_length; ++i) bytes_.push_back(i < 24 ? Byte(random) : 0);
    bytes_.push_back(Byte(random));                      // iovec shape
    bytes_.push_back(random() % 2 ? 96 : Byte(random));  // sense capacity
    if (flags & 0x80) {
      bytes_.push_back(Byte(random));
      bytes_.push_back(Byte(random));
    }
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  static uint8_t Byte(std::mt19937& random) { return static_cast<uint8_t>(random()); }
  // Buffer sizes around the interesting boundaries: 0, sense/VPD sizes,
  // one or two blocks.
  static uint16_t Size(std::mt19937& random) {
    static constexpr uint16_t kSizes[] = {0, 1, 8, 16, 18, 24, 36, 64, 255, 512, 1024, 4096, 8191};
    return random() % 4 == 0 ? random() % 8192 : kSizes[random() % std::size(kSizes)];
  }
  void Word(uint16_t value) {
    bytes_.push_back(static_cast<uint8_t>(value >> 8));
    bytes_.push_back(static_cast<uint8_t>(value));
  }
  std::vector<uint8_t> bytes_;
};

std::vector<uint8_t> RandomCdb(std::mt19937& random) {
  static constexpr uint8_t kOpcodes[] = {opcode::kTestUnitReady,
                                         opcode::kRequestSense,
                                         opcode::kRead6,
                                         opcode::kWrite6,
                                         opcode::kInquiry,
                                         opcode::kModeSelect6,
                                         opcode::kModeSense6,
                                         opcode::kStartStopUnit,
                                         opcode::kPreventAllowMediumRemoval,
                                         opcode::kReadCapacity10,
                                         opcode::kRead10,
                                         opcode::kWrite10,
                                         opcode::kVerify10,
                                         opcode::kSynchronizeCache10,
                                         opcode::kWriteSame10,
                                         opcode::kUnmap,
                                         opcode::kModeSelect10,
                                         opcode::kModeSense10,
                                         opcode::kRead16,
                                         opcode::kWrite16,
                                         opcode::kVerify16,
                                         opcode::kSynchronizeCache16,
                                         opcode::kWriteSame16,
                                         opcode::kServiceActionIn16,
                                         opcode::kReportLuns,
                                         opcode::kRead12,
                                         opcode::kWrite12,
                                         0x02,
                                         0x04,
                                         0xa3,
                                         0xff};
  const uint8_t code = kOpcodes[random() % std::size(kOpcodes)];
  std::vector<uint8_t> cdb(random() % 8 == 0 ? random() % 33 : 16, 0);
  if (cdb.empty()) return cdb;
  cdb[0] = code;
  // Mostly small fields (LBAs and lengths inside a 64-block disk), with the
  // occasional random byte anywhere.
  for (size_t i = 1; i < cdb.size(); ++i) {
    const unsigned roll = random() % 16;
    cdb[i] = roll == 0 ? static_cast<uint8_t>(random()) : roll < 3 ? random() % 8 : 0;
  }
  if (cdb.size() > 1 && random() % 2) cdb[1] &= 0x1f;  // protection bits off half the time
  return cdb;
}

TEST(ScsiFuzzSmokeTest, StructuredRandomInputsKeepTheInvariants) {
  std::mt19937 random(20240611);
  for (int input = 0; input < 1500; ++input) {
    FuzzInput fuzz_input(static_cast<uint8_t>(random()));
    const int requests = 1 + random() % 12;
    for (int i = 0; i < requests; ++i) {
      uint8_t flags = static_cast<uint8_t>(random());
      if (random() % 2) flags &= 0x60;  // often: LUN 0, no management, no failure
      fuzz_input.AddRequest(random, flags, RandomCdb(random));
    }
    ASSERT_EQ(ScsiFuzzOneInput(fuzz_input.bytes().data(), fuzz_input.bytes().size()), 0);
  }
}

TEST(ScsiFuzzSmokeTest, UnstructuredBytesKeepTheInvariants) {
  std::mt19937 random(7);
  for (int input = 0; input < 1000; ++input) {
    std::vector<uint8_t> bytes(random() % 512);
    for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(random());
    ASSERT_EQ(ScsiFuzzOneInput(bytes.data(), bytes.size()), 0);
  }
  ASSERT_EQ(ScsiFuzzOneInput(nullptr, 0), 0);
}

}  // namespace
}  // namespace kvmini::hw::scsi

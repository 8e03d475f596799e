#include "vmm/acpi/aml.h"

#include <string_view>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvmini::vmm::acpi::aml {
namespace {

using ::testing::ElementsAre;

Bytes Ascii(std::string_view text) { return Bytes(text.begin(), text.end()); }

Bytes Concat(std::initializer_list<Bytes> parts) { return Join(std::vector<Bytes>(parts)); }

TEST(PkgLengthTest, OneByteUpToSixtyThreeIncludingItself) {
  EXPECT_THAT(PkgLength(0), ElementsAre(0x01));
  EXPECT_THAT(PkgLength(62), ElementsAre(0x3F));
}

TEST(PkgLengthTest, TwoBytesFromSixtyThreeBodyBytes) {
  // 63 + 2 = 65 = 0x41: low nibble 1 in the lead byte, 0x4 in the next.
  EXPECT_THAT(PkgLength(63), ElementsAre(0x41, 0x04));
  EXPECT_THAT(PkgLength(4093), ElementsAre(0x4F, 0xFF));  // 4095, the 2-byte maximum
}

TEST(PkgLengthTest, ThreeAndFourBytes) {
  EXPECT_THAT(PkgLength(4094), ElementsAre(0x81, 0x00, 0x01));  // 4097
  EXPECT_THAT(PkgLength((1 << 20) - 4), ElementsAre(0x8F, 0xFF, 0xFF));
  EXPECT_THAT(PkgLength((1 << 20) - 3), ElementsAre(0xC1, 0x00, 0x00, 0x01));
}

TEST(NameStringTest, SegmentsArePaddedAndPrefixed) {
  EXPECT_EQ(NameString("_SB_"), Ascii("_SB_"));
  EXPECT_EQ(NameString("_SB"), Ascii("_SB_"));
  EXPECT_EQ(NameString("\\_SB_"), Ascii("\\_SB_"));
  EXPECT_EQ(NameString("\\_SB_.COM1"), Concat({Ascii("\\"), {0x2E}, Ascii("_SB_COM1")}));
  EXPECT_EQ(NameString("\\_SB_.PCI0.S08"), Concat({Ascii("\\"), {0x2F, 3}, Ascii("_SB_PCI0S08_")}));
  EXPECT_THAT(NameString("\\"), ElementsAre('\\', 0x00));
}

TEST(IntegerTest, ShortestEncoding) {
  EXPECT_THAT(Integer(0), ElementsAre(0x00));
  EXPECT_THAT(Integer(1), ElementsAre(0x01));
  EXPECT_THAT(Integer(5), ElementsAre(0x0A, 0x05));
  EXPECT_THAT(Integer(0x1234), ElementsAre(0x0B, 0x34, 0x12));
  EXPECT_THAT(Integer(0xD0000000), ElementsAre(0x0C, 0x00, 0x00, 0x00, 0xD0));
  EXPECT_THAT(Integer(0x100000000), ElementsAre(0x0E, 0, 0, 0, 0, 1, 0, 0, 0));
}

TEST(StringTest, PrefixedAndNulTerminated) {
  EXPECT_EQ(String("LNRO0005"), Concat({{0x0D}, Ascii("LNRO0005"), {0x00}}));
}

TEST(EisaIdTest, CompressesVendorAndProduct) {
  EXPECT_THAT(EisaId("PNP0A03"), ElementsAre(0x0C, 0x41, 0xD0, 0x0A, 0x03));
  EXPECT_THAT(EisaId("PNP0501"), ElementsAre(0x0C, 0x41, 0xD0, 0x05, 0x01));
}

TEST(ResourceTest, DescriptorBytes) {
  EXPECT_THAT(Memory32Fixed(true, 0xD0000000, 0x200),
              ElementsAre(0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x02, 0x00, 0x00));
  EXPECT_THAT(ExtendedInterrupt(Trigger::kEdge, Polarity::kActiveHigh, Sharing::kExclusive, 5),
              ElementsAre(0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00));
  EXPECT_THAT(ExtendedInterrupt(Trigger::kLevel, Polarity::kActiveLow, Sharing::kShared, 16),
              ElementsAre(0x89, 0x06, 0x00, 0x0D, 0x01, 0x10, 0x00, 0x00, 0x00));
  EXPECT_THAT(IoPort(0x3F8, 8), ElementsAre(0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08));
  EXPECT_THAT(IsaIrq(4), ElementsAre(0x22, 0x10, 0x00));
}

// The bytes the spec digest verified with iasl for one virtio-mmio device.
TEST(DeviceTest, VirtioMmioDeviceMatchesVerifiedEncoding) {
  const Bytes device =
      Device("V000", {
                         Name("_HID", String("LNRO0005")),
                         Name("_UID", Integer(0)),
                         Name("_CCA", Integer(1)),
                         Name("_CRS", ResourceTemplate({
                                          Memory32Fixed(true, 0xD0000000, 0x200),
                                          ExtendedInterrupt(Trigger::kEdge, Polarity::kActiveHigh,
                                                            Sharing::kExclusive, 5),
                                      })),
                     });
  const Bytes expected = Concat({
      {0x5B, 0x82, 0x41, 0x04},
      Ascii("V000"),
      {0x08},
      Ascii("_HID"),
      {0x0D},
      Ascii("LNRO0005"),
      {0x00, 0x08},
      Ascii("_UID"),
      {0x00, 0x08},
      Ascii("_CCA"),
      {0x01, 0x08},
      Ascii("_CRS"),
      {0x11, 0x1A, 0x0A, 0x17},
      {0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x02, 0x00, 0x00},
      {0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00},
      {0x79, 0x00},
  });
  EXPECT_EQ(device, expected);
  EXPECT_EQ(device.size(), 67u);
}

TEST(PackageTest, SoftOffObject) {
  const Bytes s5 = Name("_S5_", Package({Integer(5), Integer(0), Integer(0), Integer(0)}));
  EXPECT_EQ(s5, Concat({{0x08}, Ascii("_S5_"), {0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00}}));
}

TEST(ScopeTest, WrapsTermsWithLength) {
  const Bytes scope = Scope("\\_SB_", {Name("X___", Integer(1))});
  EXPECT_EQ(scope, Concat({{0x10, 0x0C}, Ascii("\\_SB_"), {0x08}, Ascii("X___"), {0x01}}));
}

TEST(BufferTest, SizePrefixedData) {
  EXPECT_THAT(Buffer({0xAA, 0xBB}), ElementsAre(0x11, 0x05, 0x0A, 0x02, 0xAA, 0xBB));
  // Empty buffer: size ZeroOp.
  EXPECT_THAT(Buffer({}), ElementsAre(0x11, 0x02, 0x00));
}

}  // namespace
}  // namespace kvmini::vmm::acpi::aml

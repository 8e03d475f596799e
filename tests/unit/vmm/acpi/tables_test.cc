#include "vmm/acpi/tables.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/acpi/guest_tables.h"
#include "tests/unit/vmm/x86/test_guest.h"
#include "vmm/acpi/power_port.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::acpi {
namespace {

using testing::ByteSum;
using testing::GuestTables;
using ::testing::HasSubstr;
using testing::ReadGuestTables;
using x86::LoadLittleEndian;

std::unique_ptr<hw::GuestMemory> MakeGuest() {
  return x86::testing::MakeTestGuest(256 * x86::kMiB);
}

AcpiConfig ConfigWith(uint32_t vcpus, uint32_t devices) {
  AcpiConfig config;
  config.vcpu_count = vcpus;
  for (uint32_t i = 0; i < devices; ++i) {
    auto slot = x86::VirtioMmioSlot(i);
    EXPECT_TRUE(slot.ok());
    config.virtio_mmio_devices.push_back(*slot);
  }
  return config;
}

GuestTables BuildAndRead(const hw::GuestMemory& memory, const AcpiConfig& config,
                         AcpiTables* placed = nullptr) {
  auto tables = BuildAcpiTables(memory, config);
  EXPECT_TRUE(tables.ok()) << tables.status();
  if (!tables.ok()) return {};
  if (placed != nullptr) *placed = *tables;
  EXPECT_EQ(tables->rsdp_address, 0xE0000u);
  auto read = ReadGuestTables(memory, tables->rsdp_address);
  EXPECT_TRUE(read.ok()) << read.status();
  return read.value_or(GuestTables{});
}

size_t CountOccurrences(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
  size_t count = 0;
  for (auto it = haystack.begin();
       (it = std::search(it, haystack.end(), needle.begin(), needle.end())) != haystack.end();
       ++it) {
    ++count;
  }
  return count;
}

std::vector<uint8_t> Ascii(std::string_view text) { return {text.begin(), text.end()}; }

TEST(AcpiTablesTest, RsdpIsRevisionTwoWithBothChecksums) {
  auto memory = MakeGuest();
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(2, 3));
  ASSERT_EQ(tables.rsdp.size(), 36u);
  EXPECT_EQ(std::string(tables.rsdp.begin(), tables.rsdp.begin() + 8), "RSD PTR ");
  EXPECT_EQ(tables.rsdp[15], 2);
  EXPECT_EQ(LoadLittleEndian<uint32_t>(tables.rsdp, 16), 0u);  // no RSDT
  EXPECT_EQ(LoadLittleEndian<uint32_t>(tables.rsdp, 20), 36u);
  EXPECT_EQ(ByteSum(tables.rsdp, 20), 0);
  EXPECT_EQ(ByteSum(tables.rsdp, 36), 0);
}

TEST(AcpiTablesTest, EveryTableHasAValidChecksumAndLength) {
  auto memory = MakeGuest();
  AcpiTables placed;
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(4, 8), &placed);
  ASSERT_EQ(tables.tables.size(), 4u);
  for (const auto& [signature, bytes] : tables.tables) {
    SCOPED_TRACE(signature);
    EXPECT_EQ(LoadLittleEndian<uint32_t>(bytes, 4), bytes.size());
    EXPECT_EQ(ByteSum(bytes, bytes.size()), 0);
    EXPECT_EQ(std::string(bytes.begin() + 10, bytes.begin() + 16), "KVMINI");
  }
  // Every table lies in the reserved ACPI area, aligned, and none overlap.
  ASSERT_EQ(placed.tables.size(), 5u);
  std::sort(placed.tables.begin(), placed.tables.end(),
            [](const auto& a, const auto& b) { return a.address < b.address; });
  for (size_t i = 0; i < placed.tables.size(); ++i) {
    const AcpiTableLocation& table = placed.tables[i];
    EXPECT_EQ(table.address % 16, 0u) << table.signature;
    EXPECT_GE(table.address, x86::kAcpiAreaStart);
    EXPECT_LE(table.address + table.length, x86::kAcpiAreaEnd);
    if (i > 0) {
      const AcpiTableLocation& previous = placed.tables[i - 1];
      EXPECT_LE(previous.address + previous.length, table.address) << table.signature;
    }
    if (table.signature != "RSD PTR ") {
      EXPECT_EQ(tables.addresses.at(table.signature), table.address);
    }
  }
}

TEST(AcpiTablesTest, XsdtListsFadtAndMadt) {
  auto memory = MakeGuest();
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(1, 0));
  const std::vector<uint8_t>& xsdt = tables.tables.at("XSDT");
  ASSERT_EQ(xsdt.size(), 36u + 16);
  EXPECT_EQ(LoadLittleEndian<uint64_t>(xsdt, 36), tables.addresses.at("FACP"));
  EXPECT_EQ(LoadLittleEndian<uint64_t>(xsdt, 44), tables.addresses.at("APIC"));
}

TEST(AcpiTablesTest, FadtIsHardwareReducedWithPowerRegisters) {
  auto memory = MakeGuest();
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(1, 1));
  const std::vector<uint8_t>& fadt = tables.tables.at("FACP");
  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(fadt[8], 6);    // revision
  EXPECT_EQ(fadt[131], 5);  // minor revision
  EXPECT_EQ(LoadLittleEndian<uint32_t>(fadt, 40), tables.addresses.at("DSDT"));
  EXPECT_EQ(LoadLittleEndian<uint64_t>(fadt, 140), tables.addresses.at("DSDT"));
  EXPECT_EQ(LoadLittleEndian<uint16_t>(fadt, 46), 0);  // no SCI
  const uint32_t flags = LoadLittleEndian<uint32_t>(fadt, 112);
  EXPECT_NE(flags & (1u << 20), 0u);  // HW_REDUCED_ACPI
  EXPECT_NE(flags & (1u << 10), 0u);  // RESET_REG_SUP
  const uint16_t boot_arch = LoadLittleEndian<uint16_t>(fadt, 109);
  EXPECT_EQ(boot_arch, (1 << 2) | (1 << 5));  // no VGA, no CMOS RTC, no 8042
  // RESET_REG, SLEEP_CONTROL, SLEEP_STATUS: 8-bit I/O port 0x600.
  for (uint64_t offset : {116u, 244u, 256u}) {
    SCOPED_TRACE(offset);
    EXPECT_EQ(fadt[offset], 1);      // system I/O
    EXPECT_EQ(fadt[offset + 1], 8);  // bit width
    EXPECT_EQ(fadt[offset + 3], 1);  // byte access
    EXPECT_EQ(LoadLittleEndian<uint64_t>(fadt, offset + 4), kPowerPort);
  }
  EXPECT_EQ(fadt[128], kResetValue);
  // No PM1 blocks in hardware-reduced mode.
  for (uint64_t offset = 148; offset < 244; ++offset) EXPECT_EQ(fadt[offset], 0) << offset;
}

TEST(AcpiTablesTest, MadtListsEveryCpuTheIoapicAndLint1Nmi) {
  auto memory = MakeGuest();
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(3, 0));
  const std::vector<uint8_t>& madt = tables.tables.at("APIC");
  EXPECT_EQ(LoadLittleEndian<uint32_t>(madt, 36), 0xFEE00000u);
  std::vector<uint8_t> apic_ids;
  int ioapics = 0;
  int nmis = 0;
  for (size_t offset = 44; offset < madt.size(); offset += madt[offset + 1]) {
    ASSERT_GE(madt[offset + 1], 2);
    switch (madt[offset]) {
      case 0:
        ASSERT_EQ(madt[offset + 1], 8);
        EXPECT_EQ(madt[offset + 2], madt[offset + 3]);                // UID = APIC ID
        EXPECT_EQ(LoadLittleEndian<uint32_t>(madt, offset + 4), 1u);  // enabled
        apic_ids.push_back(madt[offset + 3]);
        break;
      case 1:
        ASSERT_EQ(madt[offset + 1], 12);
        EXPECT_EQ(madt[offset + 2], 0);  // IOAPIC id
        EXPECT_EQ(LoadLittleEndian<uint32_t>(madt, offset + 4), 0xFEC00000u);
        EXPECT_EQ(LoadLittleEndian<uint32_t>(madt, offset + 8), 0u);  // GSI base
        ++ioapics;
        break;
      case 4:
        ASSERT_EQ(madt[offset + 1], 6);
        EXPECT_EQ(madt[offset + 2], 0xFF);
        EXPECT_EQ(madt[offset + 5], 1);  // LINT1
        ++nmis;
        break;
      default:
        ADD_FAILURE() << "unexpected MADT entry type " << int{madt[offset]};
    }
  }
  EXPECT_EQ(apic_ids, (std::vector<uint8_t>{0, 1, 2}));
  EXPECT_EQ(ioapics, 1);
  EXPECT_EQ(nmis, 1);
}

TEST(AcpiTablesTest, DsdtDescribesEachVirtioDeviceCom1AndSoftOff) {
  auto memory = MakeGuest();
  const AcpiConfig config = ConfigWith(1, 3);
  const GuestTables tables = BuildAndRead(*memory, config);
  const std::vector<uint8_t>& dsdt = tables.tables.at("DSDT");
  EXPECT_EQ(dsdt[8], 2);  // revision 2: 64-bit integers
  EXPECT_EQ(CountOccurrences(dsdt, Ascii("LNRO0005")), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    const x86::MmioDeviceWindow& window = config.virtio_mmio_devices[i];
    std::vector<uint8_t> memory_descriptor = {0x86, 0x09, 0x00, 0x01};
    for (int b = 0; b < 4; ++b) memory_descriptor.push_back((window.base >> (8 * b)) & 0xFF);
    for (int b = 0; b < 4; ++b) memory_descriptor.push_back((window.size >> (8 * b)) & 0xFF);
    memory_descriptor.insert(memory_descriptor.end(), {0x89, 0x06, 0x00, 0x03, 0x01,
                                                       static_cast<uint8_t>(window.gsi), 0, 0, 0});
    EXPECT_EQ(CountOccurrences(dsdt, memory_descriptor), 1u) << "device " << i;
    EXPECT_EQ(CountOccurrences(dsdt, Ascii("V00" + std::to_string(i))), 1u);
  }
  EXPECT_EQ(CountOccurrences(dsdt, Ascii("COM1")), 1u);
  EXPECT_EQ(CountOccurrences(dsdt, Ascii("_S5_")), 1u);
  EXPECT_EQ(CountOccurrences(dsdt, {0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00}), 1u);
}

TEST(AcpiTablesTest, LargestMachineFitsTheArea) {
  auto memory = MakeGuest();
  const GuestTables tables = BuildAndRead(*memory, ConfigWith(kMaxVcpus, 8));
  EXPECT_EQ(tables.tables.at("APIC").size(), 44u + 255 * 8 + 12 + 6);
}

TEST(AcpiTablesTest, RejectsBadConfigurations) {
  auto memory = MakeGuest();
  auto error_for = [&memory](const AcpiConfig& config) {
    auto tables = BuildAcpiTables(*memory, config);
    EXPECT_FALSE(tables.ok());
    EXPECT_EQ(tables.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(tables.status().message());
  };
  EXPECT_THAT(error_for(ConfigWith(0, 0)), HasSubstr("0 vCPUs requested"));
  EXPECT_THAT(error_for(ConfigWith(256, 0)), HasSubstr("describes 1 to 255"));

  AcpiConfig config = ConfigWith(1, 2);
  config.virtio_mmio_devices[1].base = 0x10000000;  // in RAM
  EXPECT_THAT(error_for(config), HasSubstr("virtio-mmio device 1: window [0x10000000"));
  config = ConfigWith(1, 1);
  config.virtio_mmio_devices[0].base = 0xFEBFF800;  // runs into the IOAPIC
  EXPECT_THAT(error_for(config), HasSubstr("not inside the MMIO hole"));
  config = ConfigWith(1, 1);
  config.virtio_mmio_devices[0].gsi = 4;
  EXPECT_THAT(error_for(config), HasSubstr("GSI 4 is not a free IOAPIC pin"));
  config.virtio_mmio_devices[0].gsi = 24;
  EXPECT_THAT(error_for(config), HasSubstr("GSI 24 is not a free IOAPIC pin"));
  config = ConfigWith(1, 2);
  config.virtio_mmio_devices[1].base = config.virtio_mmio_devices[0].base + 0x800;
  EXPECT_THAT(error_for(config), HasSubstr("devices 0 and 1 have overlapping windows"));
  config = ConfigWith(1, 2);
  config.virtio_mmio_devices[1].gsi = config.virtio_mmio_devices[0].gsi;
  EXPECT_THAT(error_for(config), HasSubstr("devices 0 and 1 share GSI 16"));
}

TEST(AcpiTablesTest, FailsWhenGuestRamDoesNotCoverTheArea) {
  auto memory = hw::GuestMemory::Allocate({{0, 0x80000}});
  ASSERT_TRUE(memory.ok());
  EXPECT_FALSE(BuildAcpiTables(**memory, ConfigWith(1, 0)).ok());
}

TEST(PowerPortTest, DecodesSoftOffResetAndIgnoresTheRest) {
  EXPECT_EQ(DecodePowerPortWrite((5 << 2) | 0x20), PowerPortAction::kPowerOff);  // 0x34
  EXPECT_EQ(DecodePowerPortWrite(0x80), PowerPortAction::kNone);                 // WAK_STS clear
  EXPECT_EQ(DecodePowerPortWrite(kResetValue), PowerPortAction::kReset);
  EXPECT_EQ(DecodePowerPortWrite((3 << 2) | 0x20), PowerPortAction::kNone);  // S3: not offered
  EXPECT_EQ(DecodePowerPortWrite(5 << 2), PowerPortAction::kNone);           // no SLP_EN
}

}  // namespace
}  // namespace kvmini::vmm::acpi

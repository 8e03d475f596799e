// Decodes the generated tables with the ACPI reference disassembler (`iasl
// -d`, Debian package acpica-tools) and checks what it understood: an
// independent reading of our bytes. iasl missing is a failure, not a skip.
// The RSDP is not an SDT and iasl cannot load it from a binary file;
// tables_test.cc checks it (and reaches every table here through it).
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/acpi/guest_tables.h"
#include "tests/unit/vmm/x86/test_guest.h"
#include "vmm/acpi/tables.h"

namespace kvmini::vmm::acpi {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

std::string FindIasl() {
  const char* path = std::getenv("PATH");
  std::vector<std::string> directories =
      absl::StrSplit(path != nullptr ? path : "", ':', absl::SkipEmpty());
  directories.push_back("/usr/bin");
  for (const std::string& directory : directories) {
    const std::string candidate = directory + "/iasl";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::string ReadText(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Occurrences of a literal string (std::regex trips GCC 12's
// maybe-uninitialized warning under ASan).
size_t CountOccurrences(const std::string& text, const std::string& literal) {
  size_t count = 0;
  for (size_t at = text.find(literal); at != std::string::npos; at = text.find(literal, at + 1)) {
    ++count;
  }
  return count;
}

class IaslDecodeTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kVcpus = 3;
  static constexpr uint32_t kDevices = 2;

  void SetUp() override {
    iasl_ = FindIasl();
    ASSERT_FALSE(iasl_.empty()) << "iasl not found: install Debian's acpica-tools";
    std::string pattern = ::testing::TempDir() + "kvmini_iasl_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    directory_ = pattern;

    std::unique_ptr<hw::GuestMemory> memory = x86::testing::MakeTestGuest(256 * x86::kMiB);
    ASSERT_NE(memory, nullptr);
    AcpiConfig config;
    config.vcpu_count = kVcpus;
    for (uint32_t i = 0; i < kDevices; ++i) {
      config.virtio_mmio_devices.push_back(*x86::VirtioMmioSlot(i));
    }
    auto built = BuildAcpiTables(*memory, config);
    ASSERT_TRUE(built.ok()) << built.status();
    auto tables = testing::ReadGuestTables(*memory, built->rsdp_address);
    ASSERT_TRUE(tables.ok()) << tables.status();
    tables_ = *tables;
  }

  void TearDown() override {
    if (!directory_.empty() && !HasFailure() && std::getenv("KVMINI_KEEP_IASL") == nullptr) {
      std::system(("rm -rf '" + directory_ + "'").c_str());
    } else if (!directory_.empty()) {
      std::cerr << "iasl files kept in " << directory_ << "\n";
    }
  }

  // Writes `bytes` as NAME.dat, runs `iasl -d` on it and returns NAME.dsl.
  std::string Decode(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string base = directory_ + "/" + name;
    std::ofstream(base + ".dat", std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    const std::string command =
        "cd '" + directory_ + "' && '" + iasl_ + "' -d " + name + ".dat > " + name + ".log 2>&1";
    const int status = std::system(command.c_str());
    const std::string log = ReadText(base + ".log");
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command << "\n" << log;
    EXPECT_THAT(log, Not(ContainsRegex("[Ee]rror|[Ww]arning"))) << log;
    const std::string dsl = ReadText(base + ".dsl");
    EXPECT_FALSE(dsl.empty()) << "iasl wrote no " << name << ".dsl:\n" << log;
    return dsl;
  }

  std::string iasl_;
  std::string directory_;
  testing::GuestTables tables_;
};

TEST_F(IaslDecodeTest, Xsdt) {
  const std::string dsl = Decode("xsdt", tables_.tables.at("XSDT"));
  EXPECT_THAT(dsl, HasSubstr("[XSDT]"));
  EXPECT_EQ(CountOccurrences(dsl, "ACPI Table Address"), 2u) << dsl;
  EXPECT_THAT(dsl, Not(HasSubstr("Invalid")));
}

TEST_F(IaslDecodeTest, Fadt) {
  const std::string dsl = Decode("facp", tables_.tables.at("FACP"));
  EXPECT_THAT(dsl, HasSubstr("[FACP]"));
  EXPECT_THAT(dsl, ContainsRegex("Hardware Reduced \\(V5\\) : 1"));
  EXPECT_THAT(dsl, ContainsRegex("Reset Register Supported \\(V2\\) : 1"));
  EXPECT_THAT(dsl, ContainsRegex("CMOS RTC Not Present \\(V5\\) : 1"));
  EXPECT_THAT(dsl, ContainsRegex("8042 Present on ports 60/64 \\(V2\\) : 0"));
  EXPECT_THAT(dsl, ContainsRegex("Sleep Control Register : \\[Generic Address Structure\\]"));
  EXPECT_EQ(CountOccurrences(dsl, "Address : 0000000000000600"), 3u) << dsl;
  EXPECT_THAT(dsl, Not(HasSubstr("Invalid")));
}

TEST_F(IaslDecodeTest, MadtHasEveryCpuAndTheIoapic) {
  const std::string dsl = Decode("apic", tables_.tables.at("APIC"));
  EXPECT_THAT(dsl, HasSubstr("[APIC]"));
  EXPECT_EQ(CountOccurrences(dsl, "Subtable Type : 00 [Processor Local APIC]"), kVcpus) << dsl;
  for (uint32_t i = 0; i < kVcpus; ++i) {
    EXPECT_THAT(dsl, ContainsRegex("Local Apic ID : 0" + std::to_string(i)));
  }
  EXPECT_EQ(CountOccurrences(dsl, "Subtable Type : 01 [I/O APIC]"), 1u) << dsl;
  EXPECT_THAT(dsl, ContainsRegex("Address : FEC00000"));
  EXPECT_THAT(dsl, ContainsRegex("Interrupt : 00000000"));
  EXPECT_THAT(dsl, HasSubstr("[Local APIC NMI]"));
  EXPECT_THAT(dsl, Not(HasSubstr("Invalid")));
}

TEST_F(IaslDecodeTest, DsdtHasVirtioDevicesCom1AndS5) {
  const std::string dsl = Decode("dsdt", tables_.tables.at("DSDT"));
  EXPECT_EQ(CountOccurrences(dsl, "Name (_HID, \"LNRO0005\")"), kDevices) << dsl;
  EXPECT_THAT(dsl, HasSubstr("Device (V000)"));
  EXPECT_THAT(dsl, HasSubstr("Device (V001)"));
  // iasl puts a comment after each value: "0xD0000000,  // Address Base".
  EXPECT_THAT(dsl,
              ContainsRegex("Memory32Fixed \\(ReadWrite,\\s+0xD0000000,[^\n]*\n\\s+0x00001000,"));
  EXPECT_THAT(dsl,
              ContainsRegex("Memory32Fixed \\(ReadWrite,\\s+0xD0001000,[^\n]*\n\\s+0x00001000,"));
  EXPECT_EQ(CountOccurrences(dsl, "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"),
            kDevices)
      << dsl;
  EXPECT_THAT(dsl, ContainsRegex("\\{\\s+0x00000010,\\s+\\}"));
  EXPECT_THAT(dsl, ContainsRegex("\\{\\s+0x00000011,\\s+\\}"));
  EXPECT_THAT(dsl, HasSubstr("Device (COM1)"));
  EXPECT_THAT(dsl, HasSubstr("EisaId (\"PNP0501\")"));
  EXPECT_THAT(
      dsl, ContainsRegex(
               "IO \\(Decode16,\\s+0x03F8,[^\n]*\n\\s+0x03F8,[^\n]*\n\\s+0x01,[^\n]*\n\\s+0x08,"));
  EXPECT_THAT(dsl, ContainsRegex("IRQNoFlags \\(\\)\\s+\\{4\\}"));
  EXPECT_THAT(dsl, ContainsRegex("Name \\(_S5, Package \\(0x04\\)"));
  EXPECT_THAT(dsl, HasSubstr("Scope (\\_SB)"));
  EXPECT_THAT(dsl, HasSubstr("Name (_UID, One)"));
}

}  // namespace
}  // namespace kvmini::vmm::acpi

// A hostile tiny guest on the local /dev/kvm with two virtio-blk disks: it
// hammers an unclaimed port and an unclaimed MMIO address, drives disk 0's
// status backwards, points its descriptor table at the device's own MMIO
// window, reconfigures the queue after DRIVER_OK and floods QueueNotify
// with a queue that does not exist - and then, as a well-behaved driver,
// reads sector 0 of disk 1 through a real virtqueue request and exits with
// the byte it got. The VMM must stay up, disk 1 must serve the request,
// disk 0 must show DEVICE_NEEDS_RESET, and the log must name each problem
// once or a few times, never once per access.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hw/virtio/virtio_constants.h"
#include "tests/unit/vmm/machine/tiny_guest.h"
#include "vmm/machine/virtio_disks.h"

namespace kvmini::vmm::testing {
namespace {

namespace mmio = hw::virtio::mmio;

#define REQUIRE_KVM() \
  if (!KvmAvailable()) GTEST_SKIP() << "/dev/kvm is not available"

constexpr int kRepeats = 1000;
constexpr uint8_t kUnclaimedPort = 0x99;
// Slot 3 of the virtio-mmio area: no disk there.
constexpr uint16_t kUnclaimedMmioOffset = 0x3000;
constexpr uint16_t kDisk1 = 0x1000;  // disk 1's window, relative to DS
constexpr uint8_t kSectorZeroMarker = 0x5A;

// Guest-physical RAM used by the well-behaved request on disk 1.
constexpr uint16_t kDescriptors = 0x2000;
constexpr uint16_t kAvailRing = 0x3000;
constexpr uint16_t kUsedRing = 0x4000;
constexpr uint16_t kHeader = 0x5000;  // all zero: IN, sector 0
constexpr uint16_t kStatusByte = 0x5100;
constexpr uint16_t kData = 0x6000;

// Log lines that mention `needle`.
size_t LinesMentioning(const std::string& log, absl::string_view needle) {
  std::vector<absl::string_view> lines = absl::StrSplit(log, '\n');
  return std::count_if(lines.begin(), lines.end(), [needle](absl::string_view line) {
    return absl::StrContains(line, needle);
  });
}

// `body` repeated `count` times with LOOP (CX); the body must be short.
void Repeat(RealModeCode& code, uint16_t count, const std::function<void(RealModeCode&)>& body) {
  code.MovCx(count);
  const size_t start = code.bytes().size();
  body(code);
  const int displacement = static_cast<int>(start) - static_cast<int>(code.bytes().size() + 2);
  ASSERT_GE(displacement, -128);
  code.Emit({0xE2, static_cast<uint8_t>(static_cast<int8_t>(displacement))});
}

// mov dword es:[address], value - RAM, since DS points at the devices.
void StoreRamDword(RealModeCode& code, uint16_t address, uint32_t value) {
  code.Emit({0x26}).StoreDword(address, value);
}

void WriteDescriptor(RealModeCode& code, uint16_t index, uint32_t address, uint32_t length,
                     uint16_t flags, uint16_t next) {
  const uint16_t at = kDescriptors + 16 * index;
  StoreRamDword(code, at, address);
  StoreRamDword(code, at + 4, 0);
  StoreRamDword(code, at + 8, length);
  StoreRamDword(code, at + 12, flags | (uint32_t{next} << 16));
}

std::vector<uint8_t> HostileThenPoliteGuest() {
  namespace status = hw::virtio::status;
  RealModeCode code;
  // Unclaimed port and MMIO, read and written over and over.
  Repeat(code, kRepeats, [](RealModeCode& c) { c.InAl(kUnclaimedPort).OutAl(kUnclaimedPort); });
  Repeat(code, kRepeats, [](RealModeCode& c) {
    c.LoadAl(kUnclaimedMmioOffset);
    c.Emit({0xA2, kUnclaimedMmioOffset & 0xFF, kUnclaimedMmioOffset >> 8});  // mov [addr], al
  });
  // Disk 0: status driven backwards, again and again.
  code.StoreDword(mmio::kStatus, status::kAcknowledge);
  code.StoreDword(mmio::kStatus, status::kAcknowledge | status::kDriver);
  Repeat(code, kRepeats,
         [](RealModeCode& c) { c.StoreDword(mmio::kStatus, status::kAcknowledge); });
  // Disk 0: a proper negotiation, then a descriptor table inside the
  // device's own register window.
  code.StoreDword(mmio::kDriverFeaturesSel, 1).StoreDword(mmio::kDriverFeatures, 1);  // VERSION_1
  code.StoreDword(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  code.StoreDword(mmio::kQueueSel, 0).StoreDword(mmio::kQueueNum, 16);
  code.StoreDword(mmio::kQueueDescLow, static_cast<uint32_t>(x86::kVirtioMmioBase));
  code.StoreDword(mmio::kQueueDriverLow, 0x3800).StoreDword(mmio::kQueueDeviceLow, 0x3C00);
  code.StoreDword(mmio::kQueueReady, 1);
  code.StoreDword(mmio::kStatus,
                  status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
  // Disk 0: queue reconfigured after DRIVER_OK; notifications for a queue
  // it does not have (not the ioeventfd's datamatch: each one exits).
  Repeat(code, kRepeats, [](RealModeCode& c) {
    c.StoreDword(mmio::kQueueNum, 8).StoreDword(mmio::kQueueNotify, 99);
  });

  // Disk 1, politely: VERSION_1, one queue of 16, IN of sector 0.
  WriteDescriptor(code, 0, kHeader, 16, hw::virtio::kDescriptorFlagNext, 1);
  WriteDescriptor(code, 1, kData, 512,
                  hw::virtio::kDescriptorFlagWrite | hw::virtio::kDescriptorFlagNext, 2);
  WriteDescriptor(code, 2, kStatusByte, 1, hw::virtio::kDescriptorFlagWrite, 0);
  code.Emit({0x26, 0xC6, 0x06, kStatusByte & 0xFF, kStatusByte >> 8, 0xFF});  // status = 0xFF
  StoreRamDword(code, kAvailRing, 1u << 16);                                  // flags 0, idx 1
  StoreRamDword(code, kAvailRing + 4, 0);                                     // ring[0] = head 0
  code.StoreDword(kDisk1 + mmio::kStatus, status::kAcknowledge);
  code.StoreDword(kDisk1 + mmio::kStatus, status::kAcknowledge | status::kDriver);
  code.StoreDword(kDisk1 + mmio::kDriverFeaturesSel, 1)
      .StoreDword(kDisk1 + mmio::kDriverFeatures, 1);
  code.StoreDword(kDisk1 + mmio::kStatus,
                  status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  code.StoreDword(kDisk1 + mmio::kQueueSel, 0).StoreDword(kDisk1 + mmio::kQueueNum, 16);
  code.StoreDword(kDisk1 + mmio::kQueueDescLow, kDescriptors);
  code.StoreDword(kDisk1 + mmio::kQueueDriverLow, kAvailRing);
  code.StoreDword(kDisk1 + mmio::kQueueDeviceLow, kUsedRing);
  code.StoreDword(kDisk1 + mmio::kQueueReady, 1);
  code.StoreDword(kDisk1 + mmio::kStatus,
                  status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
  code.StoreDword(kDisk1 + mmio::kQueueNotify, 0);
  // Wait for used.idx == 1, then exit with the first byte read.
  code.Emit({0x26, 0xA1, (kUsedRing + 2) & 0xFF, (kUsedRing + 2) >> 8});  // mov ax, es:[used+2]
  code.Emit({0x83, 0xF8, 0x01});                                          // cmp ax, 1
  code.Emit({0x75, 0xF7});                                                // jne back to the mov
  code.Emit({0x26, 0xA0, kData & 0xFF, kData >> 8});                      // mov al, es:[data]
  code.OutAl(0xF4).Spin();
  return code.bytes();
}

class HostileGuestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "kvmini-hostile-guest-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    directory_ = name;
  }
  void TearDown() override {
    for (const std::string& image : images_) unlink(image.c_str());
    rmdir(directory_.c_str());
  }
  std::string Image(const std::string& name, uint8_t first_byte) {
    std::string path = directory_ + "/" + name;
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, 1 << 20), 0);
    EXPECT_EQ(pwrite(fd, &first_byte, 1, 0), 1);
    close(fd);
    images_.push_back(path);
    return path;
  }

  std::string directory_;
  std::vector<std::string> images_;
};

TEST_F(HostileGuestTest, VmmStaysUpOtherDiskServesAndTheLogStaysShort) {
  REQUIRE_KVM();
  const std::vector<uint8_t> code = HostileThenPoliteGuest();
  ASSERT_FALSE(HasFatalFailure());
  auto guest = TinyGuest::CreateRealMode(code, {.data_segment_base = x86::kVirtioMmioBase});
  ASSERT_TRUE(guest.ok()) << guest.status();
  std::vector<DiskSpec> specs(2);
  specs[0] = {.type = DiskType::kBlk, .id = "vda", .path = Image("a.img", 0)};
  specs[1] = {.type = DiskType::kBlk, .id = "vdb", .path = Image("b.img", kSectorZeroMarker)};
  auto disks = VirtioDisks::Create((*guest)->machine().memory(), {}, specs);
  ASSERT_TRUE(disks.ok()) << disks.status();
  ASSERT_TRUE((*disks)->AttachTo((*guest)->machine()).ok());

  ::testing::internal::CaptureStderr();
  MachineExit exit = (*guest)->Run();
  const std::string log = ::testing::internal::GetCapturedStderr();

  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason << "\n" << log;
  EXPECT_EQ(exit.status, kSectorZeroMarker) << "disk 1 did not serve the read:\n" << log;
  auto status = (*guest)->machine().memory().ReadObject<uint8_t>(kStatusByte);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(*status, hw::virtio::blk::kStatusOk);
  EXPECT_EQ((*disks)->FindDisk("vdb")->counters().completed, 1u);

  uint8_t disk0_status[4] = {};
  (*disks)->FindDisk("vda")->transport->Read(mmio::kStatus, disk0_status);
  EXPECT_NE(disk0_status[0] & hw::virtio::status::kDeviceNeedsReset, 0) << int(disk0_status[0]);

  // Each problem is in the log, and not once per access.
  EXPECT_EQ(LinesMentioning(log, "unclaimed port address 0x99"), 1u) << log;
  EXPECT_EQ(LinesMentioning(log, "unclaimed MMIO address 0xd0003000"), 1u) << log;
  const std::pair<const char*, size_t> limited[] = {
      {"clears bits without a reset", 10},
      {"descriptor table at 0xd0000000", 1},
      {"reconfigured after DRIVER_OK", 10},
      {"QueueNotify for queue 99", 10},
  };
  for (const auto& [line, most] : limited) {
    EXPECT_GE(LinesMentioning(log, line), 1u) << line << " missing from:\n" << log;
    EXPECT_LE(LinesMentioning(log, line), most) << line;
  }
  disks->reset();  // before the machine and its main loop
}

}  // namespace
}  // namespace kvmini::vmm::testing

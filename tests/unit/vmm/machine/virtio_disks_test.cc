// VirtioDisks on the local /dev/kvm: disk i is mapped at virtio-mmio slot i
// with GSI 16 + i (what the DSDT is told), a tiny guest reads the devices'
// registers there, and each queue's QueueNotify is a KVM ioeventfd. Also what the command
// line's disk options become: errors naming the disk, direct=on block size.
#include "vmm/machine/virtio_disks.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hw/virtio/virtio_constants.h"
#include "tests/unit/vmm/machine/tiny_guest.h"

namespace kvmini::vmm::testing {
namespace {

using ::testing::HasSubstr;

#define REQUIRE_KVM() \
  if (!KvmAvailable()) GTEST_SKIP() << "/dev/kvm is not available"

// Images under the build tree: tmpfs may refuse O_DIRECT.
class VirtioDisksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "kvmini-virtio-disks-XXXXXX";
    ASSERT_NE(mkdtemp(name), nullptr);
    directory_ = name;
  }
  void TearDown() override {
    for (const std::string& image : images_) unlink(image.c_str());
    rmdir(directory_.c_str());
  }
  std::string Image(const std::string& name, uint64_t bytes = 4 << 20) {
    std::string path = directory_ + "/" + name;
    FILE* file = fopen(path.c_str(), "w");
    EXPECT_NE(file, nullptr);
    if (file != nullptr) fclose(file);
    EXPECT_EQ(truncate(path.c_str(), static_cast<off_t>(bytes)), 0);
    images_.push_back(path);
    return path;
  }

  std::string directory_;
  std::vector<std::string> images_;
};

TEST_F(VirtioDisksTest, GuestFindsEachDiskAtItsSlotAndKicksThroughTheIoEventFd) {
  REQUIRE_KVM();
  const uint64_t base = x86::kVirtioMmioBase;
  RealModeCode code;
  // DS.base = the first slot: [0x50] is QueueNotify of disk 0, [0x1008]
  // DeviceID of disk 1.
  code.StoreDword(hw::virtio::mmio::kQueueNotify, 0);
  code.Emit({0x66, 0xA1, 0x08, 0x10});  // mov eax, [0x1008]
  code.OutAl(0xF4).Spin();
  auto guest = TinyGuest::CreateRealMode(code.bytes(), {.data_segment_base = base});
  ASSERT_TRUE(guest.ok()) << guest.status();
  std::vector<DiskSpec> specs(2);
  specs[0] = {.type = DiskType::kBlk, .id = "vda", .path = Image("a.img")};
  specs[1] = {.type = DiskType::kScsi, .id = "sda", .path = Image("b.img"), .iothread = "io0"};
  auto disks = VirtioDisks::Create((*guest)->machine().memory(), {"io0"}, specs);
  ASSERT_TRUE(disks.ok()) << disks.status();
  auto windows = (*disks)->AttachTo((*guest)->machine());
  ASSERT_TRUE(windows.ok()) << windows.status();
  ASSERT_EQ(windows->size(), 2u);
  EXPECT_EQ((*windows)[0].base, base);
  EXPECT_EQ((*windows)[0].gsi, 16u);
  EXPECT_EQ((*windows)[1].base, base + x86::kVirtioMmioWindowSize);
  EXPECT_EQ((*windows)[1].gsi, 17u);

  MachineExit exit = (*guest)->Run();
  EXPECT_EQ(exit.status, 8) << exit.reason;  // virtio-scsi's device ID
  // The kick is waiting on queue 0's eventfd (no handler: not activated).
  const auto notifiers = (*disks)->FindDisk("vda")->transport->queue_notifiers();
  ASSERT_FALSE(notifiers.empty());
  uint64_t count = 0;
  EXPECT_EQ(read(notifiers[0].fd, &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
  EXPECT_EQ(count, 1u);
  // KVM has it as an ioeventfd with exactly this address, length and
  // datamatch: removing that registration succeeds once, then not again.
  Machine& machine = (*guest)->machine();
  const uint64_t notify = base + notifiers[0].offset;
  EXPECT_TRUE(machine.UnregisterIoEventFd(notify, 4, notifiers[0].datamatch, notifiers[0].fd).ok());
  EXPECT_FALSE(
      machine.UnregisterIoEventFd(notify, 4, notifiers[0].datamatch, notifiers[0].fd).ok());
  disks->reset();  // before the machine and its main loop
}

TEST_F(VirtioDisksTest, ProblemsWithAnImageNameTheDisk) {
  auto main = util::AioContext::CreateMain();
  ASSERT_TRUE(main.ok());
  auto memory = hw::GuestMemory::Allocate({{0, 1 << 20}});
  ASSERT_TRUE(memory.ok());
  // A 1-byte image: not a whole number of sectors.
  DiskSpec odd = {.type = DiskType::kBlk, .id = "odd", .path = Image("odd.img", 1)};
  auto disks = VirtioDisks::Create(**memory, {}, {odd});
  ASSERT_FALSE(disks.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(disks.status())) << disks.status();
  EXPECT_THAT(disks.status().message(), HasSubstr("--blk id=odd (" + odd.path + ")"));
}

TEST_F(VirtioDisksTest, DirectDisksUseTheBackendAlignmentAsBlockSize) {
  auto main = util::AioContext::CreateMain();
  ASSERT_TRUE(main.ok());
  auto memory = hw::GuestMemory::Allocate({{0, 1 << 20}});
  ASSERT_TRUE(memory.ok());
  std::vector<DiskSpec> specs(2);
  specs[0] = {.type = DiskType::kBlk, .id = "vda", .path = Image("a.img"), .direct = true};
  specs[1] = {.type = DiskType::kScsi, .id = "sda", .path = Image("b.img"), .direct = true};
  auto disks = VirtioDisks::Create(**memory, {}, specs);
  ASSERT_TRUE(disks.ok()) << disks.status();
  VirtioDisks::Disk* blk = (*disks)->FindDisk("vda");
  VirtioDisks::Disk* scsi = (*disks)->FindDisk("sda");
  const uint32_t alignment = blk->backend->alignment();
  EXPECT_GE(alignment, 512u);
  EXPECT_EQ(blk->blk->block_size(), alignment);
  EXPECT_EQ(scsi->scsi->disk().profile().block_size,
            std::max<uint32_t>(512, scsi->backend->alignment()));
  disks->reset();
}

}  // namespace
}  // namespace kvmini::vmm::testing

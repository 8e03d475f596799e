// The KVM wrappers against the local /dev/kvm: capability and limit
// queries, the corrected CPUID/MSR ioctl layouts, and errors that name the
// failing call and errno.
#include <sys/mman.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/machine/machine.h"

namespace kvmini::vmm {
namespace {

using ::testing::HasSubstr;

class KvmWrappersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto system = KvmSystem::Open();
    if (!system.ok() && absl::IsNotFound(system.status())) {
      GTEST_SKIP() << "/dev/kvm is not available";
    }
    ASSERT_TRUE(system.ok()) << system.status();
    system_ = std::move(*system);
  }
  std::unique_ptr<KvmSystem> system_;
};

TEST(KvmSystemOpenTest, MissingDeviceIsAnErrorNamingThePath) {
  auto system = KvmSystem::Open("/nonexistent/kvm");
  ASSERT_FALSE(system.ok());
  EXPECT_THAT(system.status().message(), HasSubstr("/nonexistent/kvm"));
}

TEST_F(KvmWrappersTest, ReportsLimitsAndSupportedCpuid) {
  EXPECT_GT(system_->vcpu_mmap_size(), 0);
  EXPECT_GE(system_->max_vcpus(), 1);
  auto cpuid = system_->GetSupportedCpuid();
  ASSERT_TRUE(cpuid.ok()) << cpuid.status();
  bool has_leaf0 = false;
  for (const kvm_cpuid_entry2& entry : *cpuid) has_leaf0 |= entry.function == 0;
  EXPECT_TRUE(has_leaf0);
}

TEST_F(KvmWrappersTest, SupportedCpuidCanBeSetOnAVcpu) {
  auto vm = system_->CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  auto vcpu = (*vm)->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  auto cpuid = system_->GetSupportedCpuid();
  ASSERT_TRUE(cpuid.ok());
  EXPECT_TRUE((*vcpu)->SetCpuid(*cpuid).ok());
}

TEST_F(KvmWrappersTest, RefusedMsrIsNamedInTheError) {
  auto vm = system_->CreateVm();
  ASSERT_TRUE(vm.ok());
  auto vcpu = (*vm)->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok());
  std::vector<kvm_msr_entry> msrs(2);
  msrs[0].index = 0x174;  // IA32_SYSENTER_CS: accepted
  msrs[1].index = 0xDEADBEEF;
  absl::Status status = (*vcpu)->SetMsrs(msrs);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("KVM_SET_MSRS"));
  EXPECT_THAT(status.message(), HasSubstr("0xdeadbeef"));
}

TEST_F(KvmWrappersTest, FailedIoctlNamesTheCallAndErrno) {
  auto vm = system_->CreateVm();
  ASSERT_TRUE(vm.ok());
  ASSERT_TRUE((*vm)->CreateVcpu(0).ok());
  auto duplicate = (*vm)->CreateVcpu(0);
  ASSERT_FALSE(duplicate.ok());
  EXPECT_THAT(duplicate.status().message(), HasSubstr("KVM_CREATE_VCPU"));
  EXPECT_THAT(duplicate.status().message(), HasSubstr("errno"));
  // A guest address that is not page aligned.
  void* host = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  absl::Status status = (*vm)->SetUserMemoryRegion(0, 0x123, 4096, host);
  munmap(host, 4096);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("KVM_SET_USER_MEMORY_REGION"));
  EXPECT_THAT(status.message(), HasSubstr("slot 0"));
}

TEST_F(KvmWrappersTest, IrqLineAndIrqFdNeedTheIrqchip) {
  auto vm = system_->CreateVm();
  ASSERT_TRUE(vm.ok());
  EXPECT_FALSE((*vm)->SetIrqLine(4, true).ok());
  ASSERT_TRUE((*vm)->CreateIrqchip().ok());
  EXPECT_TRUE((*vm)->SetIrqLine(4, true).ok());
  EXPECT_TRUE((*vm)->SetIrqLine(4, false).ok());
}

TEST_F(KvmWrappersTest, MachineRefusesMoreVcpusThanKvmAllows) {
  auto machine = Machine::Create(
      {64 << 20, static_cast<uint32_t>(system_->max_vcpus()) + 1, KvmSystem::kDefaultPath});
  ASSERT_FALSE(machine.ok());
  EXPECT_THAT(machine.status().message(), HasSubstr("allows at most"));
}

}  // namespace
}  // namespace kvmini::vmm

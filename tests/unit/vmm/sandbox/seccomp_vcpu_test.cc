// The vCPU filter lets a vCPU thread run a tiny guest on the local
// /dev/kvm through the real platform devices: KVM_RUN, serial output to
// its file, the UART's interrupt (KVM_IRQ_LINE), the CMOS clock
// (gmtime_r), an unclaimed port (logged once), the exit port (which posts
// the machine's stop to the main loop), and the register dump a failing
// vCPU reports. A forbidden call would end the test binary with SIGSYS.
//
// The loop below stands in for VcpuThread::Loop, which has no hook for
// installing the filter yet: it dispatches port exits to the same bus.
#include <cstdint>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/machine/tiny_guest.h"
#include "tests/unit/vmm/sandbox/sandbox_test_support.h"
#include "vmm/machine/vcpu_thread.h"

namespace kvmini::vmm::sandbox {
namespace {

using ::kvmini::vmm::testing::KvmAvailable;
using ::kvmini::vmm::testing::RealModeCode;
using ::kvmini::vmm::testing::TinyGuest;

// Runs vCPU 0 until the machine is asked to stop; false on a KVM error or
// an exit other than port I/O.
bool RunVcpuLoop(Machine& machine) {
  KvmVcpu& vcpu = machine.vcpu(0);
  while (!machine.stopping()) {
    absl::StatusOr<KvmVcpu::RunResult> result = vcpu.Run();
    if (!result.ok()) return false;
    if (*result == KvmVcpu::RunResult::kInterrupted) {
      vcpu.RequestImmediateExit(false);
      continue;
    }
    kvm_run& run = *vcpu.run_state();
    if (run.exit_reason != KVM_EXIT_IO) return false;
    auto* data = reinterpret_cast<uint8_t*>(&run) + run.io.data_offset;
    for (uint32_t i = 0; i < run.io.count; ++i) {
      std::span<uint8_t> element(data + i * run.io.size, run.io.size);
      if (run.io.direction == KVM_EXIT_IO_OUT) {
        machine.port_bus().Write(run.io.port, element);
      } else {
        machine.port_bus().Read(run.io.port, element);
      }
    }
  }
  return true;
}

TEST(SeccompVcpuTest, TinyGuestRunsThroughThePlatformDevicesUnderTheVcpuFilter) {
  if (!KvmAvailable()) GTEST_SKIP() << "/dev/kvm is not available";
  RealModeCode code;
  code.Print("sandboxed vCPU\r\n");
  code.MovAl(0x00).OutAl(0x70).InAl(0x71);  // CMOS seconds
  code.InAl(0x99);                          // nobody's port
  // The UART's THR-empty interrupt through the PIC (IRQ 4, vector 0x0C,
  // IVT entry at 0x30), as in tiny_guest_test.cc.
  code.Cli();
  const size_t handler_patch = code.bytes().size() + 4;
  code.StoreWord(0x30, 0).StoreWord(0x32, 0);
  code.MovAl(0x11).OutAl(0x20).MovAl(0x08).OutAl(0x21).MovAl(0x04).OutAl(0x21);
  code.MovAl(0x01).OutAl(0x21).MovAl(0xEF).OutAl(0x21);
  code.MovDx(0x3F9).MovAl(0x02).OutDxAl().Sti();
  const uint16_t loop = code.here();
  code.Hlt().Emit({0xEB, static_cast<uint8_t>(loop - (code.here() + 2))});
  const uint16_t handler = code.here();
  code.MovDx(0x3FA).InAlDx().OutAl(0xF4).Spin();  // IIR to the exit port
  std::vector<uint8_t> bytes = code.bytes();
  bytes[handler_patch] = handler & 0xFF;
  bytes[handler_patch + 1] = handler >> 8;
  auto guest = TinyGuest::CreateRealMode(bytes);
  ASSERT_TRUE(guest.ok()) << guest.status();
  Machine& machine = (*guest)->machine();
  machine.port_bus().Freeze();

  bool loop_ok = false;
  std::string registers;
  absl::Status status = testing::RunInFilteredThread(ThreadKind::kVcpu, "vcpu0", [&] {
    loop_ok = RunVcpuLoop(machine);
    registers = DescribeVcpuRegisters(machine.vcpu(0));
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(loop_ok);
  EXPECT_EQ((*guest)->SerialOutput(), "sandboxed vCPU\r\n");
  EXPECT_THAT(registers, ::testing::HasSubstr("RIP="));
  EXPECT_EQ(machine.port_bus().unclaimed_address_count(), 1u);
  // The exit port's stop request reached the main loop as a bottom half;
  // Run() finds the machine stopping and returns the guest's status.
  MachineExit exit = machine.Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 0x02);  // IIR: THR empty
}

}  // namespace
}  // namespace kvmini::vmm::sandbox

// Tiny guests on the local /dev/kvm: the vCPU loop, exit dispatch, the
// serial port, the exit and power ports, MMIO, ioeventfds, interrupts and
// stopping a running vCPU, each exercised by a real guest.
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/machine/tiny_guest.h"
#include "absl/synchronization/notification.h"
#include "util/aio_context.h"
#include "util/mutex.h"

namespace kvmini::vmm::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;

#define REQUIRE_KVM()                                              \
  if (!KvmAvailable()) GTEST_SKIP() << "/dev/kvm is not available"

std::unique_ptr<TinyGuest> MustCreate(const RealModeCode& code,
                                      const TinyGuestOptions& options = {}) {
  auto guest = TinyGuest::CreateRealMode(code.bytes(), options);
  EXPECT_TRUE(guest.ok()) << guest.status();
  return guest.ok() ? std::move(*guest) : nullptr;
}

TEST(TinyGuestTest, TextPrintedThroughTheUartArrives) {
  REQUIRE_KVM();
  RealModeCode code;
  code.Print("hello from the guest\r\n").Exit(0).Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 0);
  EXPECT_EQ(guest->SerialOutput(), "hello from the guest\r\n");
}

TEST(TinyGuestTest, ExitPortWriteBecomesTheExitStatus) {
  REQUIRE_KVM();
  RealModeCode code;
  code.Exit(42).Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort);
  EXPECT_EQ(exit.status, 42) << exit.reason;
}

TEST(TinyGuestTest, RepOutsbDeliversEveryByte) {
  REQUIRE_KVM();
  const std::string text = "rep outsb: count > 1 in one exit\n";
  RealModeCode code;
  // The string sits right after the code; SI points at it.
  const uint16_t code_size = 3 + 3 + 3 + 2 + 4 + 2;  // movs, rep outsb, exit, spin
  code.MovSi(static_cast<uint16_t>(TinyGuest::kCodeAddress + code_size))
      .MovCx(static_cast<uint16_t>(text.size()))
      .MovDx(0x3F8)
      .RepOutsb()
      .Exit(0)
      .Spin();
  ASSERT_EQ(code.bytes().size(), code_size);
  code.EmitBytes(std::vector<uint8_t>(text.begin(), text.end()));
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(guest->SerialOutput(), text);
}

// Records MMIO accesses; reads answer 0x2A.
class RecordingDevice : public hw::BusDevice {
 public:
  struct Access {
    uint64_t offset;
    uint64_t value;
    size_t size;
    bool is_write;
  };
  void Read(uint64_t offset, std::span<uint8_t> data) override {
    std::memset(data.data(), 0, data.size());
    data[0] = 0x2A;
    Record({offset, 0, data.size(), false});
  }
  void Write(uint64_t offset, std::span<const uint8_t> data) override {
    uint64_t value = 0;
    std::memcpy(&value, data.data(), std::min(data.size(), sizeof(value)));
    Record({offset, value, data.size(), true});
  }
  std::vector<Access> accesses() {
    util::MutexLock lock(&mutex_);
    return accesses_;
  }

 private:
  void Record(Access access) {
    util::MutexLock lock(&mutex_);
    accesses_.push_back(access);
  }
  util::Mutex mutex_;
  std::vector<Access> accesses_ ABSL_GUARDED_BY(mutex_);
};

constexpr uint64_t kDeviceBase = 0xD0000000;

TEST(TinyGuestTest, MmioAccessesReachTheDevice) {
  REQUIRE_KVM();
  RealModeCode code;
  // DS.base = kDeviceBase, so [0x10] is kDeviceBase + 0x10.
  code.StoreDword(0x10, 0x12345678).LoadAl(0x20).OutAl(0xF4).Spin();
  auto guest = MustCreate(code, {.data_segment_base = kDeviceBase});
  ASSERT_NE(guest, nullptr);
  RecordingDevice device;
  ASSERT_TRUE(guest->machine().AddMmioDevice(kDeviceBase, 0x1000, &device, "recorder").ok());
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.status, 0x2A) << exit.reason;
  std::vector<RecordingDevice::Access> accesses = device.accesses();
  ASSERT_EQ(accesses.size(), 2u);
  EXPECT_TRUE(accesses[0].is_write);
  EXPECT_EQ(accesses[0].offset, 0x10u);
  EXPECT_EQ(accesses[0].size, 4u);
  EXPECT_EQ(accesses[0].value, 0x12345678u);
  EXPECT_FALSE(accesses[1].is_write);
  EXPECT_EQ(accesses[1].offset, 0x20u);
}

TEST(TinyGuestTest, MatchingWriteSignalsTheIoEventFdInsteadOfExiting) {
  REQUIRE_KVM();
  RealModeCode code;
  code.StoreDword(0x50, 3).StoreDword(0x50, 4).Exit(0).Spin();
  auto guest = MustCreate(code, {.data_segment_base = kDeviceBase});
  ASSERT_NE(guest, nullptr);
  RecordingDevice device;
  ASSERT_TRUE(guest->machine().AddMmioDevice(kDeviceBase, 0x1000, &device, "recorder").ok());
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(guest->machine().RegisterIoEventFd(kDeviceBase + 0x50, 4, 3, fd).ok());
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  uint64_t count = 0;
  EXPECT_EQ(read(fd, &count, sizeof(count)), static_cast<ssize_t>(sizeof(count)));
  EXPECT_EQ(count, 1u);
  // Only the non-matching value exited to userspace.
  std::vector<RecordingDevice::Access> accesses = device.accesses();
  ASSERT_EQ(accesses.size(), 1u);
  EXPECT_EQ(accesses[0].value, 4u);
  EXPECT_TRUE(guest->machine().UnregisterIoEventFd(kDeviceBase + 0x50, 4, 3, fd).ok());
  close(fd);
}

TEST(TinyGuestTest, UnknownPortsReadAllOnesAndAreRememberedOnce) {
  REQUIRE_KVM();
  RealModeCode code;
  code.InAl(0x99).InAl(0x99).OutAl(0x99).OutAl(0xF4).Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 0xFF);
  EXPECT_EQ(guest->machine().port_bus().unclaimed_address_count(), 1u);
}

TEST(TinyGuestTest, I8042ResetEndsTheRunLikeAReboot) {
  REQUIRE_KVM();
  RealModeCode code;
  code.MovAl(0xFE).OutAl(0x64).Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kReset) << exit.reason;
  EXPECT_EQ(exit.status, 0);
}

TEST(TinyGuestTest, AcpiSleepControlS5PowersOff) {
  REQUIRE_KVM();
  RealModeCode code;
  // WAK_STS first (must not power off), then SLP_TYP=5 | SLP_EN.
  code.MovDx(0x600).MovAl(0x80).OutDxAl().MovAl(0x34).OutDxAl().Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kPowerOff) << exit.reason;
  EXPECT_EQ(exit.status, 0);
}

TEST(TinyGuestTest, BusyLoopingVcpuIsKickedOutOnStop) {
  REQUIRE_KVM();
  RealModeCode code;
  code.Spin();
  auto guest = MustCreate(code, {.vcpu_count = 2});
  ASSERT_NE(guest, nullptr);
  Machine& machine = guest->machine();
  std::thread stopper([&machine] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    machine.RequestStop({MachineExit::Cause::kVmmFailure, 1, "stopped by the test"});
  });
  auto start = std::chrono::steady_clock::now();
  MachineExit exit = guest->Run();
  auto elapsed = std::chrono::steady_clock::now() - start;
  stopper.join();
  EXPECT_EQ(exit.reason, "stopped by the test");
  EXPECT_LT(elapsed, std::chrono::seconds(5));
}

// Pausing parks every vCPU outside KVM_RUN (vCPU 1 waits for a SIPI inside
// it): the guest's counter stands still until the vCPUs are resumed.
TEST(TinyGuestTest, PausedVcpusStopRunningTheGuestUntilResumed) {
  REQUIRE_KVM();
  constexpr uint64_t kCounterAddress = 0x500;
  RealModeCode code;
  code.Emit({0x66, 0xFF, 0x06, 0x00, 0x05});  // inc dword [0x500]
  code.Emit({0xEB, 0xF9});                    // jmp back to the inc
  auto guest = MustCreate(code, {.vcpu_count = 2});
  ASSERT_NE(guest, nullptr);
  Machine& machine = guest->machine();
  util::AioContext& main = machine.main_context();
  auto counter = [&machine] {
    return *machine.memory().ReadObject<uint32_t>(kCounterAddress);
  };
  uint32_t at_pause = 0, after_pause = 0, after_resume = 0;
  bool parked = false;
  // Both inside the run (timers only fire in its loop), so the uptime at
  // the end covers at least the time between them.
  absl::Time first_timer_fired, stop_requested;
  main.AddTimer(absl::Now() + absl::Milliseconds(100), [&] {
    first_timer_fired = absl::Now();
    machine.PauseVcpus([&] {
      parked = true;
      EXPECT_TRUE(machine.vcpus_paused());
      at_pause = counter();
      main.AddTimer(absl::Now() + absl::Milliseconds(100), [&] {
        after_pause = counter();
        machine.ResumeVcpus();
        main.AddTimer(absl::Now() + absl::Milliseconds(100), [&] {
          after_resume = counter();
          stop_requested = absl::Now();
          machine.RequestStop({MachineExit::Cause::kVmmFailure, 1, "stopped by the test"});
        });
      });
    });
  });
  MachineExit exit = guest->Run();
  EXPECT_EQ(exit.reason, "stopped by the test");
  EXPECT_TRUE(parked);
  EXPECT_GT(at_pause, 0u);
  EXPECT_EQ(after_pause, at_pause);
  EXPECT_GT(after_resume, after_pause);
  EXPECT_FALSE(machine.vcpus_paused());
  // Two 100 ms timers lie between them; the run itself started a little
  // before the first timer fired, by however long its set-up took.
  EXPECT_GE(stop_requested - first_timer_fired, absl::Milliseconds(200));
  EXPECT_GE(machine.uptime(), stop_requested - first_timer_fired);
}

// A device whose register write waits for a request it posts to the main
// loop (as virtio-mmio's Status writes do).
class MainLoopRoundTripDevice : public hw::BusDevice {
 public:
  explicit MainLoopRoundTripDevice(util::AioContext* main) : main_(main) {}
  void Read(uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), 0);
  }
  void Write(uint64_t, std::span<const uint8_t>) override {
    absl::Notification done;
    main_->ScheduleOneshot([&done] { done.Notify(); });
    done.WaitForNotification();
    writes_.fetch_add(1);
  }
  int writes() const { return writes_.load(); }

 private:
  util::AioContext* const main_;
  std::atomic<int> writes_{0};
};

TEST(TinyGuestTest, StopCompletesWhileAVcpuWaitsForTheMainLoop) {
  REQUIRE_KVM();
  RealModeCode code;
  const uint16_t loop = code.here();
  code.StoreDword(0x10, 1).Emit({0xEB, static_cast<uint8_t>(loop - (code.here() + 2))});
  auto guest = MustCreate(code, {.data_segment_base = kDeviceBase});
  ASSERT_NE(guest, nullptr);
  Machine& machine = guest->machine();
  MainLoopRoundTripDevice device(&machine.main_context());
  ASSERT_TRUE(machine.AddMmioDevice(kDeviceBase, 0x1000, &device, "round trip").ok());
  std::thread stopper([&machine, &device] {
    while (device.writes() < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    machine.RequestStop({MachineExit::Cause::kVmmFailure, 1, "stopped by the test"});
  });
  MachineExit exit = guest->Run();
  stopper.join();
  EXPECT_EQ(exit.reason, "stopped by the test");
  EXPECT_GE(device.writes(), 10);
}

TEST(TinyGuestTest, SigtermStopsTheRunInOrder) {
  REQUIRE_KVM();
  RealModeCode code;
  code.Spin();
  auto guest = MustCreate(code);
  ASSERT_NE(guest, nullptr);
  // Created after the Machine: SIGTERM is blocked here too, so it can only
  // reach the machine's signalfd.
  std::thread signaller([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    kill(getpid(), SIGTERM);
  });
  MachineExit exit = guest->Run();
  signaller.join();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kSignal);
  EXPECT_EQ(exit.status, 128 + SIGTERM);
  EXPECT_THAT(exit.reason, HasSubstr("SIGTERM"));
}

// Real-mode code that routes ISA `irq` through the master PIC (vector base
// 0x08) to `handler`, runs `arm` with interrupts still off, then halts with
// interrupts on until the interrupt arrives.
std::vector<uint8_t> WaitForInterrupt(uint8_t irq, const RealModeCode& arm,
                                      const RealModeCode& handler) {
  RealModeCode code;
  code.Cli();
  const uint16_t vector_entry = static_cast<uint16_t>((0x08 + irq) * 4);
  const size_t handler_patch = code.bytes().size() + 4;  // imm16 of the next store
  code.StoreWord(vector_entry, 0).StoreWord(vector_entry + 2, 0);
  // ICW1 (edge, ICW4 follows), ICW2 vector base, ICW3, ICW4 (8086 mode),
  // then unmask `irq` only.
  code.MovAl(0x11).OutAl(0x20).MovAl(0x08).OutAl(0x21).MovAl(0x04).OutAl(0x21);
  code.MovAl(0x01).OutAl(0x21).MovAl(static_cast<uint8_t>(~(1u << irq))).OutAl(0x21);
  code.EmitBytes(arm.bytes()).Sti();
  const uint16_t loop = code.here();
  code.Hlt().Emit({0xEB, static_cast<uint8_t>(loop - (code.here() + 2))});
  const uint16_t handler_address = code.here();
  code.EmitBytes(handler.bytes());
  std::vector<uint8_t> bytes = code.bytes();
  bytes[handler_patch] = handler_address & 0xFF;
  bytes[handler_patch + 1] = handler_address >> 8;
  return bytes;
}

TEST(TinyGuestTest, UartTransmitEmptyInterruptReachesTheGuest) {
  REQUIRE_KVM();
  RealModeCode arm, handler;
  // Enable the THR-empty interrupt; THR is empty, so it fires at once.
  arm.MovDx(0x3F9).MovAl(0x02).OutDxAl();
  // Report IIR through the exit port.
  handler.MovDx(0x3FA).InAlDx().OutAl(0xF4).Spin();
  auto guest = TinyGuest::CreateRealMode(WaitForInterrupt(4, arm, handler));
  ASSERT_TRUE(guest.ok()) << guest.status();
  MachineExit exit = (*guest)->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 0x02);  // IIR: THR empty, FIFOs off
}

TEST(TinyGuestTest, IrqFdWriteInterruptsTheGuest) {
  REQUIRE_KVM();
  RealModeCode arm, handler;
  handler.Exit(0x55).Spin();
  auto guest = TinyGuest::CreateRealMode(WaitForInterrupt(5, arm, handler));
  ASSERT_TRUE(guest.ok()) << guest.status();
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE((*guest)->machine().RegisterIrqFd(5, fd).ok());
  // The guest is halted in KVM waiting for the interrupt by the time this
  // fires; if it is not yet, the edge is latched in the PIC's IRR anyway.
  std::thread device([fd] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    uint64_t one = 1;
    EXPECT_EQ(write(fd, &one, sizeof(one)), static_cast<ssize_t>(sizeof(one)));
  });
  MachineExit exit = (*guest)->Run();
  device.join();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 0x55);
  EXPECT_TRUE((*guest)->machine().UnregisterIrqFd(5, fd).ok());
  close(fd);
}

TEST(TinyGuestTest, StdinReachesTheGuestThroughTheUartWithFlowControl) {
  REQUIRE_KVM();
  // Reads 20 bytes by polling LSR.DR, sums them, exits with the sum. The
  // FIFO stays off (1 byte of room), so the console must hold the rest of
  // the input and feed it as the guest makes room.
  std::vector<uint8_t> code = {
      0x31, 0xDB,        // xor bx, bx
      0xB9, 0x14, 0x00,  // mov cx, 20
      0xBA, 0xFD, 0x03,  // next: mov dx, 0x3fd
      0xEC,              // wait: in al, dx
      0xA8, 0x01,        // test al, 1
      0x74, 0xFB,        // jz wait
      0xBA, 0xF8, 0x03,  // mov dx, 0x3f8
      0xEC,              // in al, dx
      0x00, 0xC3,        // add bl, al
      0xE2, 0xF0,        // loop next
      0x88, 0xD8,        // mov al, bl
      0xE6, 0xF4,        // out 0xf4, al
      0xEB, 0xFE,        // jmp $
  };
  int input[2];
  ASSERT_EQ(pipe(input), 0);
  int saved_stdin = dup(STDIN_FILENO);
  ASSERT_EQ(dup2(input[0], STDIN_FILENO), STDIN_FILENO);
  close(input[0]);
  const std::string bytes(20, '\x03');
  ASSERT_EQ(write(input[1], bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  MachineExit exit;
  {
    auto guest = TinyGuest::CreateRealMode(code, {.serial_stdio = true});
    ASSERT_TRUE(guest.ok()) << guest.status();
    exit = (*guest)->Run();
  }
  dup2(saved_stdin, STDIN_FILENO);
  close(saved_stdin);
  close(input[1]);
  EXPECT_EQ(exit.cause, MachineExit::Cause::kExitPort) << exit.reason;
  EXPECT_EQ(exit.status, 60);
}

TEST(TinyGuestTest, GuestThatCannotContinueIsAFailureWithRegisters) {
  REQUIRE_KVM();
  // The boot IDT has a limit of 7 (no usable gate): int3 cannot be
  // delivered, nor the #GP and #DF that follow, so a hardware CPU shuts down
  // (triple fault). The software KVM of our test hosts cannot emulate int3
  // at all and reports an emulation failure instead. Either must end the
  // run as a guest failure with the vCPU's registers, never as a success.
  std::vector<uint8_t> code = {0xCC, 0xEB, 0xFE};
  auto guest = TinyGuest::CreateLongMode(code);
  ASSERT_TRUE(guest.ok()) << guest.status();
  MachineExit exit = (*guest)->Run();
  EXPECT_EQ(exit.cause, MachineExit::Cause::kGuestFailure) << exit.reason;
  EXPECT_EQ(exit.status, 1);
  EXPECT_THAT(exit.reason,
              ContainsRegex("(KVM_EXIT_SHUTDOWN|KVM_EXIT_INTERNAL_ERROR).*RIP=0x[0-9a-f]+ RSP="));
}

TEST(TinyGuestTest, LongModePayloadPrintsAndWritesMmio) {
  REQUIRE_KVM();
  std::vector<uint8_t> code = {
      0x66, 0xBA, 0xF8, 0x03,  // mov dx, 0x3f8
      0xB0, 'o', 0xEE,         // mov al, 'o'; out dx, al
      0xB0, 'k', 0xEE,         // mov al, 'k'; out dx, al
      0xB8, 0x78, 0x56, 0x34, 0x12,  // mov eax, 0x12345678
      0xA3, 0x10, 0x00, 0x00, 0xD0, 0x00, 0x00, 0x00, 0x00,  // mov [0xD0000010], eax
      0xB0, 0x07, 0xE6, 0xF4,  // exit 7
      0xEB, 0xFE,
  };
  auto guest = TinyGuest::CreateLongMode(code);
  ASSERT_TRUE(guest.ok()) << guest.status();
  RecordingDevice device;
  ASSERT_TRUE((*guest)->machine().AddMmioDevice(kDeviceBase, 0x1000, &device, "recorder").ok());
  MachineExit exit = (*guest)->Run();
  EXPECT_EQ(exit.status, 7) << exit.reason;
  EXPECT_EQ((*guest)->SerialOutput(), "ok");
  std::vector<RecordingDevice::Access> accesses = device.accesses();
  ASSERT_EQ(accesses.size(), 1u);
  EXPECT_EQ(accesses[0].offset, 0x10u);
  EXPECT_EQ(accesses[0].value, 0x12345678u);
}

}  // namespace
}  // namespace kvmini::vmm::testing

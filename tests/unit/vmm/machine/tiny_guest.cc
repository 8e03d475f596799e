#include "tests/unit/vmm/machine/tiny_guest.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "vmm/x86/cpuid.h"
#include "vmm/x86/long_mode.h"

namespace kvmini::vmm::testing {

bool KvmAvailable() {
  // Only absence skips: a /dev/kvm that exists but cannot be opened is a
  // failure the tests should report, not hide.
  return access(KvmSystem::kDefaultPath, F_OK) == 0;
}

RealModeCode& RealModeCode::StoreDword(uint16_t address, uint32_t value) {
  return Emit({0x66, 0xC7, 0x06, Low(address), High(address), static_cast<uint8_t>(value),
               static_cast<uint8_t>(value >> 8), static_cast<uint8_t>(value >> 16),
               static_cast<uint8_t>(value >> 24)});
}

RealModeCode& RealModeCode::StoreWord(uint16_t address, uint16_t value) {
  return Emit({0xC7, 0x06, Low(address), High(address), Low(value), High(value)});
}

RealModeCode& RealModeCode::Print(const std::string& text) {
  MovDx(0x3F8);
  for (char c : text) MovAl(static_cast<uint8_t>(c)).OutDxAl();
  return *this;
}

uint16_t RealModeCode::here() const {
  return static_cast<uint16_t>(TinyGuest::kCodeAddress + bytes_.size());
}

absl::Status TinyGuest::Build(const TinyGuestOptions& options) {
  char path[] = "/tmp/kvmini-tiny-guest-serial-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("mkstemp failed");
  close(fd);
  serial_path_ = path;

  absl::StatusOr<std::unique_ptr<Machine>> machine =
      Machine::Create({options.memory_bytes, options.vcpu_count});
  if (!machine.ok()) return machine.status();
  machine_ = std::move(*machine);
  absl::StatusOr<std::unique_ptr<hw::SerialConsole>> console = hw::SerialConsole::Create(
      options.serial_stdio ? hw::SerialSpec{hw::SerialSpec::Kind::kStdio, ""}
                           : hw::SerialSpec{hw::SerialSpec::Kind::kFile, serial_path_});
  if (!console.ok()) return console.status();
  console_ = std::move(*console);
  absl::StatusOr<std::unique_ptr<PlatformDevices>> devices =
      PlatformDevices::Create(*machine_, console_.get());
  if (!devices.ok()) return devices.status();
  devices_ = std::move(*devices);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<TinyGuest>> TinyGuest::CreateRealMode(
    const std::vector<uint8_t>& code, const TinyGuestOptions& options) {
  std::unique_ptr<TinyGuest> guest(new TinyGuest());
  if (absl::Status status = guest->Build(options); !status.ok()) return status;
  Machine& machine = *guest->machine_;
  if (absl::Status status = machine.memory().Write(kCodeAddress, code); !status.ok()) {
    return status;
  }
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = machine.kvm().GetSupportedCpuid();
  if (!cpuid.ok()) return cpuid.status();
  for (uint32_t index = 0; index < machine.vcpu_count(); ++index) {
    VcpuBootState state;
    state.cpuid = *cpuid;
    x86::NormalizeCpuid(state.cpuid, index, machine.vcpu_count(), false);
    if (index == 0) {
      kvm_regs registers{};
      registers.rip = kCodeAddress;
      registers.rsp = kStackTop;
      registers.rflags = 0x2;
      state.registers = registers;
      absl::StatusOr<kvm_sregs> special = machine.vcpu(0).GetSpecialRegisters();
      if (!special.ok()) return special.status();
      for (kvm_segment* segment : {&special->cs, &special->ss, &special->es, &special->fs,
                                   &special->gs}) {
        segment->base = 0;
        segment->selector = 0;
      }
      special->ds.base = options.data_segment_base;
      special->ds.selector = 0;
      state.special_registers = *special;
    }
    if (absl::Status status = machine.ConfigureVcpu(index, state); !status.ok()) return status;
  }
  return guest;
}

absl::StatusOr<std::unique_ptr<TinyGuest>> TinyGuest::CreateLongMode(
    const std::vector<uint8_t>& code, const TinyGuestOptions& options) {
  std::unique_ptr<TinyGuest> guest(new TinyGuest());
  if (absl::Status status = guest->Build(options); !status.ok()) return status;
  Machine& machine = *guest->machine_;
  if (absl::Status status = x86::WriteLongModeTables(machine.memory()); !status.ok()) {
    return status;
  }
  if (absl::Status status = machine.memory().Write(kLongModeCodeAddress, code); !status.ok()) {
    return status;
  }
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = machine.kvm().GetSupportedCpuid();
  if (!cpuid.ok()) return cpuid.status();
  x86::BootState boot = x86::LongModeBootState(kLongModeCodeAddress, 0);
  VcpuBootState state;
  state.cpuid = *cpuid;
  x86::NormalizeCpuid(state.cpuid, 0, machine.vcpu_count(), false);
  state.msrs = x86::BootMsrs();
  kvm_regs registers{};
  x86::FillRegs(boot, &registers);
  state.registers = registers;
  kvm_fpu fpu{};
  x86::FillFpu(&fpu);
  state.fpu = fpu;
  absl::StatusOr<kvm_sregs> special = machine.vcpu(0).GetSpecialRegisters();
  if (!special.ok()) return special.status();
  x86::FillSregs(boot, &*special);
  state.special_registers = *special;
  if (absl::Status status = machine.ConfigureVcpu(0, state); !status.ok()) return status;
  return guest;
}

TinyGuest::~TinyGuest() {
  // The devices before the machine's threads could touch them: the machine
  // has joined its vCPU threads when Run() returned.
  devices_.reset();
  console_.reset();
  machine_.reset();
  if (!serial_path_.empty()) unlink(serial_path_.c_str());
}

std::string TinyGuest::SerialOutput() const {
  std::ifstream file(serial_path_, std::ios::binary);
  std::stringstream contents;
  contents << file.rdbuf();
  return contents.str();
}

}  // namespace kvmini::vmm::testing

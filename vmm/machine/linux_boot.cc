#include "vmm/machine/linux_boot.h"

#include "vmm/acpi/tables.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/cpuid.h"
#include "vmm/x86/long_mode.h"

namespace kvmini::vmm {

absl::Status BootLinux(Machine& machine, const LinuxBootRequest& request) {
  absl::StatusOr<acpi::AcpiTables> tables = acpi::BuildAcpiTables(
      machine.memory(), {machine.vcpu_count(), request.virtio_mmio_devices});
  if (!tables.ok()) return tables.status();
  absl::StatusOr<x86::BootState> boot = x86::LoadLinuxFromFiles(
      machine.memory(),
      {request.kernel_path, request.initrd_path, request.command_line, tables->rsdp_address});
  if (!boot.ok()) return boot.status();

  absl::StatusOr<std::vector<kvm_cpuid_entry2>> supported = machine.kvm().GetSupportedCpuid();
  if (!supported.ok()) return supported.status();
  const bool tsc_deadline = machine.kvm().CheckExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  for (uint32_t index = 0; index < machine.vcpu_count(); ++index) {
    VcpuBootState state;
    state.cpuid = *supported;
    x86::NormalizeCpuid(state.cpuid, index, machine.vcpu_count(), tsc_deadline);
    state.msrs = x86::BootMsrs();
    // Application processors wait for INIT/SIPI from the BSP, which sets
    // their registers; only the BSP starts at the kernel entry.
    if (index == 0) {
      kvm_regs registers{};
      x86::FillRegs(*boot, &registers);
      state.registers = registers;
      kvm_fpu fpu{};
      x86::FillFpu(&fpu);
      state.fpu = fpu;
      absl::StatusOr<kvm_sregs> special = machine.GetSpecialRegisters(index);
      if (!special.ok()) return special.status();
      x86::FillSregs(*boot, &*special);
      state.special_registers = *special;
    }
    if (absl::Status status = machine.ConfigureVcpu(index, state); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm

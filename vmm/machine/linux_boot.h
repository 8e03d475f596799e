// BootLinux: prepares a Machine to start a Linux kernel - the ACPI tables
// for its vCPUs and virtio-mmio devices, the bzImage, initrd and command
// line in guest memory (vmm/x86), and every vCPU's initial state: CPUID
// normalised per vCPU, boot MSRs, and for the BSP the 64-bit entry state.
// Call after all devices are added, before Machine::Run(). Problems with
// the user's files (not a bzImage, too big, command line too long) are
// InvalidArgument errors naming the file.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "vmm/machine/machine.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm {

struct LinuxBootRequest {
  std::string kernel_path;
  std::string initrd_path;  // empty: none
  std::string command_line;
  // Described to the guest in the DSDT, in this order.
  std::vector<x86::MmioDeviceWindow> virtio_mmio_devices;
};

absl::Status BootLinux(Machine& machine, const LinuxBootRequest& request);

}  // namespace kvmini::vmm

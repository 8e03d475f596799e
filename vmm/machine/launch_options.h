// LaunchOptions: what a kvmini command line asks for, validated. The flag
// values arrive as plain strings and numbers (vmm/main.cc owns the absl
// flags) so that every check here is testable; each failure is an
// InvalidArgument error whose message is one line naming the flag, the
// value and what is wrong - kvmini prints it and exits with status 2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hw/serial/serial_console.h"
#include "vmm/machine/disk_options.h"

namespace kvmini::vmm {

// The kernel command line used unless --cmdline replaces it. console=ttyS0
// for our UART; quiet, because every console byte is a VM exit; a panic
// reboots at once (panic=-1) in warm mode (reboot=panic_warm), which the
// kernel records at 0x472 and kvmini reports as a panic, while ordinary
// reboots go through the i8042 (reboot=k); no PCI to probe (pci=off); one
// legacy UART (no probes of COM2-4); no IOAPIC timer check (KVM routes the
// PIT correctly and the check costs 10 timer ticks).
inline constexpr char kDefaultKernelCommandLine[] =
    "console=ttyS0 quiet reboot=k,panic_warm panic=-1 pci=off 8250.nr_uarts=1 no_timer_check";

struct LaunchFlags {
  std::string kernel;
  std::string initrd;
  std::string cmdline = kDefaultKernelCommandLine;
  std::string append;
  int64_t cpus = 1;
  std::string memory = "512M";
  std::string serial = "stdio";
  // Repeatable flags, in command-line order.
  std::vector<std::string> iothreads;
  std::vector<std::string> blk;
  std::vector<std::string> scsi;
  std::string control;  // control socket path; empty: none
  std::string seccomp = "on";
};

struct LaunchOptions {
  std::string kernel_path;
  std::string initrd_path;  // empty: no initrd
  std::string kernel_command_line;
  uint32_t vcpu_count = 1;
  uint64_t memory_bytes = 0;
  hw::SerialSpec serial;
  // Each --iothread: its id and settings.
  std::vector<IoThreadSpec> iothreads;
  // Every --blk in order, then every --scsi: the order of the DSDT.
  std::vector<DiskSpec> disks;
  std::string control_path;  // empty: no control socket
  bool seccomp = true;       // install the per-thread filters (vmm/sandbox)
};

// "512M", "2G", "1536m", "4096K", "1T"; a bare number means MiB (as QEMU's
// -m). The result must be a whole number of 4 KiB pages.
absl::StatusOr<uint64_t> ParseMemorySize(absl::string_view text);

// Checks every flag: the kernel is given and readable (its format is
// checked by CheckLaunchFiles, startup_checks.h, and when it is loaded),
// the initrd (if any) readable, memory parses and lies between the minimum
// and the most the memory layout supports, 1 <= cpus <= the most kvmini
// describes in its ACPI tables, --serial parses. Limits that depend on the
// host (KVM's vCPU limit) or on the kernel image (command line length,
// whether kernel and initrd fit) are checked when the machine is built and
// the kernel loaded, with the same kind of error. IOThreads and disks: see
// ValidateIoThreads and ValidateDisks (disk_options.h).
absl::StatusOr<LaunchOptions> ValidateLaunchFlags(const LaunchFlags& flags);

}  // namespace kvmini::vmm

// kvmini: boots a Linux kernel in a KVM virtual machine. Parses and checks
// the command line, builds the machine (memory, vCPUs, platform devices,
// serial console), loads the kernel, runs it, and exits with the status the
// guest's end calls for (see kvmini --help).
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "hw/serial/serial_console.h"
#include "util/log.h"
#include "vmm/control/control_server.h"
#include "vmm/control/unix_socket.h"
#include "vmm/control/vm_commands.h"
#include "vmm/machine/background_task.h"
#include "vmm/machine/cli.h"
#include "vmm/machine/launch_options.h"
#include "vmm/machine/linux_boot.h"
#include "vmm/machine/machine.h"
#include "vmm/machine/platform_devices.h"
#include "vmm/machine/startup_checks.h"
#include "vmm/machine/startup_trace.h"
#include "vmm/machine/virtio_disks.h"
#include "vmm/sandbox/seccomp.h"

namespace {

constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

// Problems with what the user asked for (files, sizes, counts) are usage
// errors; anything else that stops kvmini from starting is a failure.
int ReportStartupError(const absl::Status& status) {
  KVMINI_LOG(Error) << status.message();
  return absl::IsInvalidArgument(status) ? kExitUsage : kExitFailure;
}

absl::Status ControlPathError(const std::string& path, const absl::Status& status) {
  return absl::InvalidArgumentError(absl::StrCat("--control ", path, ": ", status.message()));
}

int Run(int argc, char** argv) {
  kvmini::vmm::MarkStartupPhase("main entered");
  std::vector<std::string> arguments(argv + 1, argv + argc);
  absl::StatusOr<kvmini::vmm::CliRequest> request = kvmini::vmm::ParseCli(arguments);
  if (!request.ok()) return ReportStartupError(request.status());
  if (request->help) {
    std::fputs(kvmini::vmm::UsageText(argc > 0 ? argv[0] : "kvmini").c_str(), stdout);
    return 0;
  }
  absl::StatusOr<kvmini::vmm::LaunchOptions> options =
      kvmini::vmm::ValidateLaunchFlags(request->flags);
  if (!options.ok()) return ReportStartupError(options.status());
  // Everything a user can get wrong is checked before /dev/kvm is opened
  // and before anything is created.
  if (absl::Status status = kvmini::vmm::CheckLaunchFiles(*options); !status.ok()) {
    return ReportStartupError(status);
  }
  if (!options->control_path.empty()) {
    if (absl::Status status = kvmini::vmm::CheckUnixSocketPathFree(options->control_path);
        !status.ok()) {
      return ReportStartupError(ControlPathError(options->control_path, status));
    }
  }
  kvmini::vmm::MarkStartupPhase("command line and files checked");
  kvmini::vmm::sandbox::SetSeccompEnabled(options->seccomp);
  // Compiles the filters and installs the violation report while files can
  // still be opened, overlapping the machine's set-up below. A thread that
  // installs a filter before Finish() below waits for the preparation.
  std::optional<kvmini::vmm::BackgroundTask> sandbox_preparation;
  if (options->seccomp) sandbox_preparation.emplace(&kvmini::vmm::sandbox::PrepareSeccompFilters);
  // Abseil's CPU-frequency measurement sleeps 3 ms or more; done here, it
  // ends while the guest already runs, and no vCPU stalls on it later.
  // Nothing waits for it, so the helper runs under a filter of its own like
  // every thread that outlives the set-up.
  kvmini::vmm::BackgroundTask frequency_measurement([] {
    kvmini::vmm::sandbox::WarmUpLazyLibraryState();
    absl::Status status =
        kvmini::vmm::sandbox::InstallSeccompFilter(kvmini::vmm::sandbox::ThreadKind::kStartupHelper);
    if (status.ok()) kvmini::vmm::sandbox::MeasureCpuFrequency();
    return status;
  }, kvmini::vmm::BackgroundTask::WithoutThread::kSkip);

  // Before any thread that accepts signals exists (the helpers block them
  // all): the Machine blocks the termination signals so that only its main
  // loop receives them.
  absl::StatusOr<std::unique_ptr<kvmini::vmm::Machine>> machine =
      kvmini::vmm::Machine::Create({.memory_bytes = options->memory_bytes,
                                    .vcpu_count = options->vcpu_count,
                                    .sandbox = options->seccomp});
  if (!machine.ok()) return ReportStartupError(machine.status());
  // IOThreads start here, after the Machine has blocked the signals.
  absl::StatusOr<std::unique_ptr<kvmini::vmm::VirtioDisks>> disks =
      kvmini::vmm::VirtioDisks::Create((*machine)->memory(), options->iothreads,
                                       options->disks);
  if (!disks.ok()) return ReportStartupError(disks.status());
  absl::StatusOr<std::vector<kvmini::vmm::x86::MmioDeviceWindow>> windows =
      (*disks)->AttachTo(**machine);
  if (!windows.ok()) return ReportStartupError(windows.status());
  absl::Status boot = kvmini::vmm::BootLinux(
      **machine,
      {options->kernel_path, options->initrd_path, options->kernel_command_line, *windows});
  if (!boot.ok()) return ReportStartupError(boot);
  kvmini::vmm::MarkStartupPhase("kernel loaded");
  // The console after the kernel is loaded: a usage error found while
  // loading (an initrd that does not fit) leaves no serial log behind.
  absl::StatusOr<std::unique_ptr<kvmini::hw::SerialConsole>> console =
      kvmini::hw::SerialConsole::Create(options->serial);
  if (!console.ok()) {
    return ReportStartupError(absl::InvalidArgumentError(console.status().message()));
  }
  absl::StatusOr<std::unique_ptr<kvmini::vmm::PlatformDevices>> devices =
      kvmini::vmm::PlatformDevices::Create(**machine, console->get());
  if (!devices.ok()) return ReportStartupError(devices.status());

  kvmini::vmm::MachineRunControl run_control(**machine);
  auto commands = std::make_unique<kvmini::vmm::VmCommands>(run_control, **disks);
  std::unique_ptr<kvmini::vmm::ControlServer> control;
  if (!options->control_path.empty()) {
    absl::StatusOr<std::unique_ptr<kvmini::vmm::ControlServer>> server =
        kvmini::vmm::ControlServer::Create(options->control_path, (*machine)->main_context());
    if (!server.ok()) {
      return ReportStartupError(ControlPathError(options->control_path, server.status()));
    }
    control = std::move(*server);
    commands->RegisterWith(*control);
  }
  kvmini::vmm::MarkStartupPhase("devices created");
  // Before the first filter; a failure is not a usage error.
  if (sandbox_preparation) {
    if (absl::Status status = sandbox_preparation->Finish(); !status.ok()) {
      KVMINI_LOG(Error) << status.message() << " (--seccomp=off runs without the sandbox)";
      return kExitFailure;
    }
    kvmini::vmm::MarkStartupPhase("seccomp filters ready");
  }
  // The IOThreads' filters; Run() adds the vCPUs' and then the main thread's.
  if (absl::Status status = (*disks)->EnterSandbox(); !status.ok()) {
    KVMINI_LOG(Error) << status.message() << " (--seccomp=off runs without the sandbox)";
    return kExitFailure;
  }

  kvmini::vmm::MachineExit exit = (*machine)->Run();
  // The vCPU threads that marked phases are joined by now.
  kvmini::vmm::FlushStartupTrace();
  switch (exit.cause) {
    case kvmini::vmm::MachineExit::Cause::kGuestFailure:
    case kvmini::vmm::MachineExit::Cause::kVmmFailure:
      KVMINI_LOG(Error) << exit.reason;
      break;
    default:
      KVMINI_LOG(Info) << exit.reason;
      break;
  }
  // The control socket first: it answers nothing more (a quit's answer is
  // flushed) and its commands refer to the disks and the machine.
  control.reset();
  commands.reset();
  // Devices and console go before the machine (the console restores the
  // terminal; the machine's threads are already stopped). The disks stop
  // their queues while their IOThreads still run, then the IOThreads stop.
  disks->reset();
  devices->reset();
  console->reset();
  return exit.status;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }

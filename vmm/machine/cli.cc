#include "vmm/machine/cli.h"

#include <cstdint>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"

ABSL_FLAG(std::string, kernel, "",
          "Linux kernel to boot (required): a bzImage (64-bit boot protocol), or an "
          "uncompressed ELF vmlinux with a PVH entry note, which skips the kernel's own "
          "decompression.");
ABSL_FLAG(std::string, initrd, "", "initramfs/initrd image loaded next to the kernel.");
ABSL_FLAG(std::string, cmdline, kvmini::vmm::kDefaultKernelCommandLine,
          "Kernel command line; replaces the default shown here.");
ABSL_FLAG(std::string, append, "",
          "Text appended to the kernel command line (after --cmdline or the default), e.g. "
          "\"-- sh -c 'exit 7'\" to pass a command to the guest's init.");
ABSL_FLAG(int64_t, cpus, 1, "Number of vCPUs (at most what KVM allows, and 255).");
ABSL_FLAG(std::string, memory, "512M",
          "Guest RAM: a number with K, M, G or T (512M, 2G); a bare number is MiB.");
ABSL_FLAG(std::string, serial, "stdio",
          "Guest serial console (COM1): stdio (output to stdout, keyboard input to the "
          "guest, terminal in raw mode; Ctrl-C stops kvmini), file:PATH (output only), none.");
ABSL_FLAG(std::string, iothread, "",
          "Creates an IOThread (repeatable, up to 64): an event loop of its own that disks "
          "given iothread=ID serve their queues from. ID, or id=ID[,poll-max-ns=N]: before "
          "its loop sleeps it polls the disks' queues and io_uring for up to N ns (adapted to "
          "the load; 0 turns polling off; default 32768, as QEMU's).");
ABSL_FLAG(std::string, blk, "",
          "Adds a virtio-blk disk (repeatable; the first is /dev/vda): "
          "path=IMG[,id=ID][,iothread=ID][,readonly=on][,direct=on][,queues=N][,serial=STR]"
          "[,aio=io_uring|threads]. Default id blkN; queues 1-64; serial up to 20 characters; "
          "a comma in a value is written ',,'.");
ABSL_FLAG(std::string, scsi, "",
          "Adds a virtio-scsi controller with one disk at target 0, LUN 0 (repeatable; listed "
          "after the --blk disks): the same keys as --blk. Default id scsiN; queues are "
          "request queues; serial up to 36 characters.");
ABSL_FLAG(std::string, seccomp, "on",
          "Per-thread seccomp system-call filters: on, or off (for debugging; kvmini then "
          "runs without its sandbox).");
ABSL_FLAG(std::string, control, "",
          "Control socket (unix, line-delimited JSON; use kvmini-ctl): query-status, stop, cont, "
          "query-devices, dataplane-stop, dataplane-start, device-set-iothread, quit.");

namespace kvmini::vmm {
namespace {

constexpr const char* kFlagNames[] = {"kernel", "initrd", "cmdline", "append", "cpus",
                                      "memory", "serial",  "iothread", "blk",   "scsi",
                                      "control", "seccomp"};

// Flags that may be given more than once: their values are collected in
// order instead of replacing each other.
std::vector<std::string>* RepeatableFlagValues(absl::string_view name, LaunchFlags& flags) {
  if (name == "iothread") return &flags.iothreads;
  if (name == "blk") return &flags.blk;
  if (name == "scsi") return &flags.scsi;
  return nullptr;
}

bool IsOurFlag(absl::string_view name) {
  for (const char* known : kFlagNames) {
    if (name == known) return true;
  }
  return false;
}

// Appends "  LABEL     words..." wrapped at 80 columns, continuation lines
// indented under the first word.
void AppendWrapped(std::string& text, absl::string_view label, absl::string_view words) {
  constexpr size_t kIndent = 13;
  constexpr size_t kWidth = 80;
  std::string line = absl::StrFormat("  %-10s ", label);
  for (absl::string_view word : absl::StrSplit(words, ' ', absl::SkipEmpty())) {
    if (line.size() > kIndent && line.size() + word.size() > kWidth) {
      absl::StrAppend(&text, absl::StripTrailingAsciiWhitespace(line), "\n");
      line = std::string(kIndent, ' ');
    }
    absl::StrAppend(&line, word, " ");
  }
  absl::StrAppend(&text, absl::StripTrailingAsciiWhitespace(line), "\n");
}

absl::Status ResetFlagsToDefaults() {
  for (const char* name : kFlagNames) {
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(flag->DefaultValue(), &error)) {
      return absl::InternalError(absl::StrCat("cannot reset flag --", name, ": ", error));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CliRequest> ParseCli(const std::vector<std::string>& arguments) {
  if (absl::Status status = ResetFlagsToDefaults(); !status.ok()) return status;
  CliRequest request;
  for (size_t i = 0; i < arguments.size(); ++i) {
    absl::string_view argument = arguments[i];
    if (argument == "--help" || argument == "-help" || argument == "-h" ||
        argument == "--helpfull") {
      request.help = true;
      return request;
    }
    if (!absl::StartsWith(argument, "-") || argument == "-" || argument == "--") {
      return absl::InvalidArgumentError(absl::StrCat(
          "unexpected argument '", argument,
          "': kvmini takes only flags (to pass a command to the guest use --append \"-- CMD\")"));
    }
    absl::string_view body = argument.substr(absl::StartsWith(argument, "--") ? 2 : 1);
    absl::string_view name = body;
    std::string value;
    bool has_value = false;
    if (size_t equals = body.find('='); equals != absl::string_view::npos) {
      name = body.substr(0, equals);
      value = std::string(body.substr(equals + 1));
      has_value = true;
    }
    if (!IsOurFlag(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (kvmini --help lists the flags)"));
    }
    if (!has_value) {
      if (i + 1 >= arguments.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = arguments[++i];
    }
    if (std::vector<std::string>* values = RepeatableFlagValues(name, request.flags)) {
      values->push_back(std::move(value));
      continue;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(value, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " ", value, ": ", error));
    }
  }
  request.flags.kernel = absl::GetFlag(FLAGS_kernel);
  request.flags.initrd = absl::GetFlag(FLAGS_initrd);
  request.flags.cmdline = absl::GetFlag(FLAGS_cmdline);
  request.flags.append = absl::GetFlag(FLAGS_append);
  request.flags.cpus = absl::GetFlag(FLAGS_cpus);
  request.flags.memory = absl::GetFlag(FLAGS_memory);
  request.flags.serial = absl::GetFlag(FLAGS_serial);
  request.flags.control = absl::GetFlag(FLAGS_control);
  request.flags.seccomp = absl::GetFlag(FLAGS_seccomp);
  return request;
}

std::string UsageText(absl::string_view program) {
  std::string text = absl::StrCat(
      "Usage: ", program,
      " --kernel PATH [--initrd PATH] [--cmdline STR] [--append STR] [--cpus N]\n"
      "       [--memory SIZE] [--serial stdio|file:PATH|none] [--iothread ID|id=ID,poll-max-ns=N]...\n"
      "       [--blk path=IMG,...]... [--scsi path=IMG,...]... [--control PATH]\n"
      "       [--seccomp on|off]\n\n"
      "kvmini boots a Linux kernel in a KVM virtual machine with a serial console\n"
      "and virtio-mmio disks.\n\n"
      "Flags (--name VALUE or --name=VALUE):\n");
  for (const char* name : kFlagNames) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    AppendWrapped(text, absl::StrCat("--", name), flag->Help());
    std::string default_value = flag->DefaultValue();
    if (!default_value.empty()) AppendWrapped(text, "", absl::StrCat("default: ", default_value));
  }
  absl::StrAppend(
      &text,
      "\nExit status:\n"
      "  0      the guest powered off or rebooted, or quit came on the control socket\n"
      "  V      the guest wrote byte V to the exit port (I/O port 0xf4)\n"
      "  1      the guest failed (kernel panic, triple fault, emulation failure) or kvmini did;\n"
      "         the reason is printed on stderr\n"
      "  2      bad usage: a missing or unreadable file, a kernel that is not a bzImage,\n"
      "         a kernel or initrd that does not fit, too little memory, too many vCPUs,\n"
      "         a command line longer than the kernel accepts, a bad disk or iothread\n"
      "         option, a control socket path in use\n"
      "  128+N  stopped by signal N (SIGINT, SIGTERM, SIGHUP, SIGQUIT)\n"
      "\nEnvironment:\n"
      "  KVMINI_TRACE_STARTUP  if set, log when each start-up phase ends and vCPU 0\n"
      "                        first enters the guest (CLOCK_MONOTONIC ns; used by\n"
      "                        the start-up benchmark)\n");
  return text;
}

}  // namespace kvmini::vmm

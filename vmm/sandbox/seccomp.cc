#include "vmm/sandbox/seccomp.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/base/internal/sysinfo.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "vmm/sandbox/syscall_lists.h"
#include "vmm/sandbox/violation_report.h"

namespace kvmini::vmm::sandbox {
namespace {

constexpr std::array<ThreadKind, 5> kAllKinds = {ThreadKind::kMain, ThreadKind::kVcpu,
                                                  ThreadKind::kIoThread,
                                                  ThreadKind::kBlockWorker,
                                                  ThreadKind::kStartupHelper};

std::atomic<bool> seccomp_enabled{true};

struct Prepared {
  absl::Status status;
  // One compiled BPF program per ThreadKind, in kAllKinds order.
  std::array<std::vector<sock_filter>, kAllKinds.size()> programs;
};

Prepared& prepared() {
  static Prepared* const instance = new Prepared;
  return *instance;
}

absl::Status FilterError(ThreadKind kind, absl::string_view what, int error) {
  return absl::ErrnoToStatus(error, absl::StrCat("seccomp: building the ", ThreadKindName(kind),
                                                 " thread filter: ", what));
}

struct ContextDeleter {
  void operator()(scmp_filter_ctx context) const { seccomp_release(context); }
};

// Reads back what seccomp_export_bpf wrote to `fd`.
absl::StatusOr<std::vector<sock_filter>> ReadProgram(int fd) {
  off_t size = lseek(fd, 0, SEEK_END);
  if (size < 0 || size % sizeof(sock_filter) != 0) {
    return absl::InternalError("seccomp: libseccomp exported a malformed BPF program");
  }
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  if (pread(fd, program.data(), static_cast<size_t>(size), 0) != size) {
    return absl::ErrnoToStatus(errno, "seccomp: reading back the BPF program");
  }
  return program;
}

std::vector<scmp_arg_cmp> Comparisons(const std::vector<ArgumentCondition>& conditions) {
  std::vector<scmp_arg_cmp> comparisons;
  for (const ArgumentCondition& condition : conditions) {
    if (condition.differs) {
      comparisons.push_back({condition.index, SCMP_CMP_NE, condition.value, 0});
    } else if (condition.mask == ~uint64_t{0}) {
      comparisons.push_back({condition.index, SCMP_CMP_EQ, condition.value, 0});
    } else {
      // Masked equality compares datum_b with (argument & datum_a).
      comparisons.push_back({condition.index, SCMP_CMP_MASKED_EQ, condition.mask, condition.value});
    }
  }
  return comparisons;
}

absl::StatusOr<std::vector<sock_filter>> Compile(ThreadKind kind, pid_t pid) {
  // Forbidden calls trap into the SIGSYS report; so do calls through
  // another ABI (int 0x80, x32), whose numbers mean other calls.
  std::unique_ptr<void, ContextDeleter> context(seccomp_init(SCMP_ACT_TRAP));
  if (context == nullptr) return FilterError(kind, "seccomp_init", ENOMEM);
  if (int rc = seccomp_attr_set(context.get(), SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_TRAP); rc < 0) {
    return FilterError(kind, "setting the action for other ABIs", -rc);
  }
  // A binary tree instead of a linear scan: every allowed call pays
  // O(log n) comparisons.
  if (int rc = seccomp_attr_set(context.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0) {
    return FilterError(kind, "asking for the binary-tree layout", -rc);
  }
  for (const AllowedSyscall& entry : AllowList(kind, pid)) {
    std::vector<scmp_arg_cmp> comparisons = Comparisons(entry.conditions);
    int rc = seccomp_rule_add_array(context.get(), SCMP_ACT_ALLOW, static_cast<int>(entry.number),
                                    static_cast<unsigned>(comparisons.size()),
                                    comparisons.data());
    if (rc < 0) {
      char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE,
                                                    static_cast<int>(entry.number));
      absl::Status status = FilterError(
          kind, absl::StrCat("adding system call ", name != nullptr ? name : "?", " (",
                             entry.number, ")"),
          -rc);
      std::free(name);
      return status;
    }
  }
  for (const RefusedSyscall& entry : RefusedList(kind)) {
    std::vector<scmp_arg_cmp> comparisons = Comparisons(entry.conditions);
    int rc = seccomp_rule_add_array(context.get(), SCMP_ACT_ERRNO(entry.error),
                                    static_cast<int>(entry.number),
                                    static_cast<unsigned>(comparisons.size()),
                                    comparisons.data());
    if (rc < 0) {
      return FilterError(kind, absl::StrCat("refusing system call ", entry.number), -rc);
    }
  }
  // libseccomp 2.5 exports only to a file descriptor.
  int fd = memfd_create("kvmini-seccomp", MFD_CLOEXEC);
  if (fd < 0) return FilterError(kind, "memfd_create for the exported program", errno);
  absl::StatusOr<std::vector<sock_filter>> program;
  if (int rc = seccomp_export_bpf(context.get(), fd); rc < 0) {
    program = FilterError(kind, "seccomp_export_bpf", -rc);
  } else {
    program = ReadProgram(fd);
  }
  close(fd);
  return program;
}

void PrepareOnce() {
  Prepared& state = prepared();
  const pid_t pid = getpid();
  for (size_t i = 0; i < kAllKinds.size(); ++i) {
    absl::StatusOr<std::vector<sock_filter>> program = Compile(kAllKinds[i], pid);
    if (!program.ok()) {
      state.status = program.status();
      return;
    }
    state.programs[i] = std::move(*program);
  }
  WarmUpLazyLibraryState();
  state.status = InstallViolationHandler();
}

// kAllKinds lists the kinds in declaration order, so a kind's value is its
// program's index.
size_t IndexOf(ThreadKind kind) { return static_cast<size_t>(kind); }
static_assert(static_cast<size_t>(ThreadKind::kStartupHelper) == kAllKinds.size() - 1);

}  // namespace

absl::string_view ThreadKindName(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kMain:
      return "main";
    case ThreadKind::kVcpu:
      return "vCPU";
    case ThreadKind::kIoThread:
      return "IOThread";
    case ThreadKind::kBlockWorker:
      return "block worker";
    case ThreadKind::kStartupHelper:
      return "start-up helper";
  }
  return "unknown";
}

void SetSeccompEnabled(bool enabled) { seccomp_enabled.store(enabled); }
bool SeccompEnabled() { return seccomp_enabled.load(); }

absl::Status SetSeccompMode(absl::string_view value) {
  if (value == "on" || value == "off") {
    SetSeccompEnabled(value == "on");
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--seccomp: '", value, "' is not 'on' or 'off'"));
}

void WarmUpLazyLibraryState() {
  // Work that libc and Abseil otherwise do lazily, once per process, on
  // first use, with calls no filter allows: gmtime_r (the CMOS clock)
  // reads /etc/localtime; absl::Mutex (util::Mutex), the first time one
  // is contended, counts the CPUs (/sys/devices/system/cpu/online). Abseil
  // has no public way to trigger the latter, hence its internal sysinfo.h.
  // Each is once-only and thread-safe: a second caller waits for the first.
  tzset();
  (void)absl::Now();
  (void)absl::base_internal::NumCPUs();
}

void MeasureCpuFrequency() {
  // absl::Mutex reads it to pace a waiter's priority checks. On x86 Abseil
  // opens /sys/devices/system/cpu/cpu0/tsc_freq_khz (read-only, no flags),
  // which most kernels lack, and then times the TSC across two sleeps.
  (void)absl::base_internal::NominalCPUFrequency();
}

absl::Status PrepareSeccompFilters() {
  if (!SeccompEnabled()) return absl::OkStatus();
  static std::once_flag once;
  std::call_once(once, PrepareOnce);
  return prepared().status;
}

absl::Status InstallSeccompFilter(ThreadKind kind) {
  if (!SeccompEnabled()) return absl::OkStatus();
  if (absl::Status status = PrepareSeccompFilters(); !status.ok()) return status;
  std::vector<sock_filter>& program = prepared().programs[IndexOf(kind)];
  LabelThisThread(kind);
  // Required to install a filter without CAP_SYS_ADMIN; it also keeps
  // execve from ever gaining privileges, which kvmini never needs.
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return absl::ErrnoToStatus(errno, "seccomp: prctl(PR_SET_NO_NEW_PRIVS)");
  }
  sock_fprog bpf{static_cast<unsigned short>(program.size()), program.data()};
  // LOG: the kernel's audit log (dmesg, "type=1326") also records every
  // refused call: the trail to follow when a report line could not be
  // written. Kernels before 4.14 lack the flag; install without it there.
  long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, &bpf);
  if (rc != 0 && errno == EINVAL) rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &bpf);
  if (rc != 0) {
    int error = errno;
    return absl::ErrnoToStatus(
        error, absl::StrCat("seccomp: installing the ", ThreadKindName(kind),
                            " thread filter",
                            error == EINVAL ? " (is the kernel built without "
                                              "CONFIG_SECCOMP_FILTER?)"
                                            : ""));
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm::sandbox

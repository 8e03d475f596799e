#include "vmm/sandbox/violation_report.h"

#include <linux/audit.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>


namespace kvmini::vmm::sandbox {
namespace {

// Above the highest x86-64 system call number in use (about 460).
constexpr int kNameTableSize = 512;
constexpr size_t kNameLength = 32;
// Filled once before any filter exists; only read afterwards.
char syscall_names[kNameTableSize][kNameLength];

constexpr size_t kLabelLength = 96;
// "thread 'io0' (IOThread)"; empty in a thread that has no filter of its
// own (it inherited its creator's). initial-exec: reading it in a signal
// handler must not allocate.
thread_local char thread_label[kLabelLength] __attribute__((tls_model("initial-exec")));

// Builds the report in a fixed buffer: no allocation, no locale.
class LineBuilder {
 public:
  void Append(std::string_view text) {
    size_t room = sizeof(buffer_) - used_;
    size_t count = text.size() < room ? text.size() : room;
    std::memcpy(buffer_ + used_, text.data(), count);
    used_ += count;
  }
  void AppendNumber(uint64_t value) {
    char digits[20];
    size_t count = 0;
    do {
      digits[count++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (count > 0) Append(std::string_view(&digits[--count], 1));
  }
  void WriteToStderr() const {
    size_t done = 0;
    while (done < used_) {
      ssize_t written = write(STDERR_FILENO, buffer_ + done, used_ - done);
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) return;
      done += static_cast<size_t>(written);
    }
  }

 private:
  char buffer_[320];
  size_t used_ = 0;
};

// The kernel's struct sigaction for rt_sigaction(2), called directly so a
// sanitizer's sigaction interceptor cannot keep its own handler in place.
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

void OnSigsys(int, siginfo_t* info, void*) {
  LineBuilder line;
  line.Append("kvmini: seccomp: ");
  if (thread_label[0] != '\0') {
    line.Append(thread_label);
  } else {
    line.Append("thread ");
    line.AppendNumber(static_cast<uint64_t>(syscall(SYS_gettid)));
    line.Append(" (no filter of its own; it inherited its creator's)");
  }
  line.Append(" made forbidden system call ");
  const int number = info->si_syscall;
  if (info->si_arch != AUDIT_ARCH_X86_64) {
    line.Append("number ");
    line.AppendNumber(static_cast<uint32_t>(number));
    line.Append(" of another ABI than x86-64");
  } else if (number >= 0 && number < kNameTableSize && syscall_names[number][0] != '\0') {
    line.Append(syscall_names[number]);
    line.Append(" (");
    line.AppendNumber(static_cast<uint64_t>(number));
    line.Append(")");
  } else {
    line.Append("number ");
    line.AppendNumber(static_cast<uint32_t>(number));
  }
  line.Append("; stopping. If kvmini made it, that is a kvmini bug; --seccomp=off runs "
              "without the sandbox\n");
  line.WriteToStderr();

  // End the whole process with SIGSYS: default action, sent to this thread,
  // unblocked (the handler runs with it blocked) so it takes effect at once.
  KernelSigaction default_action{SIG_DFL, 0, nullptr, 0};
  syscall(SYS_rt_sigaction, SIGSYS, &default_action, nullptr, sizeof(uint64_t));
  syscall(SYS_tgkill, syscall(SYS_getpid), syscall(SYS_gettid), SIGSYS);
  uint64_t sigsys_only = uint64_t{1} << (SIGSYS - 1);
  syscall(SYS_rt_sigprocmask, SIG_UNBLOCK, &sigsys_only, nullptr, sizeof(uint64_t));
  // Not reached; should the signal somehow not end us, never return into
  // code whose system call did not happen.
  syscall(SYS_exit_group, 128 + SIGSYS);
}

void FillSyscallNames() {
  for (int number = 0; number < kNameTableSize; ++number) {
    char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, number);
    if (name == nullptr) continue;
    std::snprintf(syscall_names[number], kNameLength, "%s", name);
    std::free(name);
  }
}

}  // namespace

absl::Status InstallViolationHandler() {
  FillSyscallNames();
  struct sigaction action {};
  action.sa_sigaction = OnSigsys;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGSYS, &action, nullptr) != 0) {
    return absl::ErrnoToStatus(errno, "seccomp: installing the SIGSYS handler that reports "
                                      "forbidden system calls");
  }
  return absl::OkStatus();
}

void LabelThisThread(ThreadKind kind) {
  char name[16] = "?";
  pthread_getname_np(pthread_self(), name, sizeof(name));
  std::snprintf(thread_label, kLabelLength, "thread '%s' (%.*s)", name,
                static_cast<int>(ThreadKindName(kind).size()), ThreadKindName(kind).data());
}

}  // namespace kvmini::vmm::sandbox

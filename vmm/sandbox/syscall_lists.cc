#include "vmm/sandbox/syscall_lists.h"

#include <elf.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <initializer_list>

namespace kvmini::vmm::sandbox {
namespace {

// The kernel reads an ioctl's request as 32 bits; whatever a caller leaves
// in the upper half is ignored, so it is ignored here too.
constexpr uint64_t kIoctlRequestMask = 0xffffffffu;
// io_uring_register's opcode is an unsigned int, read as 32 bits likewise.
constexpr uint64_t kIoRingRegisterOpcodeMask = 0xffffffffu;

AllowedSyscall Any(long number) { return {number, {}}; }

AllowedSyscall ArgumentIs(long number, unsigned index, uint64_t value) {
  return {number, {{index, ~uint64_t{0}, value}}};
}

// Allowed when none of `bits` is set in the argument.
AllowedSyscall BitsClear(long number, unsigned index, uint64_t bits) {
  return {number, {{index, bits, 0}}};
}

void AddIoctls(std::vector<AllowedSyscall>& list, std::initializer_list<unsigned long> requests) {
  for (unsigned long request : requests) {
    list.push_back({SYS_ioctl, {{1, kIoctlRequestMask, request & kIoctlRequestMask}}});
  }
}

void AddAll(std::vector<AllowedSyscall>& list, std::initializer_list<long> numbers) {
  for (long number : numbers) list.push_back(Any(number));
}

// What every thread needs, whatever it runs: memory for malloc and Abseil,
// locks, clocks, logging to stderr, abort() on a failed check, the
// violation report itself, and its own end.
void AddCommon(std::vector<AllowedSyscall>& list, pid_t pid) {
  // Never executable: no thread of ours creates code at run time.
  list.push_back(BitsClear(SYS_mmap, 2, PROT_EXEC));
  list.push_back(BitsClear(SYS_mprotect, 2, PROT_EXEC));
  AddAll(list, {SYS_munmap, SYS_mremap, SYS_madvise, SYS_brk});
  // util::Mutex (absl::Mutex: futex; when contended, a short sleep between
  // spins, and a waiter's priority read through pthread_getschedparam),
  // std::promise/future, thread joins.
  AddAll(list, {SYS_futex, SYS_sched_yield, SYS_nanosleep, SYS_clock_nanosleep,
                SYS_sched_getparam, SYS_sched_getscheduler, SYS_restart_syscall});
  // vDSO fall-backs (absl::Now, the CMOS clock).
  AddAll(list, {SYS_clock_gettime, SYS_gettimeofday, SYS_time});
  // Log lines, eventfd kicks and irqfds; glibc's fatal messages use writev.
  AddAll(list, {SYS_write, SYS_writev});
  // raise()/abort() and the violation handler: own ids, the signal mask,
  // back to the default action for SIGABRT/SIGSYS, a signal to itself.
  AddAll(list, {SYS_getpid, SYS_gettid, SYS_rt_sigprocmask, SYS_rt_sigreturn});
  list.push_back(ArgumentIs(SYS_rt_sigaction, 0, SIGABRT));
  list.push_back(ArgumentIs(SYS_rt_sigaction, 0, SIGSYS));
  list.push_back(ArgumentIs(SYS_tgkill, 0, static_cast<uint64_t>(pid)));
  AddAll(list, {SYS_exit, SYS_exit_group});
  // A thread that inherited a filter may still add its own (which can
  // only take permissions away). Not TSYNC: the only flag allowed is LOG.
  list.push_back(ArgumentIs(SYS_prctl, 0, PR_SET_NO_NEW_PRIVS));
  list.push_back({SYS_seccomp, {{0, ~uint64_t{0}, SECCOMP_SET_MODE_FILTER},
                                {1, ~uint64_t{SECCOMP_FILTER_FLAG_LOG}, 0}}});
}

// A fatal signal (a kill(SIGABRT) to the process, a fault) can land in any
// thread; its handler takes the terminal on stdin out of raw mode before the
// default action (hw/serial/serial_console.cc). The main thread's list has
// TCSETS on any fd already (adding this narrower rule there made
// libseccomp leak memory, as LeakSanitizer showed).
void AddTerminalRestore(std::vector<AllowedSyscall>& list) {
  list.push_back(
      {SYS_ioctl, {{0, ~uint64_t{0}, STDIN_FILENO}, {1, kIoctlRequestMask, TCSETS}}});
}

// An AioContext's loop and what runs in it: fd handlers (eventfds),
// bottom halves, the io_uring engine, a BlockBackend's inline
// RWF_NOWAIT fast path. The engine's ring is set up before the filters,
// disabled, and enabled by the loop thread's first submission (it is that
// thread's alone); no other io_uring_register operation is allowed.
void AddEventLoop(std::vector<AllowedSyscall>& list) {
  AddAll(list, {SYS_epoll_pwait2, SYS_epoll_ctl, SYS_read, SYS_io_uring_enter, SYS_preadv2,
                SYS_pwritev2});
  list.push_back(
      {SYS_io_uring_register, {{1, kIoRingRegisterOpcodeMask, IORING_REGISTER_ENABLE_RINGS}}});
}

// The sanitizers' run-times make calls of their own in every thread. Found
// with strace on the sandbox tests (README.md): ASan probes memory through
// a pipe (pipe2, write, close) and removes its alternate signal stack when
// a thread exits. Sanitizer builds are test builds: these are allowed
// there and only there. Reports (symbolizing, /proc/self/maps) are not
// covered: one cut short by a seccomp line means "rerun with
// --seccomp=off".
void AddSanitizerRuntime(std::vector<AllowedSyscall>& list) {
  if (!IsSanitizerBuild()) return;
  AddAll(list, {SYS_pipe2, SYS_close, SYS_sigaltstack});
}

// ---- ASan builds only: LeakSanitizer's check at exit ----
//
// exit() in an ASan build runs LeakSanitizer's check (compiler-rt's
// StopTheWorld) in the thread that calls it: kvmini's main thread, under
// the main filter. It clones a helper task (kLeakCheckHelperCloneFlags:
// our memory, files and fs, but not a thread of our process), lets it
// ptrace us (PR_SET_PTRACER; the process made dumpable meanwhile if it was
// not) and waits for it (wait4 with __WALL). The helper inherits the main
// filter, so its calls are on the main list too: it asks to die with us
// (PR_SET_PDEATHSIG), reads its parent's id, puts handlers for the
// synchronous signals on an alternate stack, lists our threads
// (/proc/PID/task: open, getdents, lseek, read, close), PTRACE_ATTACHes
// each one, waits for it to stop, reads its registers (the stacks are
// read straight from the shared memory) and detaches. A leak report then
// looks for llvm-symbolizer (stat on each PATH entry), which is refused
// with ENOENT: the report is printed unsymbolized (binary+offset) instead
// of being cut short by a violation.
//
// A call missing here shows as: the main thread stopped by SIGSYS at exit
// (its report line names the call), or, for the helper, which runs with
// every asynchronous signal blocked, a silent kill of the helper and a
// process that never finishes exiting. Production builds have none of
// this. Found by running kvmini with every forbidden call logged instead
// of trapped (README.md), and checked against compiler-rt's source.
constexpr uint64_t kLeakCheckHelperCloneFlags =
    CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED;

void AddLeakCheckAtExit(std::vector<AllowedSyscall>& list) {
  if (!IsLeakCheckBuild()) return;
  // The exiting thread's side.
  list.push_back(ArgumentIs(SYS_clone, 0, kLeakCheckHelperCloneFlags));
  for (uint64_t option : {PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_PTRACER}) {
    list.push_back(ArgumentIs(SYS_prctl, 0, option));
  }
  list.push_back(ArgumentIs(SYS_wait4, 2, __WALL));
  // The helper's side.
  list.push_back(ArgumentIs(SYS_prctl, 0, PR_SET_PDEATHSIG));
  AddAll(list, {SYS_getppid, SYS_getdents, SYS_lseek, SYS_read, SYS_close});
  // Read-only opens (of /proc files); seccomp cannot see the path.
  list.push_back(BitsClear(SYS_open, 1, O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND));
  for (int signal_number : {SIGILL, SIGFPE, SIGSEGV, SIGBUS, SIGXCPU, SIGXFSZ}) {
    list.push_back(ArgumentIs(SYS_rt_sigaction, 0, static_cast<uint64_t>(signal_number)));
  }
  // PTRACE_CONT passes on a signal that stopped a thread before the
  // helper's SIGSTOP did; PTRACE_KILL is its way out when it fails midway.
  for (uint64_t request : {PTRACE_ATTACH, PTRACE_CONT, PTRACE_DETACH, PTRACE_KILL}) {
    list.push_back(ArgumentIs(SYS_ptrace, 0, request));
  }
  // Registers may hold the only pointer to a block: the general ones, then
  // the vector ones (XSTATE, or the FPU set where that is missing).
  for (uint64_t register_set : {NT_PRSTATUS, NT_X86_XSTATE, NT_FPREGSET}) {
    list.push_back(
        {SYS_ptrace, {{0, ~uint64_t{0}, PTRACE_GETREGSET}, {2, ~uint64_t{0}, register_set}}});
  }
}

void RefuseForLeakCheckAtExit(std::vector<RefusedSyscall>& list) {
  if (!IsLeakCheckBuild()) return;
  for (RefusedSyscall& entry : list) {
    // Every clone but the helper's (allowed above) is still refused.
    if (entry.number == SYS_clone) {
      entry.conditions.push_back({0, ~uint64_t{0}, kLeakCheckHelperCloneFlags, /*differs=*/true});
    }
  }
  list.push_back({SYS_stat, ENOENT, {}});
}
// ---- end of LeakSanitizer's part ----

}  // namespace

std::vector<AllowedSyscall> AllowList(ThreadKind kind, pid_t pid) {
  std::vector<AllowedSyscall> list;
  AddCommon(list, pid);
  switch (kind) {
    case ThreadKind::kMain:
      AddEventLoop(list);
      // The control socket: clients come and go; answers go out with
      // send(MSG_NOSIGNAL); the socket file is removed at exit.
      AddAll(list, {SYS_accept4, SYS_sendto, SYS_close, SYS_unlink});
      // Serial input interrupts; device (un)registration of ioeventfds and
      // irqfds; the terminal restored at exit.
      AddIoctls(list, {KVM_IRQ_LINE, KVM_IOEVENTFD, KVM_IRQFD, TCGETS, TCSETS});
      AddLeakCheckAtExit(list);
      break;
    case ThreadKind::kIoThread:
      AddEventLoop(list);
      AddTerminalRestore(list);
      break;
    case ThreadKind::kVcpu:
      // KVM_GET_(S)REGS describe the vCPU when it fails; KVM_IRQ_LINE is
      // the UART's interrupt, raised from its register handlers.
      AddIoctls(list, {KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_IRQ_LINE});
      AddTerminalRestore(list);
      break;
    case ThreadKind::kBlockWorker:
      // The work eventfd, and block::RunBlocking's calls.
      AddAll(list, {SYS_read, SYS_preadv, SYS_pwritev, SYS_fdatasync, SYS_fallocate});
      AddTerminalRestore(list);
      break;
    case ThreadKind::kStartupHelper:
      // Sleeps and clocks (the common list) are all its measurement needs.
      AddTerminalRestore(list);
      break;
  }
  AddSanitizerRuntime(list);
  return list;
}

std::vector<RefusedSyscall> RefusedList(ThreadKind kind) {
  std::vector<RefusedSyscall> list = {{SYS_clone, EPERM, {}}, {SYS_clone3, EPERM, {}}};
  // Plain read-only opens (flags exactly O_RDONLY) answer ENOENT: Abseil's
  // CPU-frequency probe (MeasureCpuFrequency) may run in whichever thread
  // first waits on a contended lock, and falls back to measuring. Every
  // other open (O_CLOEXEC, which all of our own code passes, writes,
  // creation) still traps.
  list.push_back({SYS_openat, ENOENT, {{2, ~uint64_t{0}, O_RDONLY}}});
  if (kind == ThreadKind::kMain) RefuseForLeakCheckAtExit(list);
  return list;
}

}  // namespace kvmini::vmm::sandbox

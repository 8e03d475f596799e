#include "hw/serial/serial_console.h"

#include <fcntl.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "util/log.h"

namespace kvmini::hw {
namespace {

// The terminal state to restore, shared with the fatal-signal handler and
// atexit(); only async-signal-safe calls touch it there.
struct termios saved_terminal;
std::atomic<bool> terminal_is_raw{false};

void RestoreTerminal() {
  if (terminal_is_raw.exchange(false)) tcsetattr(STDIN_FILENO, TCSANOW, &saved_terminal);
}

void RestoreTerminalOnFatalSignal(int signal_number) {
  RestoreTerminal();
  // The handler was installed with SA_RESETHAND: re-raising runs the default
  // action (core dump or termination) as if we had never been here.
  raise(signal_number);
}

void InstallTerminalSafetyNets() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  atexit(RestoreTerminal);
  struct sigaction action {};
  action.sa_handler = RestoreTerminalOnFatalSignal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT}) {
    sigaction(signal_number, &action, nullptr);
  }
}

absl::Status MakeTerminalRaw() {
  if (tcgetattr(STDIN_FILENO, &saved_terminal) != 0) {
    return absl::ErrnoToStatus(errno, "reading the terminal settings of stdin");
  }
  struct termios raw = saved_terminal;
  // Raw input (no line editing, echo or CR translation), but ISIG stays on
  // so Ctrl-C still stops kvmini; output processing stays as it was.
  raw.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
  raw.c_lflag &= ~(ECHO | ECHONL | ICANON | IEXTEN);
  raw.c_cflag &= ~(CSIZE | PARENB);
  raw.c_cflag |= CS8;
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  InstallTerminalSafetyNets();
  terminal_is_raw.store(true);
  if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0) {
    terminal_is_raw.store(false);
    return absl::ErrnoToStatus(errno, "switching the terminal to raw mode");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SerialSpec> ParseSerialSpec(absl::string_view text) {
  if (text == "stdio") return SerialSpec{SerialSpec::Kind::kStdio, ""};
  if (text == "none") return SerialSpec{SerialSpec::Kind::kNone, ""};
  if (absl::StartsWith(text, "file:") && text.size() > 5) {
    return SerialSpec{SerialSpec::Kind::kFile, std::string(text.substr(5))};
  }
  return absl::InvalidArgumentError(absl::StrCat("--serial: '", text,
                                                 "' is not one of stdio, file:PATH, none"));
}

absl::StatusOr<std::unique_ptr<SerialConsole>> SerialConsole::Create(const SerialSpec& spec) {
  switch (spec.kind) {
    case SerialSpec::Kind::kNone:
      return std::unique_ptr<SerialConsole>(new SerialConsole(spec.kind, -1, false));
    case SerialSpec::Kind::kFile: {
      int fd = open(spec.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd < 0) {
        return absl::Status(
            absl::ErrnoToStatusCode(errno),
            absl::StrCat("--serial: cannot create ", spec.path, ": ", strerror(errno)));
      }
      return std::unique_ptr<SerialConsole>(new SerialConsole(spec.kind, fd, true));
    }
    case SerialSpec::Kind::kStdio: {
      std::unique_ptr<SerialConsole> console(
          new SerialConsole(spec.kind, STDOUT_FILENO, false));
      if (isatty(STDIN_FILENO)) {
        if (absl::Status status = MakeTerminalRaw(); !status.ok()) return status;
        console->raw_terminal_ = true;
      }
      return console;
    }
  }
  return absl::InvalidArgumentError("unknown serial console kind");
}

SerialConsole::~SerialConsole() {
  if (input_watched_) context_->RemoveFdHandler(STDIN_FILENO);
  if (raw_terminal_) RestoreTerminal();
  if (owns_output_) close(output_fd_);
}

void SerialConsole::Output(uint8_t byte) {
  if (output_fd_ < 0 || output_failed_) return;
  while (true) {
    ssize_t written = write(output_fd_, &byte, 1);
    if (written == 1) return;
    if (written < 0 && errno == EINTR) continue;
    output_failed_ = true;
    KVMINI_LOG(Warning) << "serial console output failed (" << strerror(errno)
                        << "); dropping further guest output";
    return;
  }
}

absl::Status SerialConsole::ConnectInput(Uart16550* uart, util::AioContext* context) {
  if (kind_ != SerialSpec::Kind::kStdio) return absl::OkStatus();
  uart_ = uart;
  context_ = context;
  uart_->SetInputSpaceCallback([this] {
    // From a vCPU thread: the main loop owns pending_input_.
    context_->ScheduleOneshot([this] { ResumeInput(); });
  });
  absl::Status status = context_->SetFdHandler(STDIN_FILENO, [this] { OnInputReadable(); });
  if (!status.ok()) {
    // E.g. stdin is a regular file, which epoll refuses: run without input.
    KVMINI_LOG(Info) << "serial console: not reading stdin (" << status.message() << ")";
    return absl::OkStatus();
  }
  input_watched_ = true;
  return absl::OkStatus();
}

void SerialConsole::OnInputReadable() {
  uint8_t buffer[256];
  ssize_t count = read(STDIN_FILENO, buffer, sizeof(buffer));
  if (count < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (count <= 0) {
    // End of input (or an error): the guest gets no more keystrokes.
    context_->RemoveFdHandler(STDIN_FILENO);
    input_watched_ = false;
    input_ended_ = true;
    return;
  }
  pending_input_.insert(pending_input_.end(), buffer, buffer + count);
  if (!FlushPendingInput()) {
    // The guest is not reading: stop reading stdin until it makes room.
    context_->RemoveFdHandler(STDIN_FILENO);
    input_watched_ = false;
  }
}

bool SerialConsole::FlushPendingInput() {
  size_t accepted = uart_->ReceiveInput(pending_input_);
  pending_input_.erase(pending_input_.begin(),
                       pending_input_.begin() + static_cast<std::ptrdiff_t>(accepted));
  return pending_input_.empty();
}

void SerialConsole::ResumeInput() {
  if (!FlushPendingInput() || input_watched_ || input_ended_) return;
  if (context_->SetFdHandler(STDIN_FILENO, [this] { OnInputReadable(); }).ok()) {
    input_watched_ = true;
  }
}

}  // namespace kvmini::hw

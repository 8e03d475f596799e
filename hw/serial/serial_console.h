// SerialConsole: the host end of the guest's serial port, chosen with
// --serial: "stdio" (guest output to stdout; stdin typed into the guest,
// with the terminal in raw mode while kvmini runs), "file:PATH" (output
// written to a new or truncated file, no input) or "none" (output dropped).
//
// The terminal is restored when the console is destroyed, at exit(), and
// on fatal signals (SIGSEGV, SIGABRT, ...), so a crash never leaves the
// user's shell in raw mode. The terminal keeps ISIG: Ctrl-C (or the quit
// key) reaches kvmini as a signal and stops it in order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hw/serial/uart_16550.h"
#include "util/aio_context.h"

namespace kvmini::hw {

struct SerialSpec {
  enum class Kind { kStdio, kFile, kNone };
  Kind kind = Kind::kStdio;
  std::string path;  // for kFile
};

// Parses a --serial value; the error says what is accepted.
absl::StatusOr<SerialSpec> ParseSerialSpec(absl::string_view text);

class SerialConsole {
 public:
  // Opens the output (a file that cannot be created is an error naming it)
  // and, for stdio on a terminal, switches the terminal to raw mode.
  static absl::StatusOr<std::unique_ptr<SerialConsole>> Create(const SerialSpec& spec);
  ~SerialConsole();
  SerialConsole(const SerialConsole&) = delete;
  SerialConsole& operator=(const SerialConsole&) = delete;

  // Writes one byte of guest output; blocking, retried on EINTR. Errors
  // (a closed stdout) drop the output after one warning.
  void Output(uint8_t byte);

  // Feeds host input to `uart` from `context`'s loop (only for stdio).
  // Call once, before the guest runs; `uart` and `context` must outlive
  // the console.
  absl::Status ConnectInput(Uart16550* uart, util::AioContext* context);

 private:
  SerialConsole(SerialSpec::Kind kind, int output_fd, bool owns_output)
      : kind_(kind), output_fd_(output_fd), owns_output_(owns_output) {}
  void OnInputReadable();
  // Moves pending input into the UART; true if all of it fit.
  bool FlushPendingInput();
  void ResumeInput();

  const SerialSpec::Kind kind_;
  const int output_fd_;
  const bool owns_output_;
  bool output_failed_ = false;
  bool raw_terminal_ = false;
  Uart16550* uart_ = nullptr;
  util::AioContext* context_ = nullptr;
  bool input_watched_ = false;
  bool input_ended_ = false;  // stdin reached end of file
  // Read from stdin but not yet accepted by the UART; main loop only.
  std::vector<uint8_t> pending_input_;
};

}  // namespace kvmini::hw

// kvmini-ctl: command-line client of kvmini's control socket.
//   kvmini-ctl --socket PATH COMMAND [key=value...]
// Prints the JSON answer and exits 0, or prints the error description and
// exits 1 (2 for bad usage or when the socket cannot be reached). Values
// that parse as JSON (numbers, true/false, null, "quoted", {...}) are sent
// as such; anything else is sent as a string.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "nlohmann/json.hpp"
#include "vmm/control/unix_socket.h"

namespace {

int Usage(const char* message) {
  std::fprintf(stderr, "kvmini-ctl: %s\nusage: kvmini-ctl --socket PATH COMMAND [key=value...]\n",
               message);
  return 2;
}

bool WriteAll(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads one line (without the newline); false at end of stream.
bool ReadLine(int fd, std::string& pending, std::string& line) {
  while (true) {
    size_t end = pending.find('\n');
    if (end != std::string::npos) {
      line = pending.substr(0, end);
      pending.erase(0, end + 1);
      return true;
    }
    char buffer[4096];
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    pending.append(buffer, static_cast<size_t>(n));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  int index = 1;
  while (index < argc && std::strncmp(argv[index], "--", 2) == 0) {
    std::string option = argv[index];
    if (option == "--help") {
      std::printf("usage: kvmini-ctl --socket PATH COMMAND [key=value...]\n"
                  "Sends COMMAND to kvmini's control socket and prints the JSON answer.\n");
      return 0;
    }
    if (option == "--socket" && index + 1 < argc) {
      socket_path = argv[index + 1];
      index += 2;
    } else if (option.rfind("--socket=", 0) == 0) {
      socket_path = option.substr(9);
      index += 1;
    } else {
      return Usage(("unknown option " + option).c_str());
    }
  }
  if (socket_path.empty()) return Usage("--socket PATH is required");
  if (index >= argc) return Usage("no COMMAND given");
  nlohmann::json request = {{"execute", argv[index]}, {"id", 1}};
  nlohmann::json arguments = nlohmann::json::object();
  for (++index; index < argc; ++index) {
    std::string pair = argv[index];
    size_t equals = pair.find('=');
    if (equals == std::string::npos || equals == 0) {
      return Usage(("argument '" + pair + "' is not key=value").c_str());
    }
    std::string value = pair.substr(equals + 1);
    nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
    arguments[pair.substr(0, equals)] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  request["arguments"] = arguments;

  absl::StatusOr<int> fd = kvmini::vmm::ConnectToUnixSocket(socket_path);
  if (!fd.ok()) {
    std::fprintf(stderr, "kvmini-ctl: %s\n", std::string(fd.status().message()).c_str());
    return 2;
  }
  std::string pending, line;
  if (!ReadLine(*fd, pending, line)) {  // the greeting
    std::fprintf(stderr, "kvmini-ctl: %s closed the connection before greeting\n",
                 socket_path.c_str());
    return 2;
  }
  if (!WriteAll(*fd, request.dump() + "\n")) {
    std::fprintf(stderr, "kvmini-ctl: cannot send to %s: %s\n", socket_path.c_str(),
                 std::strerror(errno));
    return 2;
  }
  while (ReadLine(*fd, pending, line)) {
    nlohmann::json answer = nlohmann::json::parse(line, nullptr, false);
    if (answer.is_discarded() || !answer.is_object() || answer.value("id", 0) != 1) continue;
    std::printf("%s\n", answer.dump().c_str());
    if (answer.contains("error")) {
      std::fprintf(stderr, "kvmini-ctl: %s\n",
                   answer["error"].value("desc", std::string("error")).c_str());
      return 1;
    }
    return 0;
  }
  std::fprintf(stderr, "kvmini-ctl: %s closed the connection without answering\n",
               socket_path.c_str());
  return 2;
}

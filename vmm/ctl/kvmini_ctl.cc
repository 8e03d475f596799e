// kvmini-ctl: command-line client of kvmini's control socket.
//   kvmini-ctl --socket PATH COMMAND [key=value...]
// Prints the JSON answer and exits 0, or prints the error description and
// exits 1 (2 for bad usage or when the socket cannot be reached). Values
// that parse as JSON (numbers, true/false, null, "quoted", {...}) are sent
// as such; anything else is sent as a string.
//   kvmini-ctl --socket PATH --batch
// Reads one "COMMAND [key=value...]" per line from stdin and prints each
// answer as one JSON line as soon as it arrives, over one connection: for
// scripts that send many commands (starting a process per command costs
// more than the command). Exits 1 if any command failed, else 0.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "vmm/control/unix_socket.h"

namespace {

constexpr char kUsage[] =
    "usage: kvmini-ctl --socket PATH COMMAND [key=value...]\n"
    "       kvmini-ctl --socket PATH --batch   (commands from stdin, one per line)\n";

int Usage(const std::string& message) {
  std::fprintf(stderr, "kvmini-ctl: %s\n%s", message.c_str(), kUsage);
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

// COMMAND key=value... -> the request (with `id`), or an error message.
bool BuildRequest(const std::vector<std::string>& words, int id, nlohmann::json& request,
                  std::string& error) {
  if (words.empty()) {
    error = "no COMMAND given";
    return false;
  }
  request = {{"execute", words[0]}, {"id", id}};
  nlohmann::json arguments = nlohmann::json::object();
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string& pair = words[i];
    size_t equals = pair.find('=');
    if (equals == std::string::npos || equals == 0) {
      error = "argument '" + pair + "' is not key=value";
      return false;
    }
    std::string value = pair.substr(equals + 1);
    nlohmann::json parsed = nlohmann::json::parse(value, nullptr, false);
    arguments[pair.substr(0, equals)] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  request["arguments"] = arguments;
  return true;
}

class Connection {
 public:
  explicit Connection(std::string path) : path_(std::move(path)) {}
  ~Connection() {
    if (fd_ >= 0) close(fd_);
  }
  // Connects and reads the greeting; prints why not on stderr.
  bool Open() {
    absl::StatusOr<int> fd = kvmini::vmm::ConnectToUnixSocket(path_);
    if (!fd.ok()) {
      std::fprintf(stderr, "kvmini-ctl: %s\n", std::string(fd.status().message()).c_str());
      return false;
    }
    fd_ = *fd;
    std::string greeting;
    if (!ReadLine(fd_, pending_, greeting)) {
      std::fprintf(stderr, "kvmini-ctl: %s closed the connection before greeting\n", path_.c_str());
      return false;
    }
    return true;
  }
  // Sends `request` and waits for the answer with its id; false (reported
  // on stderr) if the connection fails first.
  bool Exchange(const nlohmann::json& request, nlohmann::json& answer) {
    if (!WriteAll(fd_, request.dump() + "\n")) {
      std::fprintf(stderr, "kvmini-ctl: cannot send to %s: %s\n", path_.c_str(),
                   std::strerror(errno));
      return false;
    }
    std::string line;
    while (ReadLine(fd_, pending_, line)) {
      answer = nlohmann::json::parse(line, nullptr, false);
      if (answer.is_object() && answer.contains("id") && answer["id"] == request["id"]) {
        return true;
      }
    }
    std::fprintf(stderr, "kvmini-ctl: %s closed the connection without answering\n", path_.c_str());
    return false;
  }

 private:
  const std::string path_;
  int fd_ = -1;
  std::string pending_;
};

// Prints the answer; returns whether it was a success.
bool Report(const nlohmann::json& answer, bool describe_errors) {
  std::printf("%s\n", answer.dump().c_str());
  std::fflush(stdout);
  if (!answer.contains("error")) return true;
  if (describe_errors) {
    std::fprintf(stderr, "kvmini-ctl: %s\n",
                 answer["error"].value("desc", std::string("error")).c_str());
  }
  return false;
}

int RunBatch(Connection& connection) {
  bool all_ok = true;
  std::string line;
  for (int id = 1; std::getline(std::cin, line); ++id) {
    std::istringstream stream(line);
    std::vector<std::string> words;
    for (std::string word; stream >> word;) words.push_back(word);
    if (words.empty()) continue;
    nlohmann::json request, answer;
    std::string error;
    if (!BuildRequest(words, id, request, error)) {
      // Answered like the server would, so the caller reads one line per line.
      Report({{"error", {{"class", "Usage"}, {"desc", error}}}}, false);
      all_ok = false;
      continue;
    }
    if (!connection.Exchange(request, answer)) return 2;
    all_ok = Report(answer, false) && all_ok;
  }
  return all_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  bool batch = false;
  int index = 1;
  while (index < argc && std::strncmp(argv[index], "--", 2) == 0) {
    std::string option = argv[index];
    if (option == "--help") {
      std::printf("%sSends COMMAND to kvmini's control socket and prints the JSON answer.\n",
                  kUsage);
      return 0;
    }
    if (option == "--socket" && index + 1 < argc) {
      socket_path = argv[index + 1];
      index += 2;
    } else if (option.rfind("--socket=", 0) == 0) {
      socket_path = option.substr(9);
      index += 1;
    } else if (option == "--batch") {
      batch = true;
      index += 1;
    } else {
      return Usage("unknown option " + option);
    }
  }
  if (socket_path.empty()) return Usage("--socket PATH is required");
  std::vector<std::string> words(argv + index, argv + argc);
  if (batch && !words.empty()) return Usage("--batch takes its commands from stdin");
  nlohmann::json request;
  std::string error;
  if (!batch && !BuildRequest(words, 1, request, error)) return Usage(error);

  Connection connection(socket_path);
  if (!connection.Open()) return 2;
  if (batch) return RunBatch(connection);
  nlohmann::json answer;
  if (!connection.Exchange(request, answer)) return 2;
  return Report(answer, true) ? 0 : 1;
}

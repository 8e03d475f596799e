// A control-socket client for tests that run the server's main loop in the
// same thread: sending never blocks (the loop is polled while the server's
// side is full) and reading polls the loop until a whole line arrived.
#pragma once

#include <map>
#include <string>

#include "nlohmann/json.hpp"
#include "util/aio_context.h"

namespace kvmini::vmm::testing {

class ControlTestClient {
 public:
  // `main` is the loop the server runs in (the calling thread's).
  explicit ControlTestClient(util::AioContext& main) : main_(main) {}

  // Connects to `path`; returns the fd (the test closes it) or -1.
  int Connect(const std::string& path);
  void SendRaw(int fd, const std::string& text);
  // The next whole line on `fd`, parsed; a null json if the peer closed.
  nlohmann::json ReadMessage(int fd);
  // Sends `request` as one line and reads the next message.
  nlohmann::json Execute(int fd, const nlohmann::json& request);

 private:
  util::AioContext& main_;
  std::map<int, std::string> pending_;
};

}  // namespace kvmini::vmm::testing

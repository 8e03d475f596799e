#include "tests/unit/vmm/control/control_test_client.h"

#include <sys/socket.h>

#include <cerrno>

#include "gtest/gtest.h"
#include "vmm/control/unix_socket.h"

namespace kvmini::vmm::testing {

int ControlTestClient::Connect(const std::string& path) {
  absl::StatusOr<int> fd = ConnectToUnixSocket(path);
  EXPECT_TRUE(fd.ok()) << fd.status();
  return fd.ok() ? *fd : -1;
}

void ControlTestClient::SendRaw(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN) {
      main_.Poll(false);  // let the server drain its side
      continue;
    }
    ASSERT_GT(n, 0);
    done += static_cast<size_t>(n);
  }
}

nlohmann::json ControlTestClient::ReadMessage(int fd) {
  std::string& pending = pending_[fd];
  while (pending.find('\n') == std::string::npos) {
    char buffer[4096];
    ssize_t n = recv(fd, buffer, sizeof(buffer), MSG_DONTWAIT);
    if (n > 0) {
      pending.append(buffer, static_cast<size_t>(n));
    } else if (n == 0) {
      ADD_FAILURE() << "connection closed";
      return nlohmann::json();
    } else {
      main_.Poll(true);
    }
  }
  size_t end = pending.find('\n');
  nlohmann::json message = nlohmann::json::parse(pending.substr(0, end));
  pending.erase(0, end + 1);
  return message;
}

nlohmann::json ControlTestClient::Execute(int fd, const nlohmann::json& request) {
  SendRaw(fd, request.dump() + "\n");
  return ReadMessage(fd);
}

}  // namespace kvmini::vmm::testing

#include "vmm/control/control_server.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "util/aio_wait.h"
#include "util/log.h"
#include "vmm/control/unix_socket.h"

namespace kvmini::vmm {

struct ControlServer::Client {
  int fd = -1;
  std::string input;
  std::string output;
  bool skipping_long_line = false;  // dropping bytes up to the next newline
  bool busy = false;                // a command of this client is running
  bool disconnected = false;
  bool watching_writable = false;
};

namespace {

const char* ErrorClassFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return kErrorInvalidParameter;
    case absl::StatusCode::kNotFound:
      return kErrorDeviceNotFound;
    default:
      return kErrorGeneric;
  }
}

// Answers echo the request's "id"; a deeply nested one would make
// serialising the answer recurse without bound.
bool ShallowEnough(const nlohmann::json& value, int depth_left) {
  if (!value.is_structured()) return true;
  if (depth_left == 0) return false;
  for (const auto& element : value) {
    if (!ShallowEnough(element, depth_left - 1)) return false;
  }
  return true;
}

nlohmann::json ErrorAnswer(const char* error_class, const std::string& description) {
  return {{"error", {{"class", error_class}, {"desc", description}}}};
}

}  // namespace

absl::StatusOr<std::unique_ptr<ControlServer>> ControlServer::Create(const std::string& path,
                                                                     util::AioContext& context) {
  absl::StatusOr<int> fd = ListenOnUnixSocket(path);
  if (!fd.ok()) return fd.status();
  std::unique_ptr<ControlServer> server(new ControlServer(path, *fd, context));
  absl::Status status = context.SetFdHandler(*fd, [raw = server.get()] { raw->Accept(); });
  if (!status.ok()) return status;  // the destructor closes and unlinks
  return server;
}

ControlServer::ControlServer(std::string path, int listen_fd, util::AioContext& context)
    : path_(std::move(path)), listen_fd_(listen_fd), context_(context) {}

ControlServer::~ControlServer() {
  context_.RemoveFdHandler(listen_fd_);
  close(listen_fd_);
  unlink(path_.c_str());
  while (!clients_.empty()) {
    std::shared_ptr<Client> client = clients_.begin()->second;
    FlushOutput(client);  // best effort: e.g. the answer to "quit"
    Disconnect(client);
  }
}

void ControlServer::AddCommand(const std::string& name, Handler handler) {
  commands_[name] = Command{std::move(handler), nullptr};
}

void ControlServer::AddAsyncCommand(const std::string& name, AsyncHandler handler) {
  commands_[name] = Command{nullptr, std::move(handler)};
}

void ControlServer::Accept() {
  while (true) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        KVMINI_LOG(Warning) << "control socket " << path_ << ": accept: " << strerror(errno);
      }
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    auto client = std::make_shared<Client>();
    client->fd = fd;
    // The handler holds the client alive while one of its callbacks runs,
    // even if that callback disconnects it.
    absl::Status status = context_.SetFdHandler(fd, [this, client] { OnReadable(client); });
    if (!status.ok()) {
      KVMINI_LOG(Warning) << "control socket " << path_ << ": " << status.message();
      close(fd);
      continue;
    }
    clients_[fd] = client;
    Send(client, {{"kvmini", {{"version", KVMINI_VERSION}, {"protocol", 1}}}});
  }
}

void ControlServer::OnReadable(const std::shared_ptr<Client>& client) {
  char buffer[4096];
  while (!client->disconnected) {
    ssize_t n = read(client->fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      // Peer gone. A command of its own that is still running finishes; its
      // answer is dropped.
      Disconnect(client);
      return;
    }
    for (ssize_t i = 0; i < n; ++i) {
      char c = buffer[i];
      if (client->skipping_long_line) {
        if (c == '\n') client->skipping_long_line = false;
        continue;
      }
      client->input.push_back(c);
      if (c != '\n' && client->input.size() > kMaxLineBytes) {
        // Forget what we hold and the rest of this line: memory stays bounded.
        client->input.erase(client->input.rfind('\n') + 1);
        client->skipping_long_line = true;
        Send(client, ErrorAnswer(kErrorInvalidRequest,
                                 absl::StrCat("request line longer than ", kMaxLineBytes,
                                              " bytes; ignored")));
      }
    }
  }
  ProcessLines(client);
}

void ControlServer::ProcessLines(const std::shared_ptr<Client>& client) {
  // Nested (a command waiting polls the main loop), or an asynchronous
  // command has not answered yet: whoever finishes that command resumes
  // this client's queue, keeping answers in order.
  if (client->busy) return;
  client->busy = true;
  while (!client->disconnected) {
    size_t end = client->input.find('\n');
    if (end == std::string::npos) break;
    std::string line = client->input.substr(0, end);
    client->input.erase(0, end + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    struct Progress {
      bool dispatching = true;
      bool answered = false;
    };
    auto progress = std::make_shared<Progress>();
    std::weak_ptr<bool> alive = alive_;
    Dispatch(line, [this, client, progress, alive](nlohmann::json answer) {
      if (alive.expired()) return;
      Send(client, answer);
      progress->answered = true;
      if (progress->dispatching) return;  // the loop below goes on
      // Answered later, from wherever the command finished: resume this
      // client's queue from the main loop itself.
      client->busy = false;
      context_.ScheduleOneshot([this, client, alive] {
        if (!alive.expired()) ProcessLines(client);
      });
    });
    progress->dispatching = false;
    if (!progress->answered) return;  // still busy until the reply
  }
  client->busy = false;
}

nlohmann::json ControlServer::AnswerRequest(const std::string& line) {
  std::optional<nlohmann::json> result;
  Dispatch(line, [&result](nlohmann::json answer) { result = std::move(answer); });
  if (!result) util::AioWaitWhileUnlocked([&result] { return !result.has_value(); });
  return std::move(*result);
}

void ControlServer::Dispatch(const std::string& line, Answer answer) {
  nlohmann::json request = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (request.is_discarded()) {
    std::move(answer)(ErrorAnswer(kErrorParse, "the request is not valid JSON"));
    return;
  }
  const bool has_id = request.is_object() && request.contains("id");
  if (has_id && !ShallowEnough(request["id"], 8)) {
    std::move(answer)(
        ErrorAnswer(kErrorInvalidRequest, "\"id\" is nested more than 8 levels deep"));
    return;
  }
  // Every other answer carries the request's id.
  auto send = [answer = std::move(answer), has_id,
               id = has_id ? request["id"] : nlohmann::json()](nlohmann::json message) mutable {
    if (has_id) message["id"] = std::move(id);
    std::move(answer)(std::move(message));
  };
  if (!request.is_object() || !request.contains("execute") || !request["execute"].is_string()) {
    send(ErrorAnswer(kErrorInvalidRequest,
                     "a request is a JSON object with a string member \"execute\""));
    return;
  }
  if (request.contains("arguments") && !request["arguments"].is_object()) {
    send(ErrorAnswer(kErrorInvalidRequest, "\"arguments\" must be a JSON object"));
    return;
  }
  const std::string name = request["execute"].get<std::string>();
  auto command = commands_.find(name);
  if (command == commands_.end()) {
    send(ErrorAnswer(kErrorCommandNotFound, absl::StrCat("no command named '", name, "'")));
    return;
  }
  nlohmann::json arguments =
      request.contains("arguments") ? request["arguments"] : nlohmann::json::object();
  auto reply = [send = std::move(send)](absl::StatusOr<nlohmann::json> result) mutable {
    if (result.ok()) {
      send({{"return", result->is_null() ? nlohmann::json::object() : *std::move(result)}});
    } else {
      send(ErrorAnswer(ErrorClassFor(result.status()), std::string(result.status().message())));
    }
  };
  // Copy: the handler may wait, and a nested AddCommand could rehash.
  Command handlers = command->second;
  if (handlers.async_handler) {
    handlers.async_handler(arguments, std::move(reply));
  } else {
    reply(handlers.handler(arguments));
  }
}

void ControlServer::Send(const std::shared_ptr<Client>& client, const nlohmann::json& message) {
  if (client->disconnected) return;
  client->output += message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  client->output += '\n';
  FlushOutput(client);
}

void ControlServer::FlushOutput(const std::shared_ptr<Client>& client) {
  while (!client->output.empty() && !client->disconnected) {
    ssize_t n = send(client->fd, client->output.data(), client->output.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      Disconnect(client);
      return;
    }
    client->output.erase(0, static_cast<size_t>(n));
  }
  if (client->disconnected) return;
  if (client->output.size() > kMaxPendingOutputBytes) {
    KVMINI_LOG(Warning) << "control socket " << path_
                        << ": a client stopped reading its answers; disconnecting it";
    Disconnect(client);
    return;
  }
  // Watch for writability only while answers are pending.
  bool want_writable = !client->output.empty();
  if (want_writable == client->watching_writable) return;
  client->watching_writable = want_writable;
  auto on_writable = client->output.empty()
                         ? util::AioContext::Callback()
                         : util::AioContext::Callback([this, client] { FlushOutput(client); });
  absl::Status status =
      context_.SetFdHandler(client->fd, [this, client] { OnReadable(client); },
                            std::move(on_writable));
  if (!status.ok()) Disconnect(client);
}

void ControlServer::Disconnect(const std::shared_ptr<Client>& client) {
  if (client->disconnected) return;
  client->disconnected = true;
  context_.RemoveFdHandler(client->fd);
  close(client->fd);
  clients_.erase(client->fd);
}

}  // namespace kvmini::vmm

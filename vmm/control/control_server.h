// ControlServer: the control socket. Speaks line-delimited JSON in the
// style of QMP over a unix socket served by the main loop:
//   greeting   {"kvmini": {"version": "X.Y.Z", "protocol": 1}}
//   request    {"execute": NAME, "arguments": {...}, "id": ANY}
//   answer     {"return": {...}, "id": ...}
//           or {"error": {"class": ..., "desc": ...}, "id": ...}
// Several clients at once. A malformed line gets an error answer and the
// connection stays usable; an over-long line is refused and skipped without
// buffering it; a client that disconnects mid-command changes nothing else.
//
// Command handlers run in the main loop thread and may wait (e.g. through
// AioWaitBhOneshot), which polls the main loop: other clients keep being
// served meanwhile, and each client's own requests are answered in order.
//
// Asynchronous commands (AddAsyncCommand) start their work and return; they
// answer through a Reply later. Use them for anything that depends on a
// device's life-cycle FIFO or on the vCPUs: a handler that waits can run
// nested inside such an operation's own wait (the main loop is polled
// there), and waiting for work queued behind that operation would never
// end.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "util/aio_context.h"

namespace kvmini::vmm {

// Error classes in answers. A handler picks one through its status code:
// kInvalidArgument -> InvalidParameter, kNotFound -> DeviceNotFound,
// anything else -> GenericError.
inline constexpr char kErrorParse[] = "ParseError";
inline constexpr char kErrorInvalidRequest[] = "InvalidRequest";
inline constexpr char kErrorCommandNotFound[] = "CommandNotFound";
inline constexpr char kErrorInvalidParameter[] = "InvalidParameter";
inline constexpr char kErrorDeviceNotFound[] = "DeviceNotFound";
inline constexpr char kErrorGeneric[] = "GenericError";

class ControlServer {
 public:
  using Handler = std::function<absl::StatusOr<nlohmann::json>(const nlohmann::json& arguments)>;
  // Sends the answer of an asynchronous command. Call it once, from the main
  // loop thread, at any time (inside the handler too); it does nothing if
  // the client or the server is gone by then.
  using Reply = absl::AnyInvocable<void(absl::StatusOr<nlohmann::json> result) &&>;
  using AsyncHandler = std::function<void(const nlohmann::json& arguments, Reply reply)>;

  static constexpr size_t kMaxLineBytes = 64 * 1024;
  // A client that stops reading its answers is disconnected past this.
  static constexpr size_t kMaxPendingOutputBytes = 4 * 1024 * 1024;

  // Listens on `path` (see ListenOnUnixSocket) in `context`'s loop.
  static absl::StatusOr<std::unique_ptr<ControlServer>> Create(const std::string& path,
                                                               util::AioContext& context);
  // Disconnects every client and removes the socket file.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // `arguments` is always a JSON object (empty if the request had none).
  void AddCommand(const std::string& name, Handler handler);
  // The client's next requests wait until `handler` has replied; other
  // clients are served meanwhile.
  void AddAsyncCommand(const std::string& name, AsyncHandler handler);
  // The answer to one request line, exactly as a client would get it
  // (waiting, polling the main loop, for an asynchronous command's reply).
  // Exposed for the protocol fuzzer; clients go through the socket.
  nlohmann::json AnswerRequest(const std::string& line);
  size_t client_count() const { return clients_.size(); }

 private:
  struct Client;
  struct Command {
    Handler handler;             // either this,
    AsyncHandler async_handler;  // or this.
  };
  using Answer = absl::AnyInvocable<void(nlohmann::json answer) &&>;
  ControlServer(std::string path, int listen_fd, util::AioContext& context);
  void Accept();
  void OnReadable(const std::shared_ptr<Client>& client);
  void ProcessLines(const std::shared_ptr<Client>& client);
  // Runs the request on `line`; `answer` gets the message to send, now or
  // (asynchronous command) later.
  void Dispatch(const std::string& line, Answer answer);
  void Send(const std::shared_ptr<Client>& client, const nlohmann::json& message);
  void FlushOutput(const std::shared_ptr<Client>& client);
  void Disconnect(const std::shared_ptr<Client>& client);

  const std::string path_;
  const int listen_fd_;
  util::AioContext& context_;
  std::map<std::string, Command> commands_;
  // Expires with the server: replies and bottom halves that outlive it
  // check it before touching the server.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::map<int, std::shared_ptr<Client>> clients_;
};

}  // namespace kvmini::vmm

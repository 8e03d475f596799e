// Fuzzes the control protocol's request handling: any line must produce a
// well-formed answer (an object with "return" or "error") and never crash.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "util/aio_context.h"
#include "vmm/control/control_server.h"

namespace {

struct Fixture {
  Fixture() {
    main = std::move(*kvmini::util::AioContext::CreateMain());
    char dir_template[] = "/tmp/kvmini-fuzz-XXXXXX";
    dir = mkdtemp(dir_template);
    server = std::move(*kvmini::vmm::ControlServer::Create(dir + "/control.sock", *main));
    server->AddCommand("echo",
                       [](const nlohmann::json& arguments) -> absl::StatusOr<nlohmann::json> {
                         return arguments;
                       });
    server->AddCommand(
        "device", [](const nlohmann::json& arguments) -> absl::StatusOr<nlohmann::json> {
          if (!arguments.contains("device") || !arguments["device"].is_string()) {
            return absl::InvalidArgumentError("'device' must be a string");
          }
          return absl::NotFoundError("no device '" + arguments["device"].get<std::string>() + "'");
        });
  }
  std::unique_ptr<kvmini::util::AioContext> main;
  std::string dir;
  std::unique_ptr<kvmini::vmm::ControlServer> server;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fixture = new Fixture();
  std::string line(reinterpret_cast<const char*>(data), size);
  nlohmann::json answer = fixture->server->AnswerRequest(line);
  if (!answer.is_object() || (answer.contains("return") == answer.contains("error"))) {
    std::abort();
  }
  // The answer must serialise (invalid UTF-8 in input is replaced, not thrown).
  (void)answer.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return 0;
}

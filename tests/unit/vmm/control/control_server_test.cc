#include "vmm/control/control_server.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/un.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <vector>
#include <string>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/vmm/control/control_test_client.h"
#include "util/aio_wait.h"
#include "vmm/control/unix_socket.h"

extern char** environ;

namespace kvmini::vmm {
namespace {

using nlohmann::json;

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto main = util::AioContext::CreateMain();
    ASSERT_TRUE(main.ok());
    main_ = std::move(*main);
    char dir_template[] = "/tmp/kvmini-control-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/control.sock";
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    main_.reset();
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  void StartServer() {
    auto server = ControlServer::Create(path_, *main_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    server_->AddCommand("echo", [](const json& arguments) -> absl::StatusOr<json> {
      return json{{"arguments", arguments}};
    });
    server_->AddCommand("fail", [](const json& arguments) -> absl::StatusOr<json> {
      std::string kind = arguments.value("kind", "");
      if (kind == "argument") return absl::InvalidArgumentError("bad 'x'");
      if (kind == "device") return absl::NotFoundError("no device 'vdz'");
      return absl::InternalError("it broke");
    });
  }

  int Connect() { return client().Connect(path_); }
  void SendRaw(int fd, const std::string& text) { client().SendRaw(fd, text); }
  json ReadMessage(int fd) { return client().ReadMessage(fd); }
  json Execute(int fd, const json& request) { return client().Execute(fd, request); }
  testing::ControlTestClient& client() {
    if (!client_) client_ = std::make_unique<testing::ControlTestClient>(*main_);
    return *client_;
  }

  std::unique_ptr<util::AioContext> main_;
  std::unique_ptr<ControlServer> server_;
  std::string dir_, path_;
  std::unique_ptr<testing::ControlTestClient> client_;
};

TEST_F(ControlServerTest, GreetsWithTheVersionAndAnswersWithTheRequestId) {
  StartServer();
  int fd = Connect();
  json greeting = ReadMessage(fd);
  EXPECT_EQ(greeting["kvmini"]["version"], KVMINI_VERSION);
  json answer = Execute(fd, {{"execute", "echo"}, {"arguments", {{"a", 1}}}, {"id", "x-7"}});
  EXPECT_EQ(answer["return"]["arguments"]["a"], 1);
  EXPECT_EQ(answer["id"], "x-7");
  answer = Execute(fd, {{"execute", "echo"}});
  EXPECT_EQ(answer["return"]["arguments"], json::object());
  EXPECT_FALSE(answer.contains("id"));
  close(fd);
}

TEST_F(ControlServerTest, EachErrorClass) {
  StartServer();
  int fd = Connect();
  ReadMessage(fd);
  struct Case {
    std::string line;
    std::string error_class;
    std::string in_description;
  } cases[] = {
      {"{not json", kErrorParse, "not valid JSON"},
      {"[1,2]", kErrorInvalidRequest, "\"execute\""},
      {R"({"execute": 5})", kErrorInvalidRequest, "\"execute\""},
      {R"({"execute": "echo", "arguments": [1]})", kErrorInvalidRequest, "arguments"},
      {R"({"execute": "nope"})", kErrorCommandNotFound, "'nope'"},
      {R"({"execute": "echo", "id": [[[[[[[[[[1]]]]]]]]]]})", kErrorInvalidRequest, "nested"},
      {R"({"execute": "fail", "arguments": {"kind": "argument"}})", kErrorInvalidParameter,
       "bad 'x'"},
      {R"({"execute": "fail", "arguments": {"kind": "device"}})", kErrorDeviceNotFound, "vdz"},
      {R"({"execute": "fail"})", kErrorGeneric, "it broke"},
  };
  for (const Case& c : cases) {
    SendRaw(fd, c.line + "\n");
    json answer = ReadMessage(fd);
    EXPECT_EQ(answer["error"]["class"], c.error_class) << c.line;
    EXPECT_THAT(answer["error"]["desc"].get<std::string>(), ::testing::HasSubstr(c.in_description))
        << c.line;
    // The connection stays usable after every error.
    EXPECT_EQ(Execute(fd, {{"execute", "echo"}, {"id", 1}})["id"], 1);
  }
  close(fd);
}

TEST_F(ControlServerTest, OverLongLineIsRefusedAndTheConnectionStaysUsable) {
  StartServer();
  int fd = Connect();
  ReadMessage(fd);
  std::string huge = R"({"execute": "echo", "arguments": {"blob": ")" +
                     std::string(3 * ControlServer::kMaxLineBytes, 'a') + "\"}}\n";
  SendRaw(fd, huge);
  json answer = ReadMessage(fd);
  EXPECT_EQ(answer["error"]["class"], kErrorInvalidRequest);
  EXPECT_THAT(answer["error"]["desc"].get<std::string>(), ::testing::HasSubstr("longer than"));
  EXPECT_EQ(Execute(fd, {{"execute", "echo"}, {"id", 2}})["id"], 2);
  close(fd);
}

// A line that never ends is dropped as it arrives: the server's memory does
// not grow with it (64 MiB streamed; the process grows by far less), it is
// refused once, and the next line is served.
TEST_F(ControlServerTest, EndlessLineIsNotBuffered) {
  StartServer();
  int fd = Connect();
  ReadMessage(fd);
  auto resident_bytes = [] {
    std::ifstream statm("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    statm >> size >> resident;
    return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  };
  const std::string chunk(1 << 20, 'a');
  SendRaw(fd, R"({"execute": "echo", "arguments": {"blob": ")");
  const uint64_t before = resident_bytes();
  for (int i = 0; i < 64; ++i) SendRaw(fd, chunk);
  // Let the server read what is still in the socket.
  for (int i = 0; i < 100; ++i) main_->Poll(false);
  const uint64_t after = resident_bytes();
  const uint64_t grown = after > before ? after - before : 0;
  EXPECT_LT(grown, uint64_t{16} << 20) << "the server buffered the endless line";
  SendRaw(fd, "\"}}\n");
  json refused = ReadMessage(fd);
  EXPECT_EQ(refused["error"]["class"], kErrorInvalidRequest);
  EXPECT_THAT(refused["error"]["desc"].get<std::string>(), ::testing::HasSubstr("longer than"));
  // Exactly one answer for the whole line: the next one is this request's.
  EXPECT_EQ(Execute(fd, {{"execute", "echo"}, {"id", 3}})["id"], 3);
  close(fd);
}

TEST_F(ControlServerTest, PipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  int fd = Connect();
  ReadMessage(fd);
  SendRaw(fd, R"({"execute":"echo","id":1})" "\n" R"({"execute":"nope","id":2})" "\n"
              R"({"execute":"echo","id":3})" "\n");
  EXPECT_EQ(ReadMessage(fd)["id"], 1);
  EXPECT_EQ(ReadMessage(fd)["id"], 2);
  EXPECT_EQ(ReadMessage(fd)["id"], 3);
  close(fd);
}

// Client A's command waits (polling the main loop) until client B's command
// releases it: both are served, the waiting one answers afterwards.
TEST_F(ControlServerTest, TwoClientsInterleaveWhileOneCommandWaits) {
  StartServer();
  bool released = false;
  server_->AddCommand("wait", [&](const json&) -> absl::StatusOr<json> {
    util::AioWaitWhileUnlocked([&] { return !released; });
    return json{{"waited", true}};
  });
  server_->AddCommand("release", [&](const json&) -> absl::StatusOr<json> {
    released = true;
    return json::object();
  });
  int a = Connect(), b = Connect();
  ReadMessage(a);
  ReadMessage(b);
  SendRaw(a, R"({"execute":"wait","id":"a"})" "\n");
  // B is served while A's command is still waiting inside the main loop.
  json b_answer = Execute(b, {{"execute", "release"}, {"id", "b"}});
  EXPECT_EQ(b_answer["id"], "b");
  json a_answer = ReadMessage(a);
  EXPECT_EQ(a_answer["id"], "a");
  EXPECT_EQ(a_answer["return"]["waited"], true);
  close(a);
  close(b);
}

TEST_F(ControlServerTest, DisconnectMidCommandChangesNothingElse) {
  StartServer();
  bool released = false, finished = false;
  server_->AddCommand("wait", [&](const json&) -> absl::StatusOr<json> {
    util::AioWaitWhileUnlocked([&] { return !released; });
    finished = true;
    return json::object();
  });
  int a = Connect(), b = Connect();
  ReadMessage(a);
  ReadMessage(b);
  main_->Poll(false);
  EXPECT_EQ(server_->client_count(), 2u);
  // The command starts, A hangs up, then B releases the wait. The waiting
  // command is still running in this very stack when A's hang-up is seen.
  server_->AddCommand("hangup-a", [&](const json&) -> absl::StatusOr<json> {
    close(a);
    return json::object();
  });
  server_->AddCommand("release", [&](const json&) -> absl::StatusOr<json> {
    released = true;
    return json::object();
  });
  // Everything is sent before the loop runs: this thread is the main loop,
  // and A's command will be waiting inside it.
  SendRaw(a, R"({"execute":"wait"})" "\n");
  SendRaw(b, R"({"execute":"hangup-a","id":1})" "\n" R"({"execute":"release","id":2})" "\n");
  while (!finished || server_->client_count() != 1) main_->Poll(true);
  EXPECT_EQ(ReadMessage(b)["id"], 1);
  EXPECT_EQ(ReadMessage(b)["id"], 2);
  EXPECT_EQ(Execute(b, {{"execute", "echo"}, {"id", 9}})["id"], 9);
  close(b);
}

// An asynchronous command answers after its handler has returned: the
// client's next request waits for that answer (order kept), another client
// is served meanwhile, and a reply for a client that left is dropped.
TEST_F(ControlServerTest, AsyncCommandsAnswerLaterInOrder) {
  StartServer();
  std::vector<ControlServer::Reply> held;
  server_->AddAsyncCommand("later", [&](const json& arguments, ControlServer::Reply reply) {
    if (arguments.value("now", false)) return std::move(reply)(json{{"now", true}});
    held.push_back(std::move(reply));
  });
  server_->AddCommand("release", [&](const json& arguments) -> absl::StatusOr<json> {
    for (auto& reply : held) {
      if (arguments.value("fail", false)) {
        std::move(reply)(absl::NotFoundError("no disk 'vdq'"));
      } else {
        std::move(reply)(json{{"released", true}});
      }
    }
    held.clear();
    return json::object();
  });
  int a = Connect(), b = Connect();
  ReadMessage(a);
  ReadMessage(b);
  SendRaw(a, R"({"execute":"later","id":1})" "\n" R"({"execute":"echo","id":2})" "\n");
  while (held.empty()) main_->Poll(true);
  EXPECT_EQ(Execute(b, {{"execute", "echo"}, {"id", "b"}})["id"], "b");
  EXPECT_EQ(Execute(b, {{"execute", "release"}})["return"], json::object());
  json first = ReadMessage(a);
  EXPECT_EQ(first["id"], 1);
  EXPECT_EQ(first["return"]["released"], true);
  EXPECT_EQ(ReadMessage(a)["id"], 2);
  // Answered inside the handler; an error class from the reply's status.
  EXPECT_EQ(Execute(a, {{"execute", "later"}, {"arguments", {{"now", true}}}})["return"]["now"],
            true);
  SendRaw(a, R"({"execute":"later","id":3})" "\n");
  while (held.empty()) main_->Poll(true);
  Execute(b, {{"execute", "release"}, {"arguments", {{"fail", true}}}});
  json failed = ReadMessage(a);
  EXPECT_EQ(failed["error"]["class"], kErrorDeviceNotFound);
  EXPECT_EQ(failed["id"], 3);
  // A leaves with its command pending; the late reply changes nothing else.
  SendRaw(a, R"({"execute":"later"})" "\n");
  while (held.empty()) main_->Poll(true);
  close(a);
  while (server_->client_count() != 1) main_->Poll(true);
  Execute(b, {{"execute", "release"}});
  EXPECT_EQ(Execute(b, {{"execute", "echo"}, {"id", 9}})["id"], 9);
  // AnswerRequest (the fuzzer's entry) waits for a late reply.
  server_->AddAsyncCommand("soon", [&](const json&, ControlServer::Reply reply) {
    main_->ScheduleOneshot([reply = std::move(reply)]() mutable {
      std::move(reply)(json{{"soon", 1}});
    });
  });
  EXPECT_EQ(server_->AnswerRequest(R"({"execute":"soon","id":4})")["return"]["soon"], 1);
  close(b);
}

TEST_F(ControlServerTest, SocketIsPrivateAndRemovedOnExit) {
  StartServer();
  struct stat info;
  ASSERT_EQ(stat(path_.c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  server_.reset();
  EXPECT_NE(access(path_.c_str(), F_OK), 0);
}

TEST_F(ControlServerTest, StaleSocketIsReplacedLiveOneAndOtherFilesAreRefused) {
  // Stale: a socket file nobody listens on.
  int stale = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strcpy(address.sun_path, path_.c_str());
  ASSERT_EQ(bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  close(stale);
  StartServer();

  auto second = ControlServer::Create(path_, *main_);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), ::testing::HasSubstr("already running"));

  std::string file = dir_ + "/regular";
  close(open(file.c_str(), O_CREAT | O_WRONLY, 0600));
  auto on_file = ControlServer::Create(file, *main_);
  ASSERT_FALSE(on_file.ok());
  EXPECT_THAT(std::string(on_file.status().message()), ::testing::HasSubstr("not a socket"));
  unlink(file.c_str());

  auto missing_dir = ControlServer::Create(dir_ + "/no/such/dir.sock", *main_);
  ASSERT_FALSE(missing_dir.ok());
  EXPECT_THAT(std::string(missing_dir.status().message()), ::testing::HasSubstr("no/such"));
}

// kvmini-ctl against a live server: success prints the answer and exits 0,
// an error exits 1 with the description on stderr.
TEST_F(ControlServerTest, KvminiCtlPrintsTheAnswerAndReportsErrors) {
  StartServer();
  auto run = [&](std::vector<std::string> args, std::string* out, const std::string& input = "") {
    std::string out_path = dir_ + "/out";
    std::string in_path = dir_ + "/in";
    {
      std::ofstream in(in_path);
      in << input;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, in_path.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_addopen(&actions, 2, out_path.c_str(), O_WRONLY | O_APPEND, 0600);
    std::vector<char*> argv = {const_cast<char*>(KVMINI_CTL_PATH)};
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    pid_t pid;
    EXPECT_EQ(posix_spawn(&pid, KVMINI_CTL_PATH, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) main_->Poll(false);
    char buffer[4096] = {};
    int fd = open(out_path.c_str(), O_RDONLY);
    ssize_t n = read(fd, buffer, sizeof(buffer) - 1);
    close(fd);
    unlink(out_path.c_str());
    unlink(in_path.c_str());
    *out = std::string(buffer, n > 0 ? n : 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  std::string out;
  EXPECT_EQ(run({"--socket", path_, "echo", "n=5", "name=vda", "flag=true"}, &out), 0);
  json answer = json::parse(out.substr(0, out.find('\n')));
  EXPECT_EQ(answer["return"]["arguments"]["n"], 5);
  EXPECT_EQ(answer["return"]["arguments"]["name"], "vda");
  EXPECT_EQ(answer["return"]["arguments"]["flag"], true);
  EXPECT_EQ(run({"--socket", path_, "fail", "kind=device"}, &out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("no device 'vdz'"));
  EXPECT_EQ(run({"--socket", dir_ + "/absent.sock", "echo"}, &out), 2);
  EXPECT_THAT(out, ::testing::HasSubstr("cannot connect"));
  EXPECT_EQ(run({"--socket", path_}, &out), 2);
  EXPECT_THAT(out, ::testing::HasSubstr("no COMMAND given"));

  // --batch: one answer line per command line, over one connection; the
  // status says whether any failed.
  EXPECT_EQ(run({"--socket", path_, "--batch"}, &out, "echo a=1\n\necho b=x\n"), 0);
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << out;
  EXPECT_EQ(json::parse(lines[0])["return"]["arguments"]["a"], 1);
  EXPECT_EQ(json::parse(lines[1])["return"]["arguments"]["b"], "x");
  EXPECT_EQ(run({"--socket", path_, "--batch"}, &out, "fail kind=argument\necho notkv\necho\n"),
            1);
  lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_EQ(json::parse(lines[0])["error"]["class"], kErrorInvalidParameter);
  EXPECT_THAT(lines[1], ::testing::HasSubstr("'notkv' is not key=value"));
  EXPECT_TRUE(json::parse(lines[2]).contains("return"));
  EXPECT_EQ(run({"--socket", path_, "--batch", "echo"}, &out), 2);
}

}  // namespace
}  // namespace kvmini::vmm

// The main thread's filter lets it do its run-time work: serve a control
// socket client (accept, read, send, close), run a command that moves a
// disk to a filtered IOThread and back (the dataplane stop/start pattern:
// oneshot BHs, drain, SetAioContext) with I/O on both sides, read a signal
// from a signalfd, then shut everything down (socket file removed, IOThread
// joined, engines and loops destroyed) and exit. All inside a death-test
// child, the only place the test binary's main thread may be filtered.
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/block/block_test_support.h"
#include "tests/unit/vmm/sandbox/sandbox_test_support.h"
#include "util/aio_wait.h"
#include "util/iothread.h"
#include "vmm/control/control_server.h"
#include "vmm/control/unix_socket.h"
#include "vmm/sandbox/block_engines.h"
#include "vmm/sandbox/seccomp.h"
#include "vmm/sandbox/syscall_lists.h"

namespace kvmini::vmm::sandbox {
namespace {

using nlohmann::json;

constexpr size_t kBlock = 4096;

// In the child, a failed step ends it with status 3 and says which.
void Require(bool condition, const std::string& what) {
  if (condition) return;
  std::fprintf(stderr, "step failed: %s\n", what.c_str());
  _exit(3);
}

// A blocking client in its own (unfiltered) thread: the main filter does
// not allow socket() or connect(), which only clients make.
class Client {
 public:
  explicit Client(std::string path) : path_(std::move(path)) {}

  // Returns the answers to `requests`, after the greeting.
  std::vector<json> Run(const std::vector<json>& requests) {
    std::vector<json> answers;
    absl::StatusOr<int> fd = ConnectToUnixSocket(path_);
    if (!fd.ok()) return answers;
    ReadLine(*fd);  // greeting
    for (const json& request : requests) {
      std::string line = request.dump() + "\n";
      if (send(*fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
        break;
      }
      std::string answer = ReadLine(*fd);
      if (answer.empty()) break;
      answers.push_back(json::parse(answer));
    }
    close(*fd);
    return answers;
  }

 private:
  std::string ReadLine(int fd) {
    while (pending_.find('\n') == std::string::npos) {
      char buffer[4096];
      ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n <= 0) return "";
      pending_.append(buffer, static_cast<size_t>(n));
    }
    size_t end = pending_.find('\n');
    std::string line = pending_.substr(0, end);
    pending_.erase(0, end + 1);
    return line;
  }

  const std::string path_;
  std::string pending_;
};

// Runs one request on `backend` in its current context and waits for it.
int RunInContext(block::BlockBackend& backend, bool write, uint64_t offset, uint8_t* data) {
  std::atomic<int> result{1};
  util::AioWaitBhOneshot(backend.context(), [&] {
    auto done = [&result](int status) {
      result.store(status);
      util::AioWaitKick();
    };
    if (write) {
      backend.Write(offset, {iovec{data, kBlock}}, done);
    } else {
      backend.Read(offset, {iovec{data, kBlock}}, done);
    }
  });
  util::AioWaitWhileUnlocked([&] { return result.load() == 1; });
  return result.load();
}

void RunSandboxedMain(const std::string& socket_path, const std::string& image_path) {
  // As kvmini does: signals for the main loop are blocked before any
  // thread exists and read from a signalfd.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  auto main_context = util::AioContext::CreateMain();
  Require(main_context.ok(), "main loop");
  util::AioContext& main = **main_context;
  auto iothread = testing::StartFilteredIoThread("sandbox-io");
  Require(iothread.ok(), iothread.status().ToString());

  block::BlockOptions options;
  auto backend = block::BlockBackend::Open(image_path, options, main);
  Require(backend.ok(), "open the image");
  util::AioContext* contexts[] = {&main, &(*iothread)->context()};
  block::AioEngine engines[] = {block::AioEngine::kAuto, block::AioEngine::kThreads};
  absl::Status started = StartBlockEngines(contexts, engines);
  Require(started.ok(), started.ToString());

  auto server = ControlServer::Create(socket_path, main);
  Require(server.ok(), "control socket");
  int moves = 0;
  (*server)->AddCommand("echo", [](const json& arguments) -> absl::StatusOr<json> {
    return arguments;
  });
  // A dataplane start and stop around some I/O, as device-set-iothread or
  // dataplane-start/stop do it.
  (*server)->AddCommand("move", [&](const json&) -> absl::StatusOr<json> {
    std::vector<uint8_t> data(kBlock, 0xa5), check(kBlock, 0);
    (*backend)->Drain();
    (*backend)->SetAioContext((*iothread)->context());
    int written = RunInContext(**backend, true, 8 * kBlock, data.data());
    int read = RunInContext(**backend, false, 8 * kBlock, check.data());
    (*backend)->Drain();
    (*backend)->SetAioContext(main);
    ++moves;
    return json{{"written", written}, {"read", read}, {"same", data == check}};
  });

  int signal_fd = signalfd(-1, &usr1, SFD_NONBLOCK | SFD_CLOEXEC);
  Require(signal_fd >= 0, "signalfd");
  bool signalled = false;
  Require(main.SetFdHandler(signal_fd, [&] {
                signalfd_siginfo info;
                while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
                  signalled = info.ssi_signo == SIGUSR1;
                }
              })
              .ok(),
          "signalfd handler");

  int go = eventfd(0, EFD_CLOEXEC);
  std::atomic<bool> client_done{false};
  std::vector<json> answers;
  std::thread client_thread([&] {
    eventfd_t ignored;
    eventfd_read(go, &ignored);
    answers = Client(socket_path).Run({{{"execute", "echo"}, {"arguments", {{"x", 1}}}},
                                       {{"execute", "move"}},
                                       {{"execute", "move"}},
                                       {{"execute", "nope"}}});
    client_done.store(true);
    util::AioWaitKick();
  });

  // Set-up is over.
  absl::Status filtered = InstallSeccompFilter(ThreadKind::kMain);
  Require(filtered.ok(), filtered.ToString());
  eventfd_write(go, 1);
  util::AioWaitWhileUnlocked([&] { return !client_done.load(); });
  client_thread.join();
  Require(answers.size() == 4, "four answers");
  Require(answers[0]["return"]["x"] == 1, "echo: " + answers[0].dump());
  for (int i : {1, 2}) {
    Require(answers[i]["return"] == json({{"written", 0}, {"read", 0}, {"same", true}}),
            "move: " + answers[i].dump());
  }
  Require(answers[3]["error"]["class"] == kErrorCommandNotFound, "nope: " + answers[3].dump());
  Require(moves == 2, "two moves");

  // I/O in the main loop itself (a stopped dataplane).
  std::vector<uint8_t> data(kBlock, 0);
  Require(RunInContext(**backend, false, 8 * kBlock, data.data()) >= 0, "read in main");
  Require(data[0] == 0xa5, "read back what the IOThread wrote");

  pthread_kill(pthread_self(), SIGUSR1);
  Require(block::testing::PollUntil(main, [&] { return signalled; }), "SIGUSR1 via signalfd");

  // Shutdown, in kvmini's order.
  main.RemoveFdHandler(signal_fd);
  close(signal_fd);
  close(go);
  server->reset();
  // (Asked through unlink: stat is not on the main list.)
  Require(unlink(socket_path.c_str()) != 0 && errno == ENOENT, "socket file removed");
  (*backend)->Drain();
  backend->reset();
  (*iothread)->Stop();
  iothread->reset();
  main_context->reset();
  std::fprintf(stderr, "main filter: all done\n");
  std::fflush(stderr);
  // exit() runs atexit handlers and static destructors under the filter,
  // as kvmini's own exit does. Sanitizer builds skip it: LeakSanitizer's
  // exit-time check needs ptrace and a helper thread (see README.md).
  if (IsSanitizerBuild()) _exit(0);
  std::exit(0);
}

// A threadsafe death test runs the test body again in a fresh child, which
// ends inside EXPECT_EXIT without running destructors: a scratch directory
// made there would be left behind. The child uses the parent's instead,
// named through the environment it inherits.
constexpr char kParentScratchVariable[] = "KVMINI_SECCOMP_MAIN_TEST_SCRATCH";

TEST(SeccompMainTest, ControlSocketDiskMovesSignalsAndShutdownUnderTheMainFilter) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::optional<block::testing::ScratchDir> scratch;
  std::string directory;
  if (const char* inherited = std::getenv(kParentScratchVariable); inherited != nullptr) {
    directory = inherited;
  } else {
    scratch.emplace(block::testing::MemoryDirectory());
    directory = scratch->path();
    block::testing::MakeImage(scratch->File("main.img"), 1 << 20, 5);
    ASSERT_EQ(setenv(kParentScratchVariable, directory.c_str(), 1), 0);
  }
  EXPECT_EXIT(RunSandboxedMain(directory + "/control.sock", directory + "/main.img"),
              ::testing::ExitedWithCode(0), "main filter: all done");
  unsetenv(kParentScratchVariable);
}

}  // namespace
}  // namespace kvmini::vmm::sandbox

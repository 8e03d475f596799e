#include "tests/fuzz/common/fuzz_main_loop.h"

#include <cstdlib>

#include "util/log.h"

namespace kvmini::fuzz {
namespace {
util::AioContext* CreateMainLoop() {
  const char* log = std::getenv("KVMINI_FUZZ_LOG");
  if (log == nullptr || log[0] != '1') util::SetMinimumLogLevel(util::LogLevel::kError);
  auto main = util::AioContext::CreateMain();
  if (!main.ok()) std::abort();
  return main->release();
}
}  // namespace

util::AioContext& FuzzMainLoop() {
  static util::AioContext* main = CreateMainLoop();
  return *main;
}

void RunUntilIdle() {
  util::AioContext& main = FuzzMainLoop();
  // Each pass may start more work (a completion publishes, a publish
  // kicks); a device that never settles is a bug the bound turns into a
  // finding instead of a hang.
  for (int pass = 0; pass < 10000; ++pass) {
    if (!main.Poll(/*blocking=*/false)) return;
  }
  std::abort();
}

}  // namespace kvmini::fuzz

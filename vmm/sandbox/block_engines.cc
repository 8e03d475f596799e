#include "vmm/sandbox/block_engines.h"

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "block/io_engine.h"

namespace kvmini::vmm::sandbox {

absl::Status StartBlockEngines(std::span<util::AioContext* const> contexts,
                               std::span<const block::AioEngine> engines) {
  for (util::AioContext* context : contexts) {
    for (block::AioEngine engine : engines) {
      absl::StatusOr<block::IoEngine*> started = block::EngineForContext(*context, engine);
      // What BlockBackend::SetAioContext falls back to when the engine a
      // disk asked for cannot start there.
      if (!started.ok()) started = block::EngineForContext(*context, block::AioEngine::kThreads);
      if (!started.ok()) {
        return absl::Status(started.status().code(),
                            absl::StrCat("starting the block I/O engines of event loop '",
                                         context->name(), "': ", started.status().message()));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm::sandbox

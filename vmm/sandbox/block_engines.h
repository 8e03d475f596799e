// Starting block I/O engines before the main thread's filter is on.
//
// A disk's engine for an event loop is created when the disk first moves
// there (BlockBackend::SetAioContext, at dataplane start), in the main
// thread: io_uring_setup, or the thread pool's thread creation and naming
// (through /proc). None of that is on the main thread's run-time list, so
// the machine starts every engine a disk may need in every loop it may
// move to while it is still setting up.
#pragma once

#include <span>

#include "absl/status/status.h"
#include "block/block_backend.h"
#include "util/aio_context.h"

namespace kvmini::vmm::sandbox {

// For each context and each engine the disks ask for: the engine a move
// there would use, including SetAioContext's fall-back to the thread pool
// when io_uring cannot be set up. From the main thread.
absl::Status StartBlockEngines(std::span<util::AioContext* const> contexts,
                               std::span<const block::AioEngine> engines);

}  // namespace kvmini::vmm::sandbox

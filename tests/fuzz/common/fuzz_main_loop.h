// What every fuzz target over devices needs once per process: the main
// AioContext (devices and completions run in it) and quiet logs (a fresh
// device per input would otherwise log its first guest errors every time;
// KVMINI_FUZZ_LOG=1 keeps them).
#pragma once

#include "util/aio_context.h"

namespace kvmini::fuzz {

// Creates the main context on first use, in the calling (fuzzing) thread.
util::AioContext& FuzzMainLoop();

// Runs the main loop until nothing is left to do (bounded).
void RunUntilIdle();

}  // namespace kvmini::fuzz

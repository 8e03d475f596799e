// The SCSI emulation's fuzzing entry point: the libFuzzer target in
// tests/fuzz/ calls it from LLVMFuzzerTestOneInput, and unit tests run it
// over fixed inputs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvmini::hw::scsi {

// Builds a one-disk ScsiTarget over a MemoryBlockBackend (block size, read
// only, unmap, serial and write cache chosen by the first input byte), then
// reads the rest of the input as a sequence of requests: LUN, CDB, data-out
// bytes, data-in and sense buffer sizes, and task management to mix in
// (aborts, resets, injected I/O errors). Checks what every transport relies
// on, aborting the process on a violation: each completion runs exactly
// once, data-in and sense never exceed their buffers (guard bytes stay
// intact), residuals add up, overruns transfer nothing, CHECK CONDITION
// always carries fixed-format sense, and every task-management callback runs
// once. Returns 0, as libFuzzer expects.
int ScsiFuzzOneInput(const uint8_t* data, size_t size);

}  // namespace kvmini::hw::scsi

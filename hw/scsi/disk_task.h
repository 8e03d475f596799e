// ScsiDisk::Task: the state of one command that waits for the block
// backend. Private to the disk's .cc files.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "hw/scsi/scsi_disk.h"

namespace kvmini::hw::scsi {

// The `done` of one AbortTask/AbortAllTasks/Reset, shared by the tasks it
// aborted; it runs when the last of them has completed.
struct ScsiDisk::AbortWaiter {
  size_t remaining;
  absl::AnyInvocable<void() &&> done;
};

struct ScsiDisk::Task {
  Task(ScsiRequest request_in, const RequestBuffers& buffers_in, ScsiCompletion done_in,
       const ParsedCdb& parsed)
      : request(std::move(request_in)),
        buffers(buffers_in),
        done(std::move(done_in)),
        direction(parsed.direction),
        transfer_bytes(parsed.transfer_bytes) {}

  ScsiRequest request;
  RequestBuffers buffers;
  ScsiCompletion done;
  DataDirection direction;
  uint64_t transfer_bytes;
  // Picks WRITE ERROR over UNRECOVERED READ ERROR when the backend fails.
  bool writing = false;
  bool aborted = false;
  // Backend operations started and not completed, plus one while a step
  // runs, so an operation completing early cannot finish the task under it.
  int pending = 0;
  // errno of the first backend operation that failed.
  int error = 0;
  // A step's own verdict, e.g. MISCOMPARE.
  std::optional<SenseCode> failure;
  // What to do once `pending` drops to 0 without error; empty: done.
  absl::AnyInvocable<void(Task&)> next_step;
  // Device-side buffer (VERIFY reads, the WRITE SAME pattern).
  std::vector<uint8_t> bounce;
  // Progress of a WRITE SAME written in chunks.
  uint64_t offset = 0;
  uint64_t remaining = 0;
  std::vector<std::shared_ptr<AbortWaiter>> waiters;
  Task* previous = nullptr;
  Task* next = nullptr;
};

template <typename Step>
void ScsiDisk::Launch(Task& task, Step&& first_step) {
  ++task.pending;
  first_step(task);
  if (--task.pending == 0) Advance(task);
}

}  // namespace kvmini::hw::scsi

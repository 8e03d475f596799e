// A disk served by an IOThread, stopped and restarted with commands in
// flight the way a dataplane does it: stop submitting in the IOThread
// (sometimes aborting everything), wait in the main loop for in_flight() to
// reach 0, drain the backend, move it to the main loop, check, move it
// back. Every command must complete exactly once, with GOOD or (when
// aborted) ABORTED, and reads must see what the last write left.
#include <atomic>
#include <memory>
#include <vector>

#include "absl/time/clock.h"
#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "hw/scsi/scsi_disk.h"
#include "scsi_cdb_builders.h"
#include "tests/unit/block/block_test_support.h"
#include "util/aio_wait.h"
#include "util/iothread.h"

namespace kvmini::hw::scsi::testing {
namespace {

constexpr uint32_t kBlock = 512;
constexpr uint32_t kSlotBlocks = 16;
constexpr int kSlots = 16;
constexpr int kRounds = 25;

// One slot of the disk with one command at a time in flight. Touched by the
// IOThread while it runs and by the main thread after a stop.
struct Slot {
  int index = 0;
  std::vector<uint8_t> buffer = std::vector<uint8_t>(kSlotBlocks * kBlock);
  // The contents the slot must have, and an alternative while the outcome
  // of an aborted write is unknown.
  uint8_t expected = 0;
  int ambiguous_with = -1;
  uint8_t next_fill = 1;
  bool writing = false;
  int submitted = 0;
  int completed = 0;
  int aborted = 0;  // in the current round
  int bad = 0;
};

class Driver {
 public:
  explicit Driver(ScsiDisk& disk) : disk_(disk) {}

  // IOThread (or main loop once stopped): submits the next command of `slot`.
  void Submit(Slot& slot) {
    ScsiRequest request;
    slot.writing = (slot.submitted % 3) != 2;
    const uint32_t lba = slot.index * kSlotBlocks;
    if (slot.writing) {
      std::fill(slot.buffer.begin(), slot.buffer.end(), slot.next_fill);
      request.SetCdb(Cdb10(opcode::kWrite10, 0, lba, kSlotBlocks));
      request.data_out = {{slot.buffer.data(), slot.buffer.size()}};
    } else {
      request.SetCdb(Cdb10(opcode::kRead10, 0, lba, kSlotBlocks));
      request.data_in = {{slot.buffer.data(), slot.buffer.size()}};
    }
    ++slot.submitted;
    disk_.Submit(std::move(request),
                 [this, &slot](const ScsiResult& result) { Complete(slot, result); });
  }

  std::atomic<bool> stopping{false};

 private:
  void Complete(Slot& slot, const ScsiResult& result) {
    ++slot.completed;
    const uint8_t written = slot.next_fill;
    if (result.response == ScsiResult::Response::kAborted) {
      ++slot.aborted;
      if (slot.writing) slot.ambiguous_with = written;  // may or may not have landed
    } else if (result.status != status::kGood) {
      ++slot.bad;
    } else if (slot.writing) {
      slot.expected = written;
      slot.ambiguous_with = -1;
    } else {
      const uint8_t seen = slot.buffer[0];
      const bool uniform = std::all_of(slot.buffer.begin(), slot.buffer.end(),
                                       [seen](uint8_t byte) { return byte == seen; });
      if (!uniform || (seen != slot.expected && seen != slot.ambiguous_with)) ++slot.bad;
      slot.expected = seen;
      slot.ambiguous_with = -1;
    }
    if (slot.writing) ++slot.next_fill;
    if (!stopping.load(std::memory_order_acquire)) Submit(slot);
  }

  ScsiDisk& disk_;
};

TEST(ScsiDiskIoThreadTest, StopAndRestartWithCommandsInFlight) {
  auto main = util::AioContext::CreateMain();
  ASSERT_TRUE(main.ok()) << main.status();
  auto iothread = util::IOThread::Create("scsi-test-io");
  ASSERT_TRUE(iothread.ok()) << iothread.status();
  block::testing::ScratchDir scratch(block::testing::MemoryDirectory());
  const std::string image = scratch.File("disk.img");
  std::vector<uint8_t> zeroes(kSlots * kSlotBlocks * kBlock, 0);
  {
    FILE* file = fopen(image.c_str(), "wb");
    ASSERT_NE(file, nullptr);
    ASSERT_EQ(fwrite(zeroes.data(), 1, zeroes.size(), file), zeroes.size());
    fclose(file);
  }
  auto backend = block::BlockBackend::Open(image, {}, **main);
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto disk = ScsiDisk::Create(**backend, {});
  ASSERT_TRUE(disk.ok()) << disk.status();

  std::vector<Slot> slots(kSlots);
  for (int i = 0; i < kSlots; ++i) slots[i].index = i;
  int abort_answers = 0;

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(::testing::Message() << "round " << round);
    Driver driver(**disk);
    for (Slot& slot : slots) slot.aborted = 0;  // counted per round
    (*backend)->SetAioContext((*iothread)->context());
    util::AioWaitBhOneshot((*iothread)->context(), [&] {
      for (Slot& slot : slots) driver.Submit(slot);
    });
    // Let some commands complete (how many varies by round), then stop
    // from the IOThread.
    util::AioWaitBhOneshot((*iothread)->context(), [] {});
    absl::SleepFor(absl::Microseconds(300 * (round % 4)));
    const bool abort = round % 3 == 0;
    util::AioWaitBhOneshot((*iothread)->context(), [&] {
      driver.stopping.store(true, std::memory_order_release);
      if (abort) (*disk)->AbortAllTasks([&abort_answers] { ++abort_answers; });
    });
    util::AioWaitWhileUnlocked([&] { return (*disk)->in_flight() > 0; });
    (*backend)->Drain();
    (*backend)->SetAioContext(**main);

    for (const Slot& slot : slots) {
      EXPECT_EQ(slot.completed, slot.submitted) << "slot " << slot.index;
      EXPECT_EQ(slot.bad, 0) << "slot " << slot.index;
      if (!abort) {
        EXPECT_EQ(slot.aborted, 0) << "slot " << slot.index;
      }
    }
    // Main loop: one more read of each slot, checked the same way.
    driver.stopping.store(true);
    for (Slot& slot : slots) driver.Submit(slot);
    util::AioWaitWhileUnlocked([&] { return (*disk)->in_flight() > 0; });
    for (const Slot& slot : slots) {
      EXPECT_EQ(slot.completed, slot.submitted);
      EXPECT_EQ(slot.bad, 0) << "slot " << slot.index;
    }
    if (HasFailure()) break;
  }
  EXPECT_EQ(abort_answers, (kRounds + 2) / 3);
  (*iothread)->Stop();
}

}  // namespace
}  // namespace kvmini::hw::scsi::testing

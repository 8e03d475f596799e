// virtio-scsi with its queues on an IOThread: task management with
// commands in flight (held back in the memory backend, so "in flight" is
// deterministic), dataplane stop/start and reset with commands and TMFs in
// flight, and a shadow-model data test: a vCPU-like driver thread keeps 64
// commands in flight on two request queues over a real image while the
// main thread stops, starts and moves the dataplane. Runs under TSan too
// (label concurrency).
#include <atomic>
#include <map>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/dataplane_churn.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/scsi_test_support.h"
#include "tests/unit/hw/virtio/with_iothreads.h"

namespace kvmini::test {
namespace {

namespace mmio = hw::virtio::mmio;
namespace sense = hw::scsi::sense;
namespace scsi_status = hw::scsi::status;
namespace response = vs::response;
namespace tmf = vs::tmf;

class ScsiDataplaneTest : public WithIOThreads<ScsiDeviceTest> {
 protected:
  // A device on the IOThread over a memory backend that holds completions;
  // posts `commands` (kicked) and waits until the backend holds them all.
  // Returns their heads, in order.
  std::vector<uint16_t> StartWithHeldCommands(const std::vector<ScsiCommand>& commands) {
    ScsiTestbedOptions options;
    options.iothread = &iothread(0);
    options.backend = TestBackend::kMemory;
    StartDevice(options, 1, 64);
    MemoryBlockBackend& backend = *testbed_->memory_backend();
    backend.HoldCompletions(true);
    std::vector<uint16_t> heads;
    for (const ScsiCommand& command : commands) {
      absl::StatusOr<uint16_t> head = scsi().Post(0, command);
      EXPECT_TRUE(head.ok());
      heads.push_back(head.ok() ? *head : 0);
    }
    scsi().Kick(0);
    EXPECT_TRUE(driver().WaitUntil([&] { return backend.held() == commands.size(); },
                                   absl::Seconds(10)));
    backend.HoldCompletions(false);  // later ones complete normally
    return heads;
  }
  MemoryBlockBackend& backend() { return *testbed_->memory_backend(); }

  // Collects request-queue answers until `count` arrived; by head.
  std::map<uint16_t, ScsiResponse> CollectCommands(size_t count) {
    std::map<uint16_t, ScsiResponse> answers;
    driver().WaitUntil(
        [&] {
          for (auto& [head, answer] : scsi().Collect(0)) answers[head] = std::move(answer);
          return answers.size() >= count;
        },
        absl::Seconds(10));
    return answers;
  }
  // Whether the control queue answers within `wait` (it should not, while
  // the commands a TMF affects are held).
  bool ControlAnsweredWithin(absl::Duration wait) {
    const absl::Time deadline = absl::Now() + wait;
    while (absl::Now() < deadline) {
      if (driver().queue(vs::kControlQueue).used_index() != 0) return true;
      main_->Poll(/*blocking=*/false);
      absl::SleepFor(absl::Milliseconds(1));
    }
    return false;
  }

};

std::vector<ScsiCommand> Reads(int count) {
  std::vector<ScsiCommand> commands;
  for (int i = 0; i < count; ++i) {
    commands.push_back({.tag = uint64_t(100 + i),
                        .cdb = Read10(uint32_t(i) * 8, 8),
                        .data_in_length = 4096});
  }
  return commands;
}

TEST_F(ScsiDataplaneTest, DriverOkStartsTheDataplaneOnTheIOThread) {
  ScsiTestbedOptions options;
  options.iothread = &iothread(0);
  auto testbed = ScsiTestbed::Create(options);
  ASSERT_TRUE(testbed.ok());
  testbed_ = std::move(*testbed);
  EXPECT_FALSE(Running()) << "nothing runs before DRIVER_OK";
  ASSERT_TRUE(scsi().Start(kLinuxScsiFeatures, 1, 64).ok());
  EXPECT_TRUE(Running());
  EXPECT_EQ(&device().backend().context(), &iothread(0));
  ScsiResponse write = Run({.cdb = Write10(0, 8), .data_out = ScsiPattern(4096, 5)});
  EXPECT_EQ(write.status, scsi_status::kGood);
  EXPECT_EQ(Tmf(tmf::kQueryTaskSet), response::kFunctionComplete);
}

// ABORT TASK is answered only once the command it aborts has completed,
// and that command's answer is visible to the driver first.
TEST_F(ScsiDataplaneTest, AbortTaskIsAnsweredAfterTheAbortedCommand) {
  const std::vector<uint16_t> heads = StartWithHeldCommands(Reads(4));
  ASSERT_FALSE(HasFailure());
  // QUERY TASK sees a held command; it does not wait for anything.
  EXPECT_EQ(Tmf(tmf::kQueryTask, Lun(0, 0), 102), response::kFunctionSucceeded);
  EXPECT_EQ(Tmf(tmf::kQueryTask, Lun(0, 0), 999), response::kFunctionComplete);
  EXPECT_EQ(Tmf(tmf::kQueryTaskSet), response::kFunctionSucceeded);

  absl::StatusOr<uint16_t> abort = scsi().PostTaskManagement(tmf::kAbortTask, Lun(0, 0), 102);
  ASSERT_TRUE(abort.ok());
  const uint16_t control_used = driver().queue(vs::kControlQueue).used_index();
  driver().Kick(vs::kControlQueue);
  absl::SleepFor(absl::Milliseconds(30));
  EXPECT_EQ(driver().queue(vs::kControlQueue).used_index(), control_used)
      << "answered while the command it aborts is still in flight";

  backend().ReleaseHeld();
  absl::StatusOr<ControlResponse> answer = scsi().WaitControl(*abort, absl::Seconds(10));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->response, response::kFunctionComplete);
  // Read right after the TMF answer: the aborted command is already there.
  std::map<uint16_t, ScsiResponse> answers;
  for (auto& [head, command] : scsi().Collect(0)) answers[head] = std::move(command);
  ASSERT_TRUE(answers.contains(heads[2])) << "TMF answered before the aborted command";
  EXPECT_EQ(answers[heads[2]].response, response::kAborted);
  EXPECT_EQ(answers[heads[2]].residual, 4096u);
  for (auto& [head, command] : CollectCommands(4 - answers.size())) answers[head] = command;
  for (int i : {0, 1, 3}) {
    EXPECT_EQ(answers[heads[i]].response, response::kOk) << i;
    EXPECT_EQ(answers[heads[i]].status, scsi_status::kGood) << i;
  }
  EXPECT_EQ(device().stats().errors, 1u);
  EXPECT_EQ(device().stats().in_flight, 0u);
}

// The driver made a command available but its kick has not been served
// (here: never sent) when the TMF arrives: the TMF still covers it.
TEST_F(ScsiDataplaneTest, AbortTaskCoversACommandWhoseKickIsPending) {
  StartWithHeldCommands({});
  ASSERT_FALSE(HasFailure());
  // Every kick so far served: the next command is only in the ring.
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood);
  backend().HoldCompletions(true);
  absl::StatusOr<uint16_t> read =
      scsi().Post(0, {.tag = 55, .cdb = Read10(0, 8), .data_in_length = 4096});
  ASSERT_TRUE(read.ok());
  absl::StatusOr<uint16_t> abort = scsi().PostTaskManagement(tmf::kAbortTask, Lun(0, 0), 55);
  ASSERT_TRUE(abort.ok());
  driver().Kick(vs::kControlQueue);
  ASSERT_TRUE(driver().WaitUntil([&] { return backend().held() == 1; }, absl::Seconds(10)))
      << "the TMF did not take the command first";
  EXPECT_FALSE(ControlAnsweredWithin(absl::Milliseconds(20)));
  backend().ReleaseHeld();
  absl::StatusOr<ControlResponse> answer = scsi().WaitControl(*abort, absl::Seconds(10));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->response, response::kFunctionComplete);
  std::vector<std::pair<uint16_t, ScsiResponse>> answers = scsi().Collect(0);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].first, *read);
  EXPECT_EQ(answers[0].second.response, response::kAborted);
}

class ScsiTaskSetTest : public ScsiDataplaneTest,
                        public ::testing::WithParamInterface<uint32_t> {};

TEST_P(ScsiTaskSetTest, IsAnsweredAfterEveryCommandIsAborted) {
  const std::vector<uint16_t> heads = StartWithHeldCommands(Reads(8));
  ASSERT_FALSE(HasFailure());
  absl::StatusOr<uint16_t> request = scsi().PostTaskManagement(GetParam(), Lun(0, 0), 0);
  ASSERT_TRUE(request.ok());
  driver().Kick(vs::kControlQueue);
  EXPECT_FALSE(ControlAnsweredWithin(absl::Milliseconds(30)));
  backend().ReleaseHeld();
  absl::StatusOr<ControlResponse> answer = scsi().WaitControl(*request, absl::Seconds(10));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->response, response::kFunctionComplete);
  std::map<uint16_t, ScsiResponse> answers;
  for (auto& [head, command] : scsi().Collect(0)) answers[head] = std::move(command);
  EXPECT_EQ(answers.size(), 8u) << "every aborted command is visible with the TMF answer";
  for (uint16_t head : heads) EXPECT_EQ(answers[head].response, response::kAborted);
  EXPECT_EQ(device().stats().task_management, 1u);

  ScsiResponse next = Run({.cdb = TestUnitReady()});
  EXPECT_EQ(next.response, response::kOk);
  if (GetParam() == tmf::kLogicalUnitReset) {
    EXPECT_EQ(next.status, scsi_status::kCheckCondition);
    EXPECT_EQ(SenseOf(next), sense::kPowerOnReset);
  } else {
    EXPECT_EQ(next.status, scsi_status::kGood);
  }
}

INSTANTIATE_TEST_SUITE_P(Subtypes, ScsiTaskSetTest,
                         ::testing::Values(tmf::kAbortTaskSet, tmf::kClearTaskSet,
                                           tmf::kLogicalUnitReset, tmf::kITNexusReset),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           switch (info.param) {
                             case tmf::kAbortTaskSet:
                               return std::string("AbortTaskSet");
                             case tmf::kClearTaskSet:
                               return std::string("ClearTaskSet");
                             case tmf::kLogicalUnitReset:
                               return std::string("LogicalUnitReset");
                             default:
                               return std::string("ITNexusReset");
                           }
                         });

TEST_F(ScsiDataplaneTest, StopWaitsForCommandsInFlightThenTheMainLoopServes) {
  StartWithHeldCommands(Reads(6));
  ASSERT_FALSE(HasFailure());
  main_->AddTimer(absl::Now() + absl::Milliseconds(20), [&] { backend().ReleaseHeld(); });
  transport().StopDataplaneAndWait();
  EXPECT_EQ(driver().queue(vs::kFirstRequestQueue).used_index(), 6)
      << "every command in flight answered before the stop returned";
  EXPECT_FALSE(Running());
  EXPECT_EQ(&device().backend().context(), main_.get());
  EXPECT_EQ(CollectCommands(6).size(), 6u);
  EXPECT_EQ(Run({.cdb = Read10(0, 1), .data_in_length = 512}).status, scsi_status::kGood);
  EXPECT_EQ(Tmf(tmf::kQueryTaskSet), response::kFunctionComplete);
  transport().StartDataplaneAndWait();
  EXPECT_TRUE(Running());
  EXPECT_EQ(&device().backend().context(), &iothread(0));
  EXPECT_EQ(Run({.cdb = Read10(0, 1), .data_in_length = 512}).status, scsi_status::kGood);
}

TEST_F(ScsiDataplaneTest, MoveToAnotherIOThreadWithCommandsInFlight) {
  StartWithHeldCommands(Reads(6));
  ASSERT_FALSE(HasFailure());
  main_->AddTimer(absl::Now() + absl::Milliseconds(20), [&] { backend().ReleaseHeld(); });
  transport().MoveDataplaneAndWait(&iothread(1));
  EXPECT_EQ(driver().queue(vs::kFirstRequestQueue).used_index(), 6);
  EXPECT_TRUE(Running());
  EXPECT_EQ(&device().backend().context(), &iothread(1));
  EXPECT_EQ(CollectCommands(6).size(), 6u);
  EXPECT_EQ(Run({.cdb = Read10(0, 1), .data_in_length = 512}).status, scsi_status::kGood);
}

// A reset while a TMF waits for held commands: the reset returns once both
// the commands and the TMF are answered, and nothing is written afterwards.
TEST_F(ScsiDataplaneTest, ResetWithATaskManagementFunctionPending) {
  StartWithHeldCommands(Reads(4));
  ASSERT_FALSE(HasFailure());
  ASSERT_TRUE(scsi().PostTaskManagement(tmf::kAbortTaskSet, Lun(0, 0), 0).ok());
  driver().Kick(vs::kControlQueue);
  EXPECT_FALSE(ControlAnsweredWithin(absl::Milliseconds(20)));
  main_->AddTimer(absl::Now() + absl::Milliseconds(20), [&] { backend().ReleaseHeld(); });
  driver().Write32(mmio::kStatus, 0);
  EXPECT_EQ(driver().queue(vs::kFirstRequestQueue).used_index(), 4);
  EXPECT_EQ(driver().queue(vs::kControlQueue).used_index(), 1);
  EXPECT_FALSE(Running());
  EXPECT_EQ(&backend().context(), main_.get()) << "a reset device's backend is home";
  ASSERT_TRUE(scsi().Start(kLinuxScsiFeatures, 1, 64).ok());
  EXPECT_TRUE(Running());
  EXPECT_EQ(Run({.cdb = Read10(0, 1), .data_in_length = 512}).response, response::kOk);
}

// A vCPU-like driver thread keeping `depth` commands in flight on
// `queues` request queues against a shadow model of the disk. Commands in
// flight never overlap (SCSI does not order them), so the model can be
// updated when a write is posted and checked when a read completes.
class ScsiLoad {
 public:
  static constexpr uint32_t kMaxBlocks = 16;

  ScsiLoad(ScsiDriver& scsi, uint16_t queues, int depth, int total, uint64_t image_bytes)
      : scsi_(scsi), queues_(queues), depth_(depth), total_(total), model_(image_bytes, 0) {}

  void Run() {
    std::mt19937 random(42);
    for (int i = 0; i < depth_; ++i) Submit(static_cast<uint16_t>(i % queues_), random);
    for (uint16_t q = 0; q < queues_; ++q) scsi_.Kick(q);
    const absl::Time deadline = absl::Now() + absl::Seconds(240);
    while (completed_ < total_ && absl::Now() < deadline) {
      scsi_.driver().WaitForInterrupt(absl::Milliseconds(20));
      for (uint16_t q = 0; q < queues_; ++q) {
        // Match the whole batch before posting again: a new post may reuse
        // a head that appears later in the same batch.
        int finished = 0;
        for (auto& [head, answer] : scsi_.Collect(q)) {
          auto it = in_flight_.find({q, head});
          if (it == in_flight_.end()) {
            ++unexpected_;
            continue;
          }
          Check(it->second, answer);
          in_flight_.erase(it);
          ++completed_;
          ++finished;
        }
        for (int i = 0; i < finished && submitted_ < total_; ++i) Submit(q, random);
        if (finished > 0) scsi_.Kick(q);
      }
    }
    finished_ = true;
  }

  const std::vector<uint8_t>& model() const { return model_; }
  int completed() const { return completed_; }
  int errors() const { return errors_; }
  int unexpected() const { return unexpected_; }
  int post_failures() const { return post_failures_; }
  bool finished() const { return finished_.load(); }

 private:
  enum class Kind { kRead, kWrite, kUnmap, kSync };
  struct Pending {
    Kind kind;
    uint64_t lba = 0;
    uint32_t blocks = 0;
  };

  bool Overlaps(uint64_t lba, uint32_t blocks) const {
    for (const auto& [key, pending] : in_flight_) {
      if (pending.kind != Kind::kSync && lba < pending.lba + pending.blocks &&
          pending.lba < lba + blocks) {
        return true;
      }
    }
    return false;
  }

  void Submit(uint16_t queue, std::mt19937& random) {
    const uint64_t image_blocks = model_.size() / 512;
    Pending pending;
    const int dice = static_cast<int>(random() % 20);
    pending.kind = dice < 9 ? Kind::kWrite : dice < 18 ? Kind::kRead
                                            : dice < 19 ? Kind::kUnmap : Kind::kSync;
    do {
      pending.blocks = 1 + static_cast<uint32_t>(random() % kMaxBlocks);
      pending.lba = random() % (image_blocks - pending.blocks);
    } while (Overlaps(pending.lba, pending.blocks));

    ScsiCommand command;
    command.tag = ++tag_;
    command.indirect = random() % 2;
    command.segment_size = random() % 3 == 0 ? 1536 : 0;
    const bool sixteen = random() % 2;
    switch (pending.kind) {
      case Kind::kWrite: {
        std::vector<uint8_t> data(pending.blocks * 512);
        for (auto& byte : data) byte = static_cast<uint8_t>(random());
        std::copy(data.begin(), data.end(), model_.begin() + pending.lba * 512);
        const uint8_t fua = random() % 8 == 0 ? 0x08 : 0;
        command.cdb = sixteen
                          ? scsi_cdb::Cdb16(opcode::kWrite16, fua, pending.lba, pending.blocks)
                          : scsi_cdb::Cdb10(opcode::kWrite10, fua, uint32_t(pending.lba),
                                            uint16_t(pending.blocks));
        command.data_out = std::move(data);
        break;
      }
      case Kind::kRead:
        command.cdb = sixteen ? scsi_cdb::Cdb16(opcode::kRead16, 0, pending.lba, pending.blocks)
                              : Read10(uint32_t(pending.lba), uint16_t(pending.blocks));
        command.data_in_length = pending.blocks * 512;
        break;
      case Kind::kUnmap:
        std::fill_n(model_.begin() + pending.lba * 512, pending.blocks * 512, 0);
        command.cdb = scsi_cdb::Unmap(24);
        command.data_out = scsi_cdb::UnmapList({{pending.lba, pending.blocks}});
        break;
      case Kind::kSync:
        command.cdb = scsi_cdb::Cdb10(opcode::kSynchronizeCache10, 0, 0, 0);
        break;
    }
    absl::StatusOr<uint16_t> head = scsi_.Post(queue, command);
    if (!head.ok()) {
      ++post_failures_;
      return;
    }
    in_flight_[{queue, *head}] = pending;
    ++submitted_;
  }

  void Check(const Pending& pending, const ScsiResponse& answer) {
    if (answer.response != response::kOk || answer.status != scsi_status::kGood) {
      ++errors_;
      return;
    }
    if (pending.kind != Kind::kRead) return;
    const auto expected = model_.begin() + pending.lba * 512;
    if (!std::equal(answer.data_in.begin(), answer.data_in.end(), expected)) ++errors_;
  }

  ScsiDriver& scsi_;
  const uint16_t queues_;
  const int depth_;
  const int total_;
  std::vector<uint8_t> model_;
  std::map<std::pair<uint16_t, uint16_t>, Pending> in_flight_;  // (queue, head)
  uint64_t tag_ = 0;
  int submitted_ = 0;
  int completed_ = 0;
  int errors_ = 0;
  int unexpected_ = 0;
  int post_failures_ = 0;
  std::atomic<bool> finished_{false};
};

TEST_F(ScsiDataplaneTest, ShadowModelWith64CommandsInFlightWhileTheDataplaneMoves) {
  constexpr uint64_t kImageBytes = 16 << 20;
  ScsiTestbedOptions options;
  options.iothread = &iothread(0);
  options.image_bytes = kImageBytes;
  options.scsi.num_request_queues = 2;
  options.max_request_data = ScsiLoad::kMaxBlocks * 512;
  // 256 entries: 32 commands per queue of up to 4 + 2 direct descriptors fit.
  StartDevice(options, 2, 256);

  constexpr int kTotal = 6000;
  ScsiLoad load(scsi(), 2, 64, kTotal, kImageBytes);
  std::thread vcpu([&] { load.Run(); });
  util::AioContext* const targets[] = {&iothread(0), &iothread(1)};
  const int operations =
      ChurnDataplane(transport(), *main_, targets, [&] { return load.finished(); });
  vcpu.join();
  EXPECT_EQ(load.completed(), kTotal);
  EXPECT_EQ(load.errors(), 0);
  EXPECT_EQ(load.unexpected(), 0);
  EXPECT_EQ(load.post_failures(), 0);
  EXPECT_GT(operations, 20);
  const hw::virtio::VirtioScsiStats stats = device().stats();
  EXPECT_EQ(stats.completed, uint64_t{kTotal});
  EXPECT_EQ(stats.errors, 0u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_GT(stats.bytes_read, 0u);
  EXPECT_GT(stats.bytes_written, 0u);
  // The image, read from the host side, is what the model says.
  transport().StopDataplaneAndWait();
  EXPECT_TRUE(ReadImage(testbed_->image_path(), 0, kImageBytes) == load.model())
      << "image and shadow model differ";
}

}  // namespace
}  // namespace kvmini::test

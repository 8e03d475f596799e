// The io_uring engine's sharing and batching: one ring per AioContext,
// shared by every backend attached there; a batch of operations started
// in one loop iteration goes to the kernel in one io_uring_submit; a
// backend moved with SetAioContext uses the new context's ring (made by
// the main thread, enabled by the IOThread's first submission); the fast
// path keeps shallow writes and cached reads off the ring; a loop with
// nothing to do sleeps in its ring and still wakes for bottom halves and
// timers. And every way completions can reach the loop delivers each of
// them once.
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "block/block_backend.h"
#include "block/io_engine.h"
#include "block/io_uring_engine.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"
#include "util/aio_wait.h"
#include "util/iothread.h"

namespace kvmini::block {
namespace {

class IoUringEngineTest : public testing::MainLoopTest {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(testing::MemoryDirectory());
  }
  void TearDown() override {
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  // Without the fast path (nowait) every read and write goes through the
  // ring.
  std::unique_ptr<BlockBackend> Open(const std::string& name, bool nowait = false) {
    std::string path = scratch_->File(name);
    testing::MakeImage(path, 1 << 20, 1);
    BlockOptions options;
    options.engine = AioEngine::kIoUring;
    options.nowait = nowait;
    auto backend = BlockBackend::Open(path, options, main());
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

  IoUringEngine& RingOf(util::AioContext& context) {
    absl::StatusOr<IoEngine*> engine = EngineForContext(context, AioEngine::kIoUring);
    EXPECT_TRUE(engine.ok());
    return *static_cast<IoUringEngine*>(*engine);
  }

  // Reads the image's first bytes into `buffer` from `context`'s own
  // thread (an IOThread's), the main thread waiting; returns the status.
  static int ReadInThread(BlockBackend& backend, util::AioContext& context,
                          std::vector<uint8_t>& buffer) {
    std::atomic<int> status{1};  // 1: not completed yet
    util::AioWaitBhOneshot(context, [&] {
      backend.Read(0, {iovec{buffer.data(), buffer.size()}}, [&](int result) {
        status.store(result);
        util::AioWaitKick();
      });
    });
    util::AioWaitWhileUnlocked([&] { return status.load() == 1; });
    return status.load();
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
};

TEST_F(IoUringEngineTest, BackendsOfOneContextShareOneRingAndOneSubmitPerBatch) {
  auto first = Open("a.img");
  auto second = Open("b.img");
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  IoUringEngine& ring = RingOf(main());
  EXPECT_EQ(&ring, &RingOf(main()));

  std::vector<std::vector<uint8_t>> buffers(200, std::vector<uint8_t>(4096));
  int done = 0;
  uint64_t before = ring.submit_calls();
  for (int i = 0; i < 200; ++i) {
    BlockBackend& backend = i % 2 == 0 ? *first : *second;
    backend.Read(static_cast<uint64_t>(i) * 4096, {iovec{buffers[i].data(), 4096}},
                 [&](int status) { done += status == 0; });
  }
  EXPECT_EQ(ring.submit_calls(), before) << "submitted inside Read()";
  ASSERT_TRUE(testing::PollUntil(main(), [&] { return done == 200; }));
  EXPECT_EQ(ring.submit_calls() - before, 1u) << "200 reads from one loop iteration";
}

// The fast path on a page-cache file: up to four writes in flight are done
// inline and the ring sees none of them; beyond that the rest go to the
// ring (for io_uring's workers to copy on other cores), in one submission;
// cached reads stay inline at any depth.
TEST_F(IoUringEngineTest, FastPathTakesShallowWritesAndEveryCachedReadInline) {
  auto backend = Open("fast.img", /*nowait=*/true);
  ASSERT_NE(backend, nullptr);
  IoUringEngine& ring = RingOf(main());
  constexpr int kBlocks = 16;
  std::vector<std::vector<uint8_t>> written(kBlocks), read(kBlocks);
  for (int i = 0; i < kBlocks; ++i) {
    written[i].assign(4096, static_cast<uint8_t>(0x40 + i));
    read[i].assign(4096, 0);
  }
  // Starts `count` writes (or reads) of blocks 0.. in one loop iteration
  // and waits for them all.
  auto run = [&](bool write, int count) {
    int succeeded = 0;
    for (int i = 0; i < count; ++i) {
      auto done = [&succeeded](int status) { succeeded += status == 0; };
      uint64_t offset = static_cast<uint64_t>(i) * 4096;
      if (write) {
        backend->Write(offset, {iovec{written[i].data(), 4096}}, done);
      } else {
        backend->Read(offset, {iovec{read[i].data(), 4096}}, done);
      }
    }
    EXPECT_TRUE(testing::PollUntil(main(), [&] { return succeeded == count; }));
  };

  const uint64_t before = ring.submit_calls();
  run(/*write=*/true, 4);
  EXPECT_EQ(ring.submit_calls(), before) << "4 writes in flight went to the ring";
  run(/*write=*/false, kBlocks);
  EXPECT_EQ(ring.submit_calls(), before) << "cached reads went to the ring";
  run(/*write=*/true, kBlocks);
  EXPECT_EQ(ring.submit_calls() - before, 1u) << "writes 5 to 16 were not submitted together";
  run(/*write=*/false, kBlocks);
  for (int i = 0; i < kBlocks; ++i) EXPECT_EQ(read[i], written[i]) << "block " << i;
}

TEST_F(IoUringEngineTest, AMovedBackendUsesItsNewContextsRing) {
  auto backend = Open("moving.img");
  ASSERT_NE(backend, nullptr);
  auto thread = util::IOThread::Create("blk-ring-test");
  ASSERT_TRUE(thread.ok());
  util::AioContext& io_context = (*thread)->context();
  IoUringEngine& main_ring = RingOf(main());
  IoUringEngine& io_ring = RingOf(io_context);
  ASSERT_NE(&main_ring, &io_ring);

  backend->SetAioContext(io_context);
  uint64_t main_before = main_ring.submit_calls();
  uint64_t io_before = 0;
  util::AioWaitBhOneshot(io_context, [&] { io_before = io_ring.submit_calls(); });
  std::vector<uint8_t> buffer(4096);
  EXPECT_EQ(ReadInThread(*backend, io_context, buffer), 0);
  uint64_t io_after = 0;
  util::AioWaitBhOneshot(io_context, [&] { io_after = io_ring.submit_calls(); });
  EXPECT_EQ(io_after - io_before, 1u);
  EXPECT_EQ(main_ring.submit_calls(), main_before);

  backend->SetAioContext(main());
  EXPECT_EQ(testing::ReadNow(*backend, main(), 0, buffer.data(), buffer.size()), 0);
  EXPECT_EQ(main_ring.submit_calls() - main_before, 1u);
  backend.reset();
  (*thread)->Stop();
}

// A loop asleep in its ring still wakes for what epoll would have woken
// it for (bottom halves from other threads, through the context's
// notifier) and for its timers (the sleep's timeout).
TEST_F(IoUringEngineTest, ALoopAsleepInItsRingWakesForBottomHalvesAndTimers) {
  auto backend = Open("iothread.img");
  ASSERT_NE(backend, nullptr);
  auto thread = util::IOThread::Create("blk-sleep-test");
  ASSERT_TRUE(thread.ok());
  util::AioContext& io_context = (*thread)->context();
  io_context.SetPollMaxNs(0);
  IoUringEngine& io_ring = RingOf(io_context);
  backend->SetAioContext(io_context);
  // The first submission in the IOThread enables its ring.
  std::vector<uint8_t> buffer(4096);
  ASSERT_EQ(ReadInThread(*backend, io_context, buffer), 0);

  uint64_t sleeps_before = 0;
  util::AioWaitBhOneshot(io_context, [&] { sleeps_before = io_ring.sleeps(); });
  int ran = 0;
  for (int i = 0; i < 200; ++i) {
    // Returns only once the IOThread woke up and ran it.
    util::AioWaitBhOneshot(io_context, [&] { ++ran; });
  }
  EXPECT_EQ(ran, 200);

  std::atomic<bool> fired{false};
  util::AioWaitBhOneshot(io_context, [&] {
    io_context.AddTimer(absl::Now() + absl::Milliseconds(20), [&] {
      fired.store(true);
      util::AioWaitKick();
    });
  });
  util::AioWaitWhileUnlocked([&] { return !fired.load(); });
  EXPECT_TRUE(fired.load());

  uint64_t sleeps_after = 0;
  util::AioWaitBhOneshot(io_context, [&] { sleeps_after = io_ring.sleeps(); });
  // Between the bottom halves the IOThread has nothing to do but sleep.
  EXPECT_GE(sleeps_after - sleeps_before, 100u) << "the IOThread did not sleep in its ring";

  backend->SetAioContext(main());
  backend.reset();
  (*thread)->Stop();
}

// One 4 KiB readv handed straight to an engine.
class RecordedRead final : public IoOperation {
 public:
  void Finished(int64_t value) override {
    result = value;
    ++calls;
  }
  iovec buffer{};
  int64_t result = 0;
  int calls = 0;
};

// With polling off, a loop waiting for a read sleeps in the ring, and the
// read's completion wakes it there (no eventfd, no epoll). The read is
// from a pipe that another thread writes to only after a while, so the
// loop cannot find the completion before it sleeps.
TEST_F(IoUringEngineTest, ALoopWaitingForIoSleepsInTheRingAndItsCompletionWakesIt) {
  IoUringEngine& ring = RingOf(main());
  main().SetPollMaxNs(0);
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  std::vector<uint8_t> data(16);
  RecordedRead read;
  read.fd = pipe_fds[0];
  read.buffer = {data.data(), data.size()};
  read.iov = &read.buffer;
  read.iov_count = 1;
  const uint64_t before = ring.sleeps();
  ring.Submit(&read);
  std::thread writer([fd = pipe_fds[1]] {
    absl::SleepFor(absl::Milliseconds(20));
    EXPECT_EQ(write(fd, "k", 1), 1);
  });
  EXPECT_TRUE(testing::PollUntil(main(), [&] { return read.calls > 0; }));
  writer.join();
  EXPECT_EQ(read.calls, 1);
  EXPECT_EQ(read.result, 1);
  EXPECT_GT(ring.sleeps(), before) << "the loop never slept in the ring";
  main().SetPollMaxNs(util::AioContext::kDefaultPollMaxNs);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

struct TaskRunCase {
  const char* name;
  IoUringEngine::TaskRun task_run;
  bool direct;      // O_DIRECT on a disk: completions from interrupts
                    // (otherwise tmpfs: from the kernel's io-wq workers)
  bool loop_spins;  // otherwise the loop sleeps in epoll between wake-ups
};

class IoUringTaskRunTest : public testing::MainLoopTest,
                           public ::testing::WithParamInterface<TaskRunCase> {};

// Deferred task run hands completions over only when the loop asks, and
// the eventfd that wakes the loop is muted while the loop reaps: a
// completion lost between the two would leave the loop asleep. The older
// ways (cooperative, interrupting) are what kernels before 6.1 get.
TEST_P(IoUringTaskRunTest, EveryReadCompletesOnceWithTheImagesBytes) {
  const TaskRunCase& param = GetParam();
  main().SetPollMaxNs(param.loop_spins ? util::AioContext::kDefaultPollMaxNs : 0);
  testing::ScratchDir scratch(param.direct ? testing::DiskDirectory()
                                           : testing::MemoryDirectory());
  constexpr size_t kBlock = 4096;
  constexpr size_t kImageBytes = 4 << 20;
  const std::string path = scratch.File("task-run.img");
  const std::vector<uint8_t> content = testing::MakeImage(path, kImageBytes, 11);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | (param.direct ? O_DIRECT : 0));
  ASSERT_GE(fd, 0) << path << ": " << strerror(errno);

  // More than the submission queue holds, so some wait for room. Made
  // before the engine so that, should the test fail with reads still in
  // the ring, the buffers outlive it.
  constexpr size_t kReads = IoUringEngine::kRingEntries + 64;
  std::unique_ptr<uint8_t, decltype(&std::free)> buffers(
      static_cast<uint8_t*>(std::aligned_alloc(kBlock, kReads * kBlock)), &std::free);
  std::vector<RecordedRead> reads(kReads);
  std::vector<uint64_t> offsets(kReads);

  IoUringEngine engine(main(), param.task_run);
  ASSERT_TRUE(engine.setup_status().ok()) << engine.setup_status();
  EXPECT_EQ(engine.task_run(), param.task_run) << "this kernel refused it";

  std::mt19937 random(param.direct ? 3 : 4);
  for (size_t i = 0; i < kReads; ++i) {
    offsets[i] = random() % (kImageBytes / kBlock) * kBlock;
    reads[i].kind = IoOperation::Kind::kReadv;
    reads[i].fd = fd;
    reads[i].offset = offsets[i];
    reads[i].buffer = {buffers.get() + i * kBlock, kBlock};
    reads[i].iov = &reads[i].buffer;
    reads[i].iov_count = 1;
    engine.Submit(&reads[i]);
  }
  auto finished = [&] {
    for (const RecordedRead& read : reads) {
      if (read.calls == 0) return false;
    }
    return true;
  };
  ASSERT_TRUE(testing::PollUntil(main(), finished, absl::Seconds(20)))
      << "a completion never woke the loop";
  for (size_t i = 0; i < kReads; ++i) {
    ASSERT_EQ(reads[i].calls, 1) << "read " << i;
    ASSERT_EQ(reads[i].result, static_cast<int64_t>(kBlock)) << "read " << i;
    ASSERT_EQ(std::memcmp(buffers.get() + i * kBlock, content.data() + offsets[i], kBlock), 0)
        << "read " << i << " at offset " << offsets[i];
  }
  close(fd);
}

INSTANTIATE_TEST_SUITE_P(
    Ways, IoUringTaskRunTest,
    ::testing::Values(
        TaskRunCase{"DeferredTmpfsSleeping", IoUringEngine::TaskRun::kDeferred, false, false},
        TaskRunCase{"DeferredTmpfsSpinning", IoUringEngine::TaskRun::kDeferred, false, true},
        TaskRunCase{"DeferredDirectSleeping", IoUringEngine::TaskRun::kDeferred, true, false},
        TaskRunCase{"DeferredDirectSpinning", IoUringEngine::TaskRun::kDeferred, true, true},
        TaskRunCase{"CooperativeTmpfsSleeping", IoUringEngine::TaskRun::kCooperative, false,
                    false},
        TaskRunCase{"CooperativeDirectSpinning", IoUringEngine::TaskRun::kCooperative, true,
                    true},
        TaskRunCase{"InterruptingTmpfsSleeping", IoUringEngine::TaskRun::kInterrupting, false,
                    false},
        TaskRunCase{"InterruptingDirectSpinning", IoUringEngine::TaskRun::kInterrupting, true,
                    true}),
    [](const ::testing::TestParamInfo<TaskRunCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::block

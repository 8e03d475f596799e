// What an IOThread and a block worker do at run time keeps working under
// their filters: bottom-half round trips, reusable BHs, timers, eventfd
// handlers ping-ponging with the main loop, allocation (small and large),
// logging, stopping the thread; block I/O of every kind through a real
// BlockBackend attached to the filtered IOThread, with io_uring and with
// the thread pool, buffered and O_DIRECT; and block::RunBlocking's calls in
// a thread under the block-worker filter. A forbidden call would end the
// test binary with SIGSYS. Runs under TSan too (label concurrency).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "block/block_backend.h"
#include "block/io_engine.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"
#include "tests/unit/vmm/sandbox/sandbox_test_support.h"
#include "util/aio_wait.h"
#include "util/event_notifier.h"
#include "util/iothread.h"
#include "util/log.h"
#include "util/mutex.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm::sandbox {
namespace {

constexpr size_t kBlock = 4096;

class FilteredIoThreadTest : public block::testing::MainLoopTest {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    auto thread = testing::StartFilteredIoThread("sandbox-io");
    ASSERT_TRUE(thread.ok()) << thread.status();
    iothread_ = std::move(*thread);
  }
  void TearDown() override {
    // The thread leaves its loop and exits under its filter.
    if (iothread_ != nullptr) iothread_->Stop();
    iothread_.reset();
    MainLoopTest::TearDown();
  }
  util::AioContext& context() { return iothread_->context(); }

  std::unique_ptr<util::IOThread> iothread_;
};

TEST_F(FilteredIoThreadTest, LoopServesBottomHalvesTimersAndEventfds) {
  // Oneshot round trips, each run in the IOThread.
  int ran_in_iothread = 0;
  for (int i = 0; i < 500; ++i) {
    util::AioWaitBhOneshot(context(), [&] {
      if (gettid() == iothread_->thread_id()) ++ran_in_iothread;
    });
  }
  EXPECT_EQ(ran_in_iothread, 500);

  // A reusable BH scheduled from the main thread.
  std::atomic<int> reusable_runs{0};
  std::unique_ptr<util::BottomHalf> bh = context().NewBottomHalf([&] {
    reusable_runs.fetch_add(1);
    util::AioWaitKick();
  });
  for (int i = 0; i < 100; ++i) {
    int before = reusable_runs.load();
    bh->Schedule();
    util::AioWaitWhileUnlocked([&] { return reusable_runs.load() == before; });
  }
  EXPECT_EQ(reusable_runs.load(), 100);
  util::AioWaitBhOneshot(context(), [&] { bh.reset(); });

  // A timer in the IOThread: a blocking poll with a timeout.
  std::atomic<bool> timer_fired{false};
  context().AddTimer(absl::Now() + absl::Milliseconds(5), [&] {
    timer_fired.store(true);
    util::AioWaitKick();
  });
  util::AioWaitWhileUnlocked([&] { return !timer_fired.load(); });

  // Eventfd ping-pong, the shape of an ioeventfd kick answered by an irqfd.
  auto kick = util::EventNotifier::Create();
  auto reply = util::EventNotifier::Create();
  ASSERT_TRUE(kick.ok() && reply.ok());
  std::atomic<int> kicks_seen{0};
  ASSERT_TRUE(context()
                  .SetFdHandler(kick->fd(),
                                [&] {
                                  if (kick->TestAndClear()) {
                                    kicks_seen.fetch_add(1);
                                    reply->Set();
                                  }
                                })
                  .ok());
  int replies = 0;
  ASSERT_TRUE(main().SetFdHandler(reply->fd(), [&] {
                      if (reply->TestAndClear()) ++replies;
                    })
                  .ok());
  for (int i = 0; i < 200; ++i) {
    kick->Set();
    util::AioWaitWhileUnlocked([&] { return replies == i; });
  }
  EXPECT_EQ(kicks_seen.load(), 200);
  util::AioWaitBhOneshot(context(), [&] { context().RemoveFdHandler(kick->fd()); });
  main().RemoveFdHandler(reply->fd());

  // Allocation: small blocks (the thread's malloc arena) and one large
  // enough for mmap and mremap; and a log line.
  size_t allocated = 0;
  util::AioWaitBhOneshot(context(), [&] {
    std::vector<std::unique_ptr<std::string>> small;
    for (int i = 0; i < 10000; ++i) small.push_back(std::make_unique<std::string>(100, 'x'));
    std::vector<uint8_t> large(16 << 20, 1);
    large.resize(32 << 20, 2);
    allocated = small.size() + large.size();
    KVMINI_LOG(Info) << "sandboxed IOThread logging";
  });
  EXPECT_EQ(allocated, 10000u + (32u << 20));
}

struct IoConfig {
  const char* name;
  block::AioEngine engine;
  bool direct;
};

class FilteredIoThreadBlockTest : public FilteredIoThreadTest,
                                  public ::testing::WithParamInterface<IoConfig> {};

// Every kind of request, 32 at a time, from and completed in the filtered
// IOThread. The backend moves there from the main loop (engines start in
// the main thread, as the machine does it before any filter exists).
TEST_P(FilteredIoThreadBlockTest, EveryRequestKindCompletesInTheFilteredIoThread) {
  constexpr size_t kImageSize = 4 << 20;
  constexpr int kDepth = 32;
  block::testing::ScratchDir scratch(GetParam().direct ? block::testing::DiskDirectory()
                                                        : block::testing::MemoryDirectory());
  const std::string path = scratch.File("sandboxed.img");
  std::vector<uint8_t> expected = block::testing::MakeImage(path, kImageSize, 7);
  block::BlockOptions options;
  options.engine = GetParam().engine;
  options.direct = GetParam().direct;
  auto opened = block::BlockBackend::Open(path, options, main());
  ASSERT_TRUE(opened.ok()) << opened.status();
  std::unique_ptr<block::BlockBackend> backend = std::move(*opened);
  ASSERT_EQ(backend->engine(), GetParam().engine);
  backend->SetAioContext(context());

  // Aligned for O_DIRECT; one block per write request.
  auto* write_data = static_cast<uint8_t*>(std::aligned_alloc(kBlock, kDepth * kBlock));
  auto* read_data = static_cast<uint8_t*>(std::aligned_alloc(kBlock, kDepth * kBlock));
  for (size_t i = 0; i < kDepth * kBlock; ++i) write_data[i] = static_cast<uint8_t>(i * 7 + 3);
  std::atomic<int> completed{0};
  std::atomic<int> failures{0};
  auto count = [&](int status) {
    if (status != 0) failures.fetch_add(1);
    completed.fetch_add(1);
    util::AioWaitKick();
  };
  auto run_batch = [&](int requests, absl::AnyInvocable<void() &&> start) {
    int target = completed.load() + requests;
    util::AioWaitBhOneshot(context(), std::move(start));
    util::AioWaitWhileUnlocked([&] { return completed.load() < target; });
  };

  // Writes of blocks 0, 2, 4, ... then reads of the same blocks.
  run_batch(kDepth, [&] {
    for (int i = 0; i < kDepth; ++i) {
      backend->Write(2 * i * kBlock, {iovec{write_data + i * kBlock, kBlock}}, count);
    }
  });
  run_batch(kDepth, [&] {
    for (int i = 0; i < kDepth; ++i) {
      backend->Read(2 * i * kBlock, {iovec{read_data + i * kBlock, kBlock}}, count);
    }
  });
  EXPECT_EQ(std::memcmp(read_data, write_data, kDepth * kBlock), 0);
  // Flush, discard (punch hole) and write-zeroes with and without unmap.
  run_batch(4, [&] {
    backend->Flush(count);
    backend->Discard(1 << 20, 64 * kBlock, count);
    backend->WriteZeroes(2 << 20, 64 * kBlock, /*may_unmap=*/true, count);
    backend->WriteZeroes(3 << 20, 64 * kBlock, /*may_unmap=*/false, count);
  });
  EXPECT_EQ(failures.load(), 0);

  backend->Drain();
  backend->SetAioContext(main());
  backend.reset();
  for (int i = 0; i < kDepth; ++i) {
    std::memcpy(expected.data() + 2 * i * kBlock, write_data + i * kBlock, kBlock);
  }
  for (size_t start : {size_t{1} << 20, size_t{2} << 20, size_t{3} << 20}) {
    std::memset(expected.data() + start, 0, 64 * kBlock);
  }
  EXPECT_TRUE(block::testing::ReadWholeFile(path) == expected);
  std::free(write_data);
  std::free(read_data);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, FilteredIoThreadBlockTest,
    ::testing::Values(IoConfig{"IoUring", block::AioEngine::kIoUring, false},
                      IoConfig{"IoUringDirect", block::AioEngine::kIoUring, true},
                      IoConfig{"ThreadPool", block::AioEngine::kThreads, false},
                      IoConfig{"ThreadPoolDirect", block::AioEngine::kThreads, true}),
    [](const ::testing::TestParamInfo<IoConfig>& info) { return info.param.name; });

// One system call of block::RunBlocking's kinds.
class BlockingCall final : public block::IoOperation {
 public:
  void Finished(int64_t) override {}
};

// A worker of the thread-pool engine: takes work from an eventfd
// semaphore, runs the blocking calls, hands results to the loop through a
// bottom half, under a lock.
TEST(BlockWorkerFilterTest, WorkerCallsRunUnderTheWorkerFilter) {
  auto main_context = util::AioContext::CreateMain();
  ASSERT_TRUE(main_context.ok()) << main_context.status();
  block::testing::ScratchDir scratch(block::testing::MemoryDirectory());
  const std::string path = scratch.File("worker.img");
  block::testing::MakeImage(path, 1 << 20, 3);
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int work_available = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
  ASSERT_GE(work_available, 0);
  ASSERT_EQ(eventfd_write(work_available, 1), 0);
  std::atomic<bool> delivered{false};
  std::unique_ptr<util::BottomHalf> deliver =
      (*main_context)->NewBottomHalf([&] { delivered.store(true); });
  util::Mutex results_mutex;

  std::vector<uint8_t> written(8192, 0x5a), read_back(8192, 0);
  std::vector<int64_t> results;
  absl::Status status = testing::RunInFilteredThread(ThreadKind::kBlockWorker, "kvmini-blk-io", [&] {
    eventfd_t ignored;
    results.push_back(eventfd_read(work_available, &ignored));
    iovec out{written.data(), written.size()};
    iovec in{read_back.data(), read_back.size()};
    BlockingCall call;
    call.fd = fd;
    call.kind = BlockingCall::Kind::kWritev;
    call.iov = &out;
    call.iov_count = 1;
    call.offset = 4096;
    results.push_back(block::RunBlocking(call));
    call.kind = BlockingCall::Kind::kReadv;
    call.iov = &in;
    results.push_back(block::RunBlocking(call));
    call.kind = BlockingCall::Kind::kDataSync;
    results.push_back(block::RunBlocking(call));
    call.kind = BlockingCall::Kind::kFallocate;
    call.fallocate_mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    call.offset = 65536;
    call.length = 65536;
    results.push_back(block::RunBlocking(call));
    call.fallocate_mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    results.push_back(block::RunBlocking(call));
    util::MutexLock lock(&results_mutex);
    deliver->Schedule();
  });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_EQ(results.size(), 6u);
  EXPECT_EQ(results[0], 0);     // eventfd_read
  EXPECT_EQ(results[1], 8192);  // pwritev
  EXPECT_EQ(results[2], 8192);  // preadv
  EXPECT_EQ(results[3], 0);     // fdatasync
  EXPECT_EQ(results[4], 0);     // fallocate: punch hole
  // fallocate: zero range, which tmpfs (where the image is) does not
  // support: either way the call reached the kernel.
  EXPECT_TRUE(results[5] == 0 || results[5] == -EOPNOTSUPP) << results[5];
  EXPECT_EQ(read_back, written);
  EXPECT_TRUE(block::testing::PollUntil(**main_context, [&] { return delivered.load(); }));
  deliver.reset();
  close(work_available);
  close(fd);
}

// Two filtered threads take turns on a util::Mutex, each holding it long
// enough for the other to give up spinning: absl's short sleeps, blocking
// on a futex, waking. Exits 0 if both finished.
[[noreturn]] void ContendUnderFilters() {
  util::Mutex mutex;
  std::atomic<int> first_turns{0};
  std::atomic<int> second_turns{0};
  auto take_turns = [&mutex](std::atomic<int>& turns) {
    for (int i = 0; i < 20; ++i) {
      util::MutexLock lock(&mutex);
      timespec pause{0, 2'000'000};
      nanosleep(&pause, nullptr);
      turns.fetch_add(1);
    }
  };
  std::thread other([&] {
    if (InstallSeccompFilter(ThreadKind::kBlockWorker).ok()) take_turns(second_turns);
  });
  absl::Status status = testing::RunInFilteredThread(ThreadKind::kIoThread, "sandbox-io",
                                                     [&] { take_turns(first_turns); });
  other.join();
  bool all_ran = status.ok() && first_turns.load() == 20 && second_turns.load() == 20;
  std::fprintf(stderr, all_ran ? "both threads done\n" : "a thread did not finish\n");
  _exit(all_ran ? 0 : 3);
}

// In a fresh process (a death-test child), so that the process's first
// contended lock happens under the filters: absl counts the CPUs then
// (opening /sys/devices/system/cpu/online), which only works because
// PrepareSeccompFilters() did it before any filter existed.
TEST(ContendedMutexTest, BlocksAndWakesUnderTheFilters) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ContendUnderFilters(), ::testing::ExitedWithCode(0), "both threads done");
}

}  // namespace
}  // namespace kvmini::vmm::sandbox

// Drain() and SetAioContext(): draining hundreds of operations in flight,
// from the main loop, wherever the backend runs; and moving a backend
// between the main loop and an IOThread again and again while another
// thread keeps submitting requests through bottom halves, the way a
// virtio dataplane is stopped and restarted under guest I/O. Nothing may be
// lost, nothing completed twice, nothing completed in the wrong thread.
// Runs under TSan too (label concurrency).
#include <sys/uio.h>

#include <atomic>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"
#include "util/aio_wait.h"
#include "util/iothread.h"
#include "util/mutex.h"

namespace kvmini::block {
namespace {

constexpr size_t kImageSize = 8 << 20;
constexpr size_t kBlock = 4096;

struct MoveConfig {
  const char* name;
  AioEngine engine;
  bool nowait;
};

class DrainMoveTest : public testing::MainLoopTest,
                      public ::testing::WithParamInterface<MoveConfig> {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    scratch_ = std::make_unique<testing::ScratchDir>(testing::MemoryDirectory());
    path_ = scratch_->File("moving.img");
    content_ = testing::MakeImage(path_, kImageSize, 21);
    BlockOptions options;
    options.engine = GetParam().engine;
    options.nowait = GetParam().nowait;
    auto opened = BlockBackend::Open(path_, options, main());
    ASSERT_TRUE(opened.ok()) << opened.status();
    backend_ = std::move(*opened);
    auto thread = util::IOThread::Create("blk-move-test");
    ASSERT_TRUE(thread.ok()) << thread.status();
    iothread_ = std::move(*thread);
  }
  void TearDown() override {
    if (backend_ != nullptr) {
      backend_->Drain();
      backend_->SetAioContext(main());
      backend_.reset();
    }
    if (iothread_ != nullptr) iothread_->Stop();
    iothread_.reset();
    scratch_.reset();
    MainLoopTest::TearDown();
  }

  bool Matches(const uint8_t* data, uint64_t offset) const {
    return std::equal(data, data + kBlock, content_.begin() + offset);
  }

  std::unique_ptr<testing::ScratchDir> scratch_;
  std::string path_;
  std::vector<uint8_t> content_;
  std::unique_ptr<BlockBackend> backend_;
  std::unique_ptr<util::IOThread> iothread_;
};

TEST_P(DrainMoveTest, DrainWaitsForHundredsInFlightInTheMainLoop) {
  constexpr int kCount = 600;
  std::vector<std::vector<uint8_t>> buffers(kCount, std::vector<uint8_t>(kBlock));
  std::vector<int> calls(kCount, 0);
  int mismatches = 0;
  for (int i = 0; i < kCount; ++i) {
    uint64_t offset = static_cast<uint64_t>(i) * kBlock % kImageSize;
    if (i % 3 == 0) {
      // Writing back what is there keeps the content known.
      std::copy_n(content_.begin() + offset, kBlock, buffers[i].begin());
      backend_->Write(offset, {iovec{buffers[i].data(), kBlock}}, [&, i](int status) {
        ++calls[i];
        mismatches += status != 0;
      });
    } else {
      backend_->Read(offset, {iovec{buffers[i].data(), kBlock}}, [&, i, offset](int status) {
        ++calls[i];
        mismatches += status != 0 || !Matches(buffers[i].data(), offset);
      });
    }
  }
  EXPECT_EQ(backend_->in_flight(), static_cast<uint64_t>(kCount));
  backend_->Drain();
  EXPECT_EQ(backend_->in_flight(), 0u);
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(calls[i], 1) << i;
  EXPECT_EQ(mismatches, 0);
}

TEST_P(DrainMoveTest, DrainFromTheMainLoopWaitsForAnIOThreadsOperations) {
  util::AioContext& io_context = iothread_->context();
  backend_->SetAioContext(io_context);
  EXPECT_EQ(&backend_->context(), &io_context);
  constexpr int kCount = 500;
  std::vector<std::vector<uint8_t>> buffers(kCount, std::vector<uint8_t>(kBlock));
  std::vector<std::atomic<int>> calls(kCount);
  std::atomic<int> wrong_thread{0}, mismatches{0};
  util::AioWaitBhOneshot(io_context, [&] {
    for (int i = 0; i < kCount; ++i) {
      uint64_t offset = static_cast<uint64_t>(i) * 3 * kBlock % kImageSize;
      backend_->Read(offset, {iovec{buffers[i].data(), kBlock}}, [&, i, offset](int status) {
        calls[i].fetch_add(1);
        if (util::AioContext::Current() != &io_context) wrong_thread.fetch_add(1);
        if (status != 0 || !Matches(buffers[i].data(), offset)) mismatches.fetch_add(1);
      });
    }
  });
  backend_->Drain();
  EXPECT_EQ(backend_->in_flight(), 0u);
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(calls[i].load(), 1) << i;
  EXPECT_EQ(wrong_thread.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  backend_->SetAioContext(main());
  EXPECT_EQ(&backend_->context(), &main());
}

// A device with a request queue, filled by a "guest" thread and served in
// whichever loop the device is attached to (as a virtqueue with its
// ioeventfd handler is).
class QueueDevice {
 public:
  QueueDevice(BlockBackend& backend, const std::vector<uint8_t>& content, int requests)
      : backend_(backend), content_(content), calls_(requests) {}

  // Guest side, any thread: queue request `id` and kick the loop serving it.
  void Submit(int id) {
    util::AioContext* serving;
    {
      util::MutexLock lock(&mutex_);
      queue_.push_back(id);
      serving = attached_;
    }
    submitted_.fetch_add(1);
    // Detached: whoever attaches next serves the queue.
    if (serving != nullptr) serving->ScheduleOneshot([this, serving] { Serve(*serving); });
  }

  // In `context`'s thread: start (or stop) serving there.
  void Attach(util::AioContext& context) {
    {
      util::MutexLock lock(&mutex_);
      attached_ = &context;
    }
    Serve(context);
  }
  void Detach() {
    util::MutexLock lock(&mutex_);
    attached_ = nullptr;
  }

  int submitted() const { return submitted_.load(); }
  int completed() const { return completed_.load(); }
  int wrong_thread() const { return wrong_thread_.load(); }
  int bad_data() const { return bad_data_.load(); }
  int calls(int id) const { return calls_[id].load(); }

 private:
  void Serve(util::AioContext& context) {
    std::deque<int> batch;
    {
      util::MutexLock lock(&mutex_);
      // A kick that raced with a detach: the queue is no longer ours.
      if (attached_ != &context) return;
      batch.swap(queue_);
    }
    for (int id : batch) Start(id, context);
  }

  void Start(int id, util::AioContext& context) {
    uint64_t offset = (static_cast<uint64_t>(id) * 7919 % (kImageSize / kBlock)) * kBlock;
    auto buffer = std::make_unique<uint8_t[]>(kBlock);
    uint8_t* data = buffer.get();
    bool write = id % 4 == 0;
    if (write) std::copy_n(content_.begin() + offset, kBlock, data);
    auto done = [this, id, offset, write, &context, buffer = std::move(buffer)](int status) {
      calls_[id].fetch_add(1);
      if (util::AioContext::Current() != &context) wrong_thread_.fetch_add(1);
      if (status != 0 ||
          (!write && !std::equal(buffer.get(), buffer.get() + kBlock,
                                 content_.begin() + offset))) {
        bad_data_.fetch_add(1);
      }
      completed_.fetch_add(1);
      util::AioWaitKick();
    };
    if (write) {
      backend_.Write(offset, {iovec{data, kBlock}}, std::move(done));
    } else {
      backend_.Read(offset, {iovec{data, kBlock}}, std::move(done));
    }
  }

  BlockBackend& backend_;
  const std::vector<uint8_t>& content_;
  util::Mutex mutex_;
  std::deque<int> queue_ ABSL_GUARDED_BY(mutex_);
  util::AioContext* attached_ ABSL_GUARDED_BY(mutex_) = nullptr;
  std::atomic<int> submitted_{0};
  std::atomic<int> completed_{0};
  std::atomic<int> wrong_thread_{0};
  std::atomic<int> bad_data_{0};
  std::vector<std::atomic<int>> calls_;
};

TEST_P(DrainMoveTest, MovingBackAndForthUnderLoadLosesNothing) {
  constexpr int kRequests = 30000;
  constexpr int kMaxOutstanding = 256;
  util::AioContext& io_context = iothread_->context();
  QueueDevice device(*backend_, content_, kRequests);
  device.Attach(main());

  std::atomic<bool> guest_done{false};
  std::thread guest([&] {
    for (int id = 0; id < kRequests; ++id) {
      // Like a virtqueue: at most so many requests outstanding.
      while (device.submitted() - device.completed() >= kMaxOutstanding) {
        std::this_thread::yield();
      }
      device.Submit(id);
    }
    guest_done.store(true);
  });

  // Dataplane stop/start, as hw/ does it: detach in the serving loop,
  // drain, move the backend, attach in the new loop.
  auto move_to = [&](util::AioContext& from, util::AioContext& to) {
    util::AioWaitBhOneshot(from, [&] { device.Detach(); });
    backend_->Drain();
    backend_->SetAioContext(to);
    util::AioWaitBhOneshot(to, [&] { device.Attach(to); });
  };
  std::mt19937 random(5);
  int moves = 0;
  int moves_under_load = 0;
  bool in_iothread = false;
  while (!guest_done.load() || moves < 40) {
    // Serve in the main loop (or let the IOThread serve) for a moment.
    testing::PollUntil(main(), [] { return false; }, absl::Microseconds(random() % 1000));
    if (!guest_done.load()) ++moves_under_load;
    if (in_iothread) {
      move_to(io_context, main());
    } else {
      move_to(main(), io_context);
    }
    in_iothread = !in_iothread;
    ++moves;
  }
  guest.join();
  // Completions in the IOThread kick the main loop only while it waits
  // this way (a plain poll would sleep through them).
  util::AioWaitWhileUnlocked([&] { return device.completed() < kRequests; });
  if (in_iothread) move_to(io_context, main());
  util::AioWaitBhOneshot(main(), [&] { device.Detach(); });
  backend_->Drain();

  EXPECT_EQ(backend_->in_flight(), 0u);
  EXPECT_EQ(device.wrong_thread(), 0);
  EXPECT_EQ(device.bad_data(), 0);
  for (int id = 0; id < kRequests; ++id) ASSERT_EQ(device.calls(id), 1) << "request " << id;
  EXPECT_GE(moves_under_load, 20) << "the guest finished before the moves began";
  EXPECT_TRUE(testing::ReadWholeFile(path_) == content_);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, DrainMoveTest,
    ::testing::Values(MoveConfig{"IoUring", AioEngine::kIoUring, false},
                      MoveConfig{"IoUringInline", AioEngine::kIoUring, true},
                      MoveConfig{"Threads", AioEngine::kThreads, false}),
    [](const ::testing::TestParamInfo<MoveConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::block

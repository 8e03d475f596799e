// The io_uring engine's sharing and batching: one ring per AioContext,
// shared by every backend attached there; a batch of operations started
// in one loop iteration goes to the kernel in one io_uring_submit; a
// backend moved with SetAioContext uses the new context's ring.
#include <sys/uio.h>

#include <atomic>
#include <string>
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

  std::unique_ptr<BlockBackend> Open(const std::string& name) {
    std::string path = scratch_->File(name);
    testing::MakeImage(path, 1 << 20, 1);
    BlockOptions options;
    options.engine = AioEngine::kIoUring;
    options.nowait = false;  // every read through the ring
    auto backend = BlockBackend::Open(path, options, main());
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }

  IoUringEngine& RingOf(util::AioContext& context) {
    absl::StatusOr<IoEngine*> engine = EngineForContext(context, AioEngine::kIoUring);
    EXPECT_TRUE(engine.ok());
    return *static_cast<IoUringEngine*>(*engine);
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
  std::atomic<int> done{0};
  util::AioWaitBhOneshot(io_context, [&] {
    backend->Read(0, {iovec{buffer.data(), 4096}}, [&](int status) {
      done.store(status == 0 ? 1 : -1);
      util::AioWaitKick();
    });
  });
  util::AioWaitWhileUnlocked([&] { return done.load() == 0; });
  EXPECT_EQ(done.load(), 1);
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

}  // namespace
}  // namespace kvmini::block

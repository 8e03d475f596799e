// Issue 8's harness test: random dataplane stop / start / set-iothread
// operations (10,000 by default) on a virtio-blk and on a virtio-scsi disk
// while a vCPU-like driver thread keeps 64 random reads and writes in
// flight against a byte-exact shadow model. Every request must be answered
// exactly once with the right data, no block operation may start or
// complete outside the thread that owns the disk at that moment, and the
// image must end equal to the model. Prints the latency of each kind of
// operation (min/p50/p99/max). Label concurrency: also runs under TSan.
#include <atomic>
#include <iostream>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/hotstop_load.h"
#include "tests/unit/hw/virtio/hotstop_testbed.h"
#include "util/iothread.h"

// Under TSan each operation waits about ten times longer for the requests
// in flight (about 20 ms): the TSan build passes a smaller count
// (tests/unit/hw/virtio/CMakeLists.txt) to keep scripts/test.sh's TSan run
// near a minute. Every other build runs the 10,000.
#ifndef KVMINI_HOTSTOP_OPERATIONS
#define KVMINI_HOTSTOP_OPERATIONS 10000
#endif

namespace kvmini::test {
namespace {

constexpr int kOperations = KVMINI_HOTSTOP_OPERATIONS;
constexpr uint64_t kImageBytes = 16 << 20;

class HotstopStressTest : public ::testing::TestWithParam<HotstopDevice> {
 protected:
  void SetUp() override {
    auto main = util::AioContext::CreateMain();
    ASSERT_TRUE(main.ok()) << main.status();
    main_ = std::move(*main);
    for (const char* id : {"iothread0", "iothread1", "iothread2"}) {
      auto thread = util::IOThread::Create(id);
      ASSERT_TRUE(thread.ok()) << thread.status();
      iothreads_.push_back(std::move(*thread));
    }
  }
  void TearDown() override {
    testbed_.reset();  // before the IOThreads: it detaches from them
    iothreads_.clear();
    main_.reset();
  }

  std::unique_ptr<util::AioContext> main_;
  std::vector<std::unique_ptr<util::IOThread>> iothreads_;
  std::unique_ptr<HotstopTestbed> testbed_;
};

TEST_P(HotstopStressTest, RandomDataplaneOperationsWhile64RequestsAreInFlight) {
  auto testbed = HotstopTestbed::Create({.device = GetParam(),
                                         .image_bytes = kImageBytes,
                                         .queues = 2,
                                         .queue_size = 256,
                                         .iothread = &iothreads_[0]->context()});
  ASSERT_TRUE(testbed.ok()) << testbed.status();
  testbed_ = std::move(*testbed);
  hw::virtio::MmioTransport& transport = testbed_->transport();

  ShadowLoad load(testbed_->port(), kImageBytes, {.depth = 64});
  std::thread vcpu([&] { load.Run(); });

  // Where the disk should be after each operation: the IOThread it was
  // last given while the operator wants the dataplane, else the main loop.
  util::AioContext* const targets[] = {&iothreads_[0]->context(), &iothreads_[1]->context(),
                                       &iothreads_[2]->context(), nullptr};
  util::AioContext* iothread = targets[0];
  bool wanted = true;
  std::vector<absl::Duration> stops, starts, moves;
  std::mt19937 random(8);
  int wrong_state = 0, stalls = 0;
  // Requests in flight when each operation began: popped by the device and
  // not yet answered, and posted by the driver and not yet collected.
  uint64_t device_in_flight = 0, driver_in_flight = 0;
  for (int operation = 0; operation < kOperations; ++operation) {
    const hw::virtio::MmioTransport::DataplaneStatus before = transport.dataplane_status();
    const bool was_running = before.running;
    device_in_flight += before.in_flight;
    driver_in_flight += load.in_flight();
    const absl::Time begin = absl::Now();
    switch (random() % 3) {
      case 0:
        transport.StopDataplaneAndWait();
        wanted = false;
        if (was_running) stops.push_back(absl::Now() - begin);
        break;
      case 1:
        transport.StartDataplaneAndWait();
        wanted = true;
        if (!was_running && iothread != nullptr) starts.push_back(absl::Now() - begin);
        break;
      default: {
        util::AioContext* target = targets[random() % 4];
        transport.MoveDataplaneAndWait(target);
        if (was_running && wanted && target != iothread) moves.push_back(absl::Now() - begin);
        iothread = target;
        break;
      }
    }
    const bool should_run = wanted && iothread != nullptr;
    util::AioContext* const owner = should_run ? iothread : main_.get();
    if (transport.dataplane_status().running != should_run ||
        &testbed_->backend().context() != owner) {
      if (++wrong_state == 1) {
        ADD_FAILURE() << "operation " << operation << ": the disk is on "
                      << testbed_->backend().context().name() << ", expected " << owner->name();
      }
    }
    // Serve the main loop for 0-100 us, and at least until the driver has
    // collected one more answer: requests complete between operations too (in the
    // main loop while it owns the disk), the driver thread keeps its 64
    // posted, and wherever the operation left the disk, its queues must
    // make progress without another operation (a lost kick would stall
    // them here).
    const uint64_t answered_before = load.completed();
    const absl::Time until = absl::Now() + absl::Microseconds(random() % 100);
    const absl::Time stalled = absl::Now() + absl::Seconds(5);
    while (absl::Now() < until || load.completed() == answered_before) {
      if (absl::Now() > stalled) {
        if (++stalls == 1) {
          ADD_FAILURE() << "operation " << operation << ": no request answered for 5 s after it";
        }
        break;
      }
      main_->Poll(false);
    }
  }
  const uint64_t completed_during_churn = load.completed();
  load.RequestStop();
  while (!load.finished()) {
    main_->Poll(false);
    std::this_thread::yield();
  }
  vcpu.join();

  std::cout << HotstopDeviceName(GetParam()) << ": " << kOperations << " operations, "
            << completed_during_churn << " requests answered meanwhile; in flight when an "
            << "operation began: " << double(device_in_flight) / kOperations << " in the device, "
            << double(driver_in_flight) / kOperations << " posted (average)\n"
            << "  dataplane-stop (running -> main loop): " << FormatSummary(Summarize(stops))
            << "\n  dataplane-start (main loop -> IOThread): " << FormatSummary(Summarize(starts))
            << "\n  set-iothread (IOThread -> another):       " << FormatSummary(Summarize(moves))
            << "\n";

  EXPECT_EQ(wrong_state, 0);
  EXPECT_EQ(load.first_problem(), "");
  EXPECT_EQ(load.failed(), 0u);
  EXPECT_EQ(load.mismatches(), 0u);
  EXPECT_EQ(load.unexpected(), 0u) << "a request was answered twice";
  EXPECT_EQ(load.post_failures(), 0u);
  EXPECT_EQ(load.unanswered(), 0u) << "requests hung";
  EXPECT_EQ(load.completed(), load.posted()) << "every request answered exactly once";
  EXPECT_EQ(testbed_->device_completed(), load.posted());
  EXPECT_EQ(testbed_->device_errors(), 0u);
  const OwnerCheckingBackend& backend = testbed_->backend();
  EXPECT_EQ(backend.wrong_thread_starts(), 0u) << backend.first_violation();
  EXPECT_EQ(backend.wrong_thread_completions(), 0u) << backend.first_violation();
  EXPECT_GE(backend.completions(), load.posted());
  EXPECT_EQ(stalls, 0);
  EXPECT_GE(completed_during_churn, uint64_t{kOperations});
  EXPECT_GT(stops.size(), size_t{kOperations / 20});

  // Nothing in flight now: the image, read from the host, is the model.
  transport.StopDataplaneAndWait();
  EXPECT_TRUE(ReadImage(testbed_->image_path(), 0, kImageBytes) == load.model())
      << "image and shadow model differ";
}

// The checker itself can fail: once it believes an IOThread owns the disk,
// work started from the main loop thread, and a completion run there, are
// both reported.
TEST(OwnerCheckingBackendTest, ReportsWorkOutsideTheOwningThread) {
  auto main = util::AioContext::CreateMain();
  ASSERT_TRUE(main.ok());
  auto iothread = util::IOThread::Create("iothread0");
  ASSERT_TRUE(iothread.ok());
  auto owned = std::make_unique<MemoryBlockBackend>(4096, false, **main);
  MemoryBlockBackend* inner = owned.get();
  OwnerCheckingBackend backend(std::move(owned));
  std::vector<uint8_t> buffer(512);
  std::atomic<int> completions{0};
  backend.Read(0, {{buffer.data(), buffer.size()}}, [&](int) { ++completions; });
  while (completions == 0) (*main)->Poll(true);
  EXPECT_EQ(backend.wrong_thread_starts(), 0u);
  EXPECT_EQ(backend.wrong_thread_completions(), 0u);

  backend.SetAioContext((*iothread)->context());
  inner->SetAioContext(**main);  // behind the checker's back
  backend.Read(0, {{buffer.data(), buffer.size()}}, [&](int) { ++completions; });
  while (completions == 1) (*main)->Poll(true);
  EXPECT_EQ(backend.wrong_thread_starts(), 1u);
  EXPECT_EQ(backend.wrong_thread_completions(), 1u);
  EXPECT_THAT(
      backend.first_violation(),
      ::testing::HasSubstr("in the thread of main while the disk belongs to iothread iothread0"));
}

INSTANTIATE_TEST_SUITE_P(Devices, HotstopStressTest,
                         ::testing::Values(HotstopDevice::kBlk, HotstopDevice::kScsi),
                         [](const ::testing::TestParamInfo<HotstopDevice>& info) {
                           return info.param == HotstopDevice::kBlk ? "Blk" : "Scsi";
                         });

}  // namespace
}  // namespace kvmini::test

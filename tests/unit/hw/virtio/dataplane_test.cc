// The IOThread dataplane: queues served by an IOThread from DRIVER_OK,
// stop/start/move between requests and under load (a driver thread keeps 64
// requests in flight against a shadow model of the disk), reset while the
// dataplane runs. Runs under TSan too (label concurrency).
#include <atomic>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/dataplane_churn.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/with_iothreads.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;
namespace mmio = hw::virtio::mmio;

class DataplaneTest : public WithIOThreads<MainLoopTest> {
 protected:

  // A device on the IOThread over a memory backend that holds completions;
  // posts `requests` (kicked) and waits until the backend holds them all.
  MemoryBlockBackend& StartWithHeldRequests(const std::vector<BlkRequest>& requests) {
    BlkTestbedOptions options;
    options.iothread = &iothread(0);
    options.backend = BlkTestbedOptions::Backend::kMemory;
    StartDevice(options, kLinuxFeatures, 1, 64);
    MemoryBlockBackend& backend = *testbed_->memory_backend();
    backend.HoldCompletions(true);
    for (const BlkRequest& request : requests) EXPECT_TRUE(blk().Post(0, request).ok());
    driver().Kick(0);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (backend.held() < requests.size() && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(backend.held(), requests.size());
    backend.HoldCompletions(false);  // later ones complete normally
    return backend;
  }

};

TEST_F(DataplaneTest, DriverOkStartsTheDataplaneOnTheIOThread) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  auto testbed = BlkTestbed::Create(options);
  ASSERT_TRUE(testbed.ok());
  testbed_ = std::move(*testbed);
  EXPECT_FALSE(Running()) << "nothing runs before DRIVER_OK";
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  EXPECT_TRUE(Running());
  EXPECT_EQ(&testbed_->blk().backend().context(), &iothread(0));
  auto result = blk().Run(0, {.type = blk::kTypeOut, .sector = 0, .out_data = Pattern(4096, 1)});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->status, blk::kStatusOk);
}

TEST_F(DataplaneTest, StopAndStartBetweenRequestsKeepServing) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  for (int round = 0; round < 20; ++round) {
    const uint64_t sector = round * 8;
    auto write = blk().Run(0, {.type = blk::kTypeOut, .sector = sector,
                               .out_data = Pattern(4096, round)});
    ASSERT_EQ(write->status, blk::kStatusOk);
    transport().StopDataplaneAndWait();
    EXPECT_FALSE(Running());
    EXPECT_EQ(&testbed_->blk().backend().context(), main_.get());
    auto read = blk().Run(0, {.type = blk::kTypeIn, .sector = sector, .in_length = 4096});
    ASSERT_EQ(read->status, blk::kStatusOk);
    EXPECT_EQ(read->in_data, Pattern(4096, round));
    transport().StopDataplaneAndWait();  // idempotent
    transport().StartDataplaneAndWait();
    transport().StartDataplaneAndWait();
    EXPECT_TRUE(Running());
    EXPECT_EQ(&testbed_->blk().backend().context(), &iothread(0));
  }
  auto status = transport().dataplane_status();
  EXPECT_GT(status.last_stop, absl::ZeroDuration());
  EXPECT_GT(status.last_start, absl::ZeroDuration());
}

TEST_F(DataplaneTest, KickDuringTheSwitchIsNotLost) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  for (int round = 0; round < 50; ++round) {
    // Posted and kicked, then the dataplane moves before anyone looked.
    ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeFlush}).ok());
    driver().Kick(0);
    if (round % 2 == 0) {
      transport().StopDataplaneAndWait();
    } else {
      transport().StartDataplaneAndWait();
    }
    ASSERT_TRUE(driver().WaitUntil([&] { return blk().Collect(0).size() == 1; },
                                   absl::Seconds(10)))
        << "round " << round;
  }
}

TEST_F(DataplaneTest, StopAndStartWhileTheDeviceIsNotActiveOnlyRecordTheWish) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  auto testbed = BlkTestbed::Create(options);
  ASSERT_TRUE(testbed.ok());
  testbed_ = std::move(*testbed);
  transport().StopDataplaneAndWait();
  EXPECT_FALSE(Running());
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  EXPECT_FALSE(Running()) << "stopped by the operator: the main loop serves it";
  EXPECT_EQ(blk().Run(0, {.type = blk::kTypeFlush})->status, blk::kStatusOk);
  transport().StartDataplaneAndWait();
  EXPECT_TRUE(Running());
  EXPECT_EQ(blk().Run(0, {.type = blk::kTypeFlush})->status, blk::kStatusOk);
}

TEST_F(DataplaneTest, ResetWithRequestsInFlightOnTheIOThread) {
  std::vector<BlkRequest> writes;
  for (int i = 0; i < 16; ++i) {
    writes.push_back({.type = blk::kTypeOut, .sector = uint64_t(i) * 8,
                      .out_data = Pattern(4096, i)});
  }
  MemoryBlockBackend& backend = StartWithHeldRequests(writes);
  ASSERT_FALSE(HasFailure());
  main_->AddTimer(absl::Now() + absl::Milliseconds(20), [&] { backend.ReleaseHeld(); });
  driver().Write32(mmio::kStatus, 0);
  EXPECT_EQ(driver().queue(0).used_index(), 16);
  EXPECT_FALSE(Running());
  EXPECT_EQ(&backend.context(), main_.get()) << "a reset device's backend is home";
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  EXPECT_TRUE(Running());
  EXPECT_EQ(blk().Run(0, {.type = blk::kTypeIn, .sector = 8, .in_length = 4096})->in_data,
            Pattern(4096, 1));
}

// While a dataplane stop waits for held requests (polling the main loop), a
// vCPU resets the device: the reset is queued behind the stop, not run
// inside it; it runs when the stop has finished (before StopDataplane
// returns to its caller).
TEST_F(DataplaneTest, ResetFromAVcpuDuringADataplaneStopRunsAfterIt) {
  MemoryBlockBackend& backend = StartWithHeldRequests({{.type = blk::kTypeFlush}});
  ASSERT_FALSE(HasFailure());

  std::vector<std::string> order;
  std::atomic<bool> reset_returned{false};
  std::thread vcpu;
  // Inside the stop's drain: start the vCPU's reset, then release the
  // request a little later.
  main_->AddTimer(absl::Now() + absl::Milliseconds(10), [&] {
    vcpu = std::thread([&] {
      driver().Write32(mmio::kStatus, 0);
      reset_returned = true;
    });
    main_->AddTimer(absl::Now() + absl::Milliseconds(30), [&] {
      order.push_back(reset_returned ? "reset returned early" : "release");
      backend.ReleaseHeld();
    });
  });
  uint8_t status_when_stopped = 0;
  transport().StopDataplane([&] {
    order.push_back("stop done");
    status_when_stopped = driver().status();
  });
  // The queued reset ran right after the stop, before StopDataplane returned.
  while (!reset_returned) {
    main_->Poll(/*blocking=*/false);
    std::this_thread::yield();
  }
  vcpu.join();
  EXPECT_EQ(order, (std::vector<std::string>{"release", "stop done"}));
  EXPECT_NE(status_when_stopped, 0) << "the reset must not run inside the stop";
  EXPECT_EQ(driver().status(), 0);
  EXPECT_EQ(driver().queue(0).used_index(), 1);
  EXPECT_FALSE(Running());
}

// A vCPU-like driver thread: keeps `depth` requests in flight, each slot
// on its own sectors, alternating a write of a fresh pattern with a read
// that must return it. Every request must complete exactly once.
class LoadDriver {
 public:
  LoadDriver(BlkDriver& blk, uint16_t queues, int depth, int total)
      : blk_(blk), queues_(queues), depth_(depth), total_(total) {}

  void Run() {
    std::mt19937 random(42);
    std::vector<Slot> slots(depth_);
    for (int i = 0; i < depth_; ++i) {
      slots[i].queue = static_cast<uint16_t>(i % queues_);
      slots[i].sector = uint64_t(i) * 16;
      Submit(slots[i], i, random);
    }
    for (uint16_t q = 0; q < queues_; ++q) blk_.driver().Kick(q);
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    while (completed_ < total_ && absl::Now() < deadline) {
      blk_.driver().WaitForInterrupt(absl::Milliseconds(20));
      for (uint16_t q = 0; q < queues_; ++q) {
        // Match the whole batch before posting again: a new post may reuse
        // a head that appears later in the same batch.
        std::vector<Slot*> finished;
        for (auto& [done_head, result] : blk_.Collect(q)) {
          const uint16_t head = done_head;
          auto it = std::find_if(slots.begin(), slots.end(), [&](const Slot& slot) {
            return slot.busy && slot.queue == q && slot.head == head;
          });
          if (it == slots.end()) {
            ++unexpected_;
            continue;
          }
          Check(*it, result);
          it->busy = false;
          ++completed_;
          finished.push_back(&*it);
        }
        for (Slot* slot : finished) {
          if (submitted_ < total_) Submit(*slot, static_cast<int>(slot - slots.data()), random);
        }
        if (!finished.empty()) blk_.driver().Kick(q);
      }
    }
    finished_ = true;
  }

  int completed() const { return completed_; }
  int errors() const { return errors_; }
  int unexpected() const { return unexpected_; }
  int post_failures() const { return post_failures_; }
  bool finished() const { return finished_.load(); }

 private:
  struct Slot {
    uint16_t queue = 0;
    uint64_t sector = 0;
    uint16_t head = 0;
    bool busy = false;
    bool reading = false;
    std::vector<uint8_t> expected;
    uint8_t generation = 0;
  };

  void Submit(Slot& slot, int index, std::mt19937& random) {
    BlkRequest request;
    request.indirect = random() % 2;
    request.segment_size = random() % 2 ? 4096 : 0;
    if (!slot.reading) {
      ++slot.generation;
      slot.expected = Pattern(8192, static_cast<uint8_t>(index * 31 + slot.generation));
      request.type = blk::kTypeOut;
      request.out_data = slot.expected;
    } else {
      request.type = blk::kTypeIn;
      request.in_length = 8192;
    }
    request.sector = slot.sector;
    absl::StatusOr<uint16_t> head = blk_.Post(slot.queue, request);
    if (!head.ok()) {
      ++post_failures_;
      return;
    }
    slot.head = *head;
    slot.busy = true;
    ++submitted_;
  }

  void Check(Slot& slot, const BlkResult& result) {
    if (result.status != blk::kStatusOk) ++errors_;
    if (slot.reading && result.in_data != slot.expected) ++errors_;
    slot.reading = !slot.reading;
  }

  BlkDriver& blk_;
  const uint16_t queues_;
  const int depth_;
  const int total_;
  int submitted_ = 0;
  int completed_ = 0;
  int errors_ = 0;
  int unexpected_ = 0;
  int post_failures_ = 0;
  std::atomic<bool> finished_{false};
};

TEST_F(DataplaneTest, StopStartAndMoveWhile64RequestsAreInFlight) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  options.blk.num_queues = 2;
  options.image_bytes = 16 << 20;
  // 256 entries: 32 requests per queue of up to 4 direct descriptors fit.
  StartDevice(options, kLinuxFeatures, 2, 256);

  constexpr int kTotal = 6000;
  LoadDriver load(blk(), 2, 64, kTotal);
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
  EXPECT_EQ(testbed_->blk().stats().completed, uint64_t{kTotal});
  EXPECT_EQ(testbed_->blk().stats().errors, 0u);
}

TEST_F(DataplaneTest, ResetFromAVcpuThreadWhileRequestsRunOnTheIOThread) {
  BlkTestbedOptions options;
  options.iothread = &iothread(0);
  StartDevice(options, kLinuxFeatures, 1, 64);
  std::atomic<bool> done{false};
  int answered_after_reset = -1;
  std::thread vcpu([&] {
    for (int i = 0; i < 32; ++i) {
      (void)blk().Post(0, {.type = blk::kTypeOut, .sector = uint64_t(i) * 8,
                           .out_data = Pattern(4096, i)});
    }
    driver().Kick(0);
    driver().Write32(mmio::kStatus, 0);  // waits for the main loop, no lock held
    // After the reset returned, every request the device took is published
    // and the used index never moves again.
    const uint16_t used = driver().queue(0).used_index();
    absl::SleepFor(absl::Milliseconds(20));
    answered_after_reset = driver().queue(0).used_index() - used;
    done = true;
  });
  while (!done) {
    main_->Poll(/*blocking=*/false);
    std::this_thread::yield();
  }
  vcpu.join();
  EXPECT_EQ(answered_after_reset, 0);
  EXPECT_EQ(driver().status(), 0);
  EXPECT_EQ(testbed_->blk().stats().in_flight, 0u);
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, 64).ok());
  EXPECT_EQ(blk().Run(0, {.type = blk::kTypeFlush})->status, blk::kStatusOk);
}

}  // namespace
}  // namespace kvmini::test

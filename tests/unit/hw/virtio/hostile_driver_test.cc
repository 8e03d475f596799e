// A hostile or broken virtio-mmio driver, one table row each, against a
// virtio-blk device ("victim") while a second device ("bystander") shares
// the main loop: registers written out of order (queue set-up after
// DRIVER_OK, QueueNum above QueueNumMax, zero and non-power-of-two sizes,
// rings outside RAM, in the MMIO hole or misaligned), the status driven
// backwards or skipping steps, notifications for absent queues, narrow and
// legacy register accesses, and notify storms on a reset device. Each row
// checks what the guest sees (ignored, or DEVICE_NEEDS_RESET), that the
// log names the problem and stays short when the guest repeats it
// thousands of times, that the bystander still serves a request, and that
// the victim works again after a driver reset. Also a device reset racing a
// dataplane start on an IOThread, and a notify storm on a stopped
// dataplane (label concurrency: TSan).
#include <atomic>
#include <functional>
#include <set>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "util/iothread.h"

namespace kvmini::test {
namespace {

namespace blk = hw::virtio::blk;
namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;

constexpr uint16_t kQueueSize = 64;
// Guest RAM of both testbeds (BlkTestbedOptions::ram_bytes).
constexpr uint64_t kRamBytes = 128 << 20;
// Where a guest-physical address is neither RAM nor anything of this
// device: the machine's 32-bit MMIO hole, where the device windows live.
constexpr uint64_t kMmioHoleAddress = 0xD0000000;
// A flood: far more than any rate limit lets through.
constexpr int kFlood = 5000;
// The most lines one kind of guest error may produce during a row (the
// transport allows 10 of each kind per 10 s, broken queues 10 per 10 s).
constexpr int kMostLogLines = 10;

size_t CountOccurrences(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

enum class Effect {
  kIgnored,     // the device carries on as before the misbehaviour
  kNeedsReset,  // DEVICE_NEEDS_RESET: the device stops until the driver resets it
  kNotStarted,  // the step is refused: the device never becomes DRIVER_OK
};

class HostileDriverTest;

struct HostileRow {
  const char* name;
  // Drives the victim's registers (the victim is negotiated and started
  // first when `start_first`).
  std::function<void(HostileDriverTest&)> misbehave;
  std::string log;  // must appear in the log, at most kMostLogLines times
  Effect effect;
  bool start_first = false;
};

class HostileDriverTest : public MainLoopTest {
 protected:
  void SetUp() override {
    MainLoopTest::SetUp();
    auto bystander = BlkTestbed::Create({});
    ASSERT_TRUE(bystander.ok()) << bystander.status();
    bystander_ = std::move(*bystander);
    ASSERT_TRUE(bystander_->blk_driver().Start(kLinuxFeatures, 1, kQueueSize).ok());
  }
  void TearDown() override {
    bystander_.reset();
    testbed_.reset();  // before the IOThread it may be attached to
    iothread_.reset();
    MainLoopTest::TearDown();
  }

 public:
  VirtioDriver& victim() { return driver(); }
  void Write(uint64_t offset, uint32_t value) { victim().Write32(offset, value); }
  void WriteStatus(uint8_t value) { Write(mmio::kStatus, value); }
  // Negotiates, then programs queue 0 by hand with `size` and ring
  // addresses of the driver's choosing (valid ones by default), ready.
  void ProgramQueue(uint32_t size, uint64_t descriptors = 0, uint64_t avail = 0,
                    uint64_t used = 0) {
    ASSERT_TRUE(victim().Negotiate(kLinuxFeatures).ok());
    GuestAllocator& allocator = testbed_->allocator();
    if (descriptors == 0) descriptors = allocator.Allocate(16 * kQueueSize, 16);
    if (avail == 0) avail = allocator.Allocate(6 + 2 * kQueueSize, 2);
    if (used == 0) used = allocator.Allocate(6 + 8 * kQueueSize, 4);
    Write(mmio::kQueueSel, 0);
    Write(mmio::kQueueNum, size);
    Write(mmio::kQueueDescLow, static_cast<uint32_t>(descriptors));
    Write(mmio::kQueueDescHigh, static_cast<uint32_t>(descriptors >> 32));
    Write(mmio::kQueueDriverLow, static_cast<uint32_t>(avail));
    Write(mmio::kQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
    Write(mmio::kQueueDeviceLow, static_cast<uint32_t>(used));
    Write(mmio::kQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
    Write(mmio::kQueueReady, 1);
    victim().DriverOk();
  }
  uint32_t QueueNumMax() {
    Write(mmio::kQueueSel, 0);
    return victim().Read32(mmio::kQueueNumMax);
  }
  void NarrowWrite(uint64_t offset) {
    const uint8_t bytes[2] = {0xff, 0xff};
    testbed_->transport().Write(offset, bytes);
  }

 protected:
  // A read on `testbed`'s device answers with the bytes the image holds.
  void ExpectServes(BlkTestbed& testbed, const char* who) {
    auto read = testbed.blk_driver().Run(0, {.type = blk::kTypeIn, .sector = 0, .in_length = 512});
    ASSERT_TRUE(read.ok()) << who << ": " << read.status();
    EXPECT_EQ(read->status, blk::kStatusOk) << who;
  }

  // The victim with its dataplane on an IOThread of its own. Small request
  // buffers: tests that restart the driver often take fresh guest RAM each time.
  void CreateVictimOnAnIoThread() {
    auto iothread = util::IOThread::Create("hostile-io");
    ASSERT_TRUE(iothread.ok()) << iothread.status();
    iothread_ = std::move(*iothread);
    BlkTestbedOptions options;
    options.iothread = &iothread_->context();
    options.max_request_data = 4096;
    auto victim_testbed = BlkTestbed::Create(options);
    ASSERT_TRUE(victim_testbed.ok()) << victim_testbed.status();
    testbed_ = std::move(*victim_testbed);
  }

  void RunRow(const HostileRow& row) {
    SCOPED_TRACE(row.name);
    testbed_.reset();
    auto victim_testbed = BlkTestbed::Create({});
    ASSERT_TRUE(victim_testbed.ok()) << victim_testbed.status();
    testbed_ = std::move(*victim_testbed);
    if (row.start_first) {
      ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
    }

    ::testing::internal::CaptureStderr();
    row.misbehave(*this);
    const uint8_t device_status = victim().status();
    // Queue breakage is reported from the main loop: let it run.
    for (int i = 0; i < 10; ++i) main_->Poll(/*blocking=*/false);
    const std::string log = ::testing::internal::GetCapturedStderr();

    EXPECT_GE(CountOccurrences(log, row.log), 1u) << "the log must say what happened:\n" << log;
    EXPECT_LE(CountOccurrences(log, row.log), static_cast<size_t>(kMostLogLines))
        << "the log must be rate-limited";
    switch (row.effect) {
      case Effect::kIgnored:
        EXPECT_EQ(device_status & status::kDeviceNeedsReset, 0) << int(device_status);
        if (row.start_first) {
          EXPECT_NE(device_status & status::kDriverOk, 0) << int(device_status);
          ExpectServes(*testbed_, "the victim, without a reset");
        }
        break;
      case Effect::kNeedsReset:
        EXPECT_NE(device_status & status::kDeviceNeedsReset, 0) << int(device_status);
        break;
      case Effect::kNotStarted:
        EXPECT_EQ(device_status & status::kDriverOk, 0) << int(device_status);
        break;
    }
    ExpectServes(*bystander_, "the bystander");
    // A driver reset brings the victim back.
    ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
    EXPECT_EQ(victim().status() & status::kDeviceNeedsReset, 0);
    ExpectServes(*testbed_, "the victim, after a reset");
  }

  std::unique_ptr<BlkTestbed> bystander_;
  std::unique_ptr<util::IOThread> iothread_;
};

const HostileRow kRows[] = {
    {"QueueReconfiguredAfterDriverOk",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) {
         t.Write(mmio::kQueueNum, 8);
         t.Write(mmio::kQueueDescLow, 0x1230);
         t.Write(mmio::kQueueReady, 0);
       }
     },
     "reconfigured after DRIVER_OK; ignored", Effect::kIgnored, /*start_first=*/true},
    {"QueueNumAboveQueueNumMax", [](HostileDriverTest& t) { t.ProgramQueue(t.QueueNumMax() * 2); },
     "above QueueNumMax", Effect::kNeedsReset},
    {"QueueSizeZero", [](HostileDriverTest& t) { t.ProgramQueue(0); },
     "queue size 0 is not a power of two", Effect::kNeedsReset},
    {"QueueSizeNotAPowerOfTwo", [](HostileDriverTest& t) { t.ProgramQueue(48); },
     "queue size 48 is not a power of two", Effect::kNeedsReset},
    {"DescriptorTableRunsPastTheEndOfRam",
     [](HostileDriverTest& t) { t.ProgramQueue(kQueueSize, kRamBytes - 16); },
     "descriptor table at", Effect::kNeedsReset},
    {"UsedRingInTheMmioHole",
     [](HostileDriverTest& t) { t.ProgramQueue(kQueueSize, 0, 0, kMmioHoleAddress); },
     "used ring at 0xd0000000", Effect::kNeedsReset},
    {"AvailableRingMisaligned",
     [](HostileDriverTest& t) { t.ProgramQueue(kQueueSize, 0, 0x10001, 0); },
     "available ring at 0x10001", Effect::kNeedsReset},
    {"StatusDrivenBackwards",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) {
         t.WriteStatus(status::kAcknowledge | status::kDriver);
       }
     },
     "clears bits without a reset; ignored", Effect::kIgnored, /*start_first=*/true},
    {"DriverOkWithoutFeaturesOk",
     [](HostileDriverTest& t) {
       t.WriteStatus(0);
       t.WriteStatus(status::kAcknowledge);
       t.WriteStatus(status::kAcknowledge | status::kDriver);
       t.WriteStatus(status::kAcknowledge | status::kDriver | status::kDriverOk);
     },
     "DRIVER_OK set without FEATURES_OK", Effect::kNotStarted},
    {"FeaturesOkBeforeDriver",
     [](HostileDriverTest& t) {
       t.WriteStatus(0);
       t.WriteStatus(status::kAcknowledge | status::kFeaturesOk);
     },
     "FEATURES_OK set before DRIVER", Effect::kNotStarted},
    {"FeaturesChangedAfterFeaturesOk",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) t.Write(mmio::kDriverFeatures, 0);
     },
     "DriverFeatures written after FEATURES_OK", Effect::kIgnored, /*start_first=*/true},
    {"NotifyForAnAbsentQueue",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) t.Write(mmio::kQueueNotify, 99);
     },
     "QueueNotify for queue 99", Effect::kIgnored, /*start_first=*/true},
    {"QueueRegistersOfAnAbsentQueue",
     [](HostileDriverTest& t) {
       t.Write(mmio::kQueueSel, 7);
       for (int i = 0; i < kFlood; ++i) t.Write(mmio::kQueueNum, 8);
       t.Write(mmio::kQueueSel, 0);
     },
     "for absent queue 7", Effect::kIgnored, /*start_first=*/true},
    {"NarrowRegisterWrites",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) t.NarrowWrite(mmio::kStatus);
     },
     "registers are 32-bit", Effect::kIgnored, /*start_first=*/true},
    {"LegacyRegisters",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) t.Write(mmio::kLegacyQueuePfn, 0x100);
     },
     "legacy (version 1) virtio-mmio register", Effect::kIgnored, /*start_first=*/true},
    {"UnknownRegister",
     [](HostileDriverTest& t) {
       for (int i = 0; i < kFlood; ++i) t.Write(0x0f0, 1);
     },
     "unknown register offset f0", Effect::kIgnored, /*start_first=*/true},
};

TEST_F(HostileDriverTest, EachRowIsContainedLoggedAndRecoverable) {
  for (const HostileRow& row : kRows) {
    RunRow(row);
    if (HasFatalFailure()) return;
  }
}

// Kicks by the ten thousand on a device the driver has reset (its queues
// gone): nothing is served, nothing in guest memory changes, the bystander
// is unaffected and the victim starts again normally.
TEST_F(HostileDriverTest, NotifyStormOnAResetDeviceTouchesNothing) {
  auto victim_testbed = BlkTestbed::Create({});
  ASSERT_TRUE(victim_testbed.ok()) << victim_testbed.status();
  testbed_ = std::move(*victim_testbed);
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
  ASSERT_TRUE(blk().Post(0, {.type = blk::kTypeIn, .sector = 0, .in_length = 512}).ok());
  DriverQueue& queue = driver().queue(0);
  const uint64_t rings = queue.descriptor_table();
  WriteStatus(0);
  std::vector<uint8_t> before(64 * 1024), after(64 * 1024);
  ASSERT_TRUE(testbed_->memory().Read(rings, before).ok());
  for (int i = 0; i < 10 * kFlood; ++i) {
    driver().Kick(0);
    if (i % 10 == 0) driver().Kick(0, VirtioDriver::KickVia::kRegister);
    if (i % 100 == 0) main_->Poll(/*blocking=*/false);
  }
  while (main_->Poll(/*blocking=*/false)) {
  }
  ASSERT_TRUE(testbed_->memory().Read(rings, after).ok());
  EXPECT_EQ(before, after);
  EXPECT_EQ(testbed_->blk().stats().in_flight, 0u);
  ExpectServes(*bystander_, "the bystander");
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
  ExpectServes(*testbed_, "the victim, after a reset");
}

// Kicks by the thousand, through the eventfd and the register, on a device
// whose dataplane the operator stopped (its queues served by the main loop
// meanwhile): every request completes exactly once, the bystander is
// unaffected, and the dataplane starts again afterwards.
TEST_F(HostileDriverTest, NotifyStormOnAStoppedDataplaneServesEachRequestOnce) {
  CreateVictimOnAnIoThread();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
  hw::virtio::MmioTransport& transport = testbed_->transport();
  transport.StopDataplaneAndWait();
  ASSERT_FALSE(transport.dataplane_status().running);

  constexpr int kRequests = 32;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(
        blk()
            .Post(0,
                  {.type = blk::kTypeIn, .sector = uint64_t(i), .in_length = 512, .indirect = true})
            .ok());
  }
  std::set<uint16_t> completed;
  int duplicates = 0;
  for (int i = 0; i < 10 * kFlood; ++i) {
    driver().Kick(0,
                  i % 10 == 0 ? VirtioDriver::KickVia::kRegister : VirtioDriver::KickVia::kEventfd);
    if (i % 100 == 0) main_->Poll(/*blocking=*/false);
    for (const auto& [head, result] : blk().Collect(0)) {
      EXPECT_EQ(result.status, blk::kStatusOk);
      if (!completed.insert(head).second) ++duplicates;
    }
  }
  ASSERT_TRUE(driver().WaitUntil(
      [&] {
        for (const auto& [head, result] : blk().Collect(0)) {
          if (!completed.insert(head).second) ++duplicates;
        }
        return completed.size() == kRequests;
      },
      absl::Seconds(10)));
  EXPECT_EQ(duplicates, 0);
  EXPECT_EQ(transport.dataplane_status().in_flight, 0u);
  ExpectServes(*bystander_, "the bystander");
  transport.StartDataplaneAndWait();
  EXPECT_TRUE(transport.dataplane_status().running);
  ExpectServes(*testbed_, "the victim, on its IOThread again");
}

// A vCPU resets the device while the main loop is starting its dataplane on
// an IOThread (requests in flight): the reset waits for the start, then
// drains; afterwards the device is reset and idle, and a new driver start
// brings the dataplane back. Many rounds, so the reset lands at different
// points of the start.
TEST_F(HostileDriverTest, ResetWhileTheDataplaneIsBeingStarted) {
  CreateVictimOnAnIoThread();
  ASSERT_FALSE(HasFatalFailure());
  hw::virtio::MmioTransport& transport = testbed_->transport();

  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE(round);
    ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
    transport.StopDataplaneAndWait();
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(
          blk().Post(0, {.type = blk::kTypeIn, .sector = uint64_t(i), .in_length = 512}).ok());
    }
    driver().Kick(0);
    std::atomic<bool> go{false};
    std::atomic<bool> reset_returned{false};
    std::thread vcpu([&] {
      while (!go.load()) std::this_thread::yield();
      for (int spin = 0; spin < round * 50; ++spin) std::this_thread::yield();
      driver().Write32(mmio::kStatus, 0);
      reset_returned = true;
    });
    bool started = false;
    go = true;
    transport.StartDataplane([&] { started = true; });
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while ((!reset_returned || !started) && absl::Now() < deadline) {
      main_->Poll(/*blocking=*/false);
      std::this_thread::yield();
    }
    vcpu.join();
    ASSERT_TRUE(started && reset_returned) << "start or reset never finished";
    EXPECT_EQ(driver().status(), 0);
    EXPECT_EQ(transport.dataplane_status().in_flight, 0u);
    EXPECT_FALSE(transport.dataplane_status().running) << "a reset device has no dataplane";
  }
  ASSERT_TRUE(blk().Start(kLinuxFeatures, 1, kQueueSize).ok());
  EXPECT_TRUE(transport.dataplane_status().running);
  ExpectServes(*testbed_, "the victim, after the last reset");
  ExpectServes(*bystander_, "the bystander");
}

}  // namespace
}  // namespace kvmini::test

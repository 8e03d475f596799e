// Malformed virtio-scsi requests, one table row each, against the device
// on the real backend. The documented outcomes (virtio_scsi.h):
//  - kFailure: the request can be answered but not served: response
//    FAILURE in the fixed 12 bytes (control queue: in the response byte),
//    and the queue goes on serving;
//  - kServed: unusual but valid layouts (headers split across buffers)
//    are served normally;
//  - kNeedsReset: no room for an answer: DEVICE_NEEDS_RESET and a config
//    interrupt; after a driver reset the device works again.
// Never a crash, never an access outside guest RAM (the ASan build checks).
#include <functional>

#include "gtest/gtest.h"
#include "tests/unit/hw/virtio/scsi_test_support.h"

namespace kvmini::test {
namespace {

namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;
namespace response = vs::response;
namespace scsi_status = hw::scsi::status;
using Buffer = DriverQueue::Buffer;

constexpr uint16_t kQueueSize = 16;
// Descriptors the rows write by hand; the driver's own posts use the rest.
constexpr uint16_t kFirstRaw = 8;
constexpr uint16_t kRawCount = 8;
constexpr uint64_t kRamBytes = 64 << 20;

enum class Outcome { kFailure, kServed, kNeedsReset };

// What a row's builder has at hand: valid buffers in guest RAM and raw
// access to one queue (descriptors kFirstRaw.. are the row's to write).
struct RawChain {
  DriverQueue& queue;
  uint64_t request;   // 24-byte TMF / 51-byte TEST UNIT READY command header
  uint64_t response;  // 108 bytes, poisoned
  uint64_t data;      // 4 KiB
  uint64_t ram_end = kRamBytes;

  // Chains `buffers` through the raw descriptors and makes it available.
  void Post(std::initializer_list<Buffer> buffers) {
    uint16_t index = kFirstRaw;
    for (auto it = buffers.begin(); it != buffers.end(); ++it, ++index) {
      const bool last = it + 1 == buffers.end();
      queue.WriteDescriptor(
          index, {it->guest_address, it->length,
                  static_cast<uint16_t>((it->writable ? hw::virtio::kDescriptorFlagWrite : 0) |
                                        (last ? 0 : hw::virtio::kDescriptorFlagNext)),
                  static_cast<uint16_t>(index + 1)});
    }
    queue.PublishHead(kFirstRaw);
  }
};

struct MalformedCase {
  const char* name;
  Outcome outcome;
  std::function<void(RawChain&)> build;
};

Buffer Readable(uint64_t address, uint32_t length) { return {address, length, false}; }
Buffer Writable(uint64_t address, uint32_t length) { return {address, length, true}; }

// Rows for a request queue; `request` holds a TEST UNIT READY header.
const MalformedCase kCommandCases[] = {
    {"Regular", Outcome::kServed,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Writable(c.response, 108)}); }},
    {"HeaderAndResponseSplitAcrossBuffers", Outcome::kServed,
     [](RawChain& c) {
       c.Post({Readable(c.request, 10), Readable(c.request + 10, 41), Writable(c.response, 5),
               Writable(c.response + 5, 103)});
     }},
    {"HeaderShorterThanCdbSize", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 50), Writable(c.response, 108)}); }},
    {"OnlyLunAndTag", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 16), Writable(c.response, 108)}); }},
    {"NoReadableBuffer", Outcome::kFailure,
     [](RawChain& c) { c.Post({Writable(c.response, 108)}); }},
    {"ResponseShorterThanSenseSize", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Writable(c.response, 107)}); }},
    {"ResponseOfTheFixedTwelveBytesOnly", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Writable(c.response, 12)}); }},
    {"DataInBothDirections", Outcome::kFailure,
     [](RawChain& c) {
       c.Post({Readable(c.request, 51), Readable(c.data, 512), Writable(c.response, 108),
               Writable(c.data + 512, 512)});
     }},
    {"DataBufferOutsideRam", Outcome::kFailure,
     [](RawChain& c) {
       c.Post({Readable(c.request, 51), Writable(c.response, 108),
               Writable(c.ram_end - 256, 512)});
     }},
    {"HeaderOutsideRam", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.ram_end, 51), Writable(c.response, 108)}); }},
    {"ReadableAfterWritable", Outcome::kFailure,
     [](RawChain& c) {
       c.Post({Readable(c.request, 51), Writable(c.response, 108), Readable(c.data, 512)});
     }},
    {"ResponseOfElevenBytes", Outcome::kNeedsReset,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Writable(c.response, 11)}); }},
    {"NoWritableBuffer", Outcome::kNeedsReset,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Readable(c.data, 512)}); }},
    {"ResponseOutsideRam", Outcome::kNeedsReset,
     [](RawChain& c) { c.Post({Readable(c.request, 51), Writable(c.ram_end - 8, 108)}); }},
    {"ResponseStartsWithAnEmptyBuffer", Outcome::kServed,
     [](RawChain& c) {
       c.Post({Readable(c.request, 51), Writable(c.data, 0), Writable(c.response, 108)});
     }},
};

// Rows for the control queue; `request` holds an ABORT TASK SET for LUN 0.
const MalformedCase kControlCases[] = {
    {"RegularTmf", Outcome::kServed,
     [](RawChain& c) { c.Post({Readable(c.request, 24), Writable(c.response, 1)}); }},
    {"TmfSplitAcrossBuffers", Outcome::kServed,
     [](RawChain& c) {
       c.Post({Readable(c.request, 3), Readable(c.request + 3, 21), Writable(c.response, 1)});
     }},
    {"TmfOfEightBytes", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 8), Writable(c.response, 1)}); }},
    {"RequestShorterThanItsType", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.request, 2), Writable(c.response, 1)}); }},
    {"NoReadableBuffer", Outcome::kFailure,
     [](RawChain& c) { c.Post({Writable(c.response, 1)}); }},
    {"RequestOutsideRam", Outcome::kFailure,
     [](RawChain& c) { c.Post({Readable(c.ram_end, 24), Writable(c.response, 1)}); }},
    {"TmfWithoutResponseBuffer", Outcome::kNeedsReset,
     [](RawChain& c) { c.Post({Readable(c.request, 24)}); }},
    {"TmfResponseOutsideRam", Outcome::kNeedsReset,
     [](RawChain& c) { c.Post({Readable(c.request, 24), Writable(c.ram_end, 1)}); }},
};

class ScsiMalformedTest : public ScsiDeviceTest,
                          public ::testing::WithParamInterface<MalformedCase> {
 protected:
  void SetUpDevice() {
    ScsiTestbedOptions options;
    options.ram_bytes = kRamBytes;
    options.max_request_data = 4096;
    StartDevice(options, 1, kQueueSize);
    for (uint16_t q = 0; q < 3; ++q) driver().queue(q).Reserve(kFirstRaw, kRawCount);
  }
  RawChain MakeChain(uint16_t queue, std::span<const uint8_t> request) {
    GuestAllocator& allocator = testbed_->allocator();
    RawChain chain{driver().queue(queue), allocator.Allocate(64, 16),
                   allocator.Allocate(108, 16), allocator.Allocate(4096, 4096)};
    EXPECT_TRUE(testbed_->memory().Write(chain.request, request).ok());
    EXPECT_TRUE(testbed_->memory().Write(chain.response, std::vector<uint8_t>(108, 0xee)).ok());
    return chain;
  }
  uint8_t ResponseByte(const RawChain& chain, uint64_t offset) {
    return *testbed_->memory().ReadObject<uint8_t>(chain.response + offset);
  }
  bool NeedsReset() { return driver().status() & status::kDeviceNeedsReset; }
  // Waits for the raw chain's used element; returns its length.
  std::optional<uint32_t> WaitForRawAnswer(uint16_t queue) {
    std::optional<uint32_t> length;
    driver().WaitUntil(
        [&] {
          for (const auto& element : driver().queue(queue).TakeUsed()) {
            if (element.id == kFirstRaw) length = element.length;
          }
          return length.has_value() || NeedsReset();
        },
        absl::Seconds(10));
    return length;
  }
  struct Answer {
    uint32_t served_length;   // used length of a served request
    uint32_t failure_length;  // and of a FAILURE answer
    uint64_t code_offset;     // where the response code is
    uint8_t served_code;
  };
  // Runs the row's chain on `queue` and checks the outcome; returns whether
  // the queue should still serve (it was answered).
  bool RunRow(RawChain& chain, uint16_t queue, const Answer& expected) {
    GetParam().build(chain);
    driver().Kick(queue);
    const std::optional<uint32_t> used = WaitForRawAnswer(queue);
    if (GetParam().outcome == Outcome::kNeedsReset) {
      EXPECT_FALSE(used.has_value());
      EXPECT_TRUE(NeedsReset());
      ExpectRecoveryAfterReset();
      return false;
    }
    EXPECT_TRUE(used.has_value());
    const bool served = GetParam().outcome == Outcome::kServed;
    EXPECT_EQ(used.value_or(0), served ? expected.served_length : expected.failure_length);
    EXPECT_EQ(ResponseByte(chain, expected.code_offset),
              served ? expected.served_code : response::kFailure);
    EXPECT_FALSE(NeedsReset());
    return true;
  }
  void ExpectRecoveryAfterReset() {
    EXPECT_NE(driver().AckInterrupt() & hw::virtio::kInterruptConfigChange, 0u);
    ASSERT_TRUE(scsi().Start(kLinuxScsiFeatures, 1, kQueueSize).ok());
    EXPECT_FALSE(NeedsReset());
    ScsiResponse ready = Run({.cdb = TestUnitReady()});
    EXPECT_EQ(ready.response, response::kOk);
    // The reset left a unit attention; the next one is clean.
    EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood);
  }
};

class ScsiMalformedCommandTest : public ScsiMalformedTest {};
class ScsiMalformedControlTest : public ScsiMalformedTest {};

TEST_P(ScsiMalformedCommandTest, IsAnsweredOrBreaksOnlyItsQueue) {
  SetUpDevice();
  ASSERT_FALSE(HasFailure());
  std::vector<uint8_t> header(51, 0);
  const auto lun = Lun(0, 0);
  std::copy(lun.begin(), lun.end(), header.begin());  // CDB: TEST UNIT READY
  RawChain chain = MakeChain(vs::kFirstRequestQueue, header);
  if (!RunRow(chain, vs::kFirstRequestQueue, {108, 12, vs::kResponseCode, response::kOk})) return;
  if (GetParam().outcome == Outcome::kServed) {
    EXPECT_EQ(ResponseByte(chain, vs::kResponseStatus), scsi_status::kGood);
  } else {
    EXPECT_EQ(ResponseByte(chain, 12), 0xee) << "nothing beyond the fixed response bytes";
  }
  EXPECT_EQ(Run({.cdb = TestUnitReady()}).status, scsi_status::kGood) << "the queue goes on";
  EXPECT_EQ(device().stats().in_flight, 0u);
}

TEST_P(ScsiMalformedControlTest, IsAnsweredOrBreaksOnlyItsQueue) {
  SetUpDevice();
  ASSERT_FALSE(HasFailure());
  std::array<uint8_t, vs::kTmfRequestSize> tmf{};
  tmf[0] = vs::kControlTmf;
  tmf[vs::kTmfSubtype] = vs::tmf::kAbortTaskSet;
  const auto lun = Lun(0, 0);
  std::copy(lun.begin(), lun.end(), tmf.begin() + vs::kTmfLun);
  RawChain chain = MakeChain(vs::kControlQueue, tmf);
  if (!RunRow(chain, vs::kControlQueue, {1, 1, 0, response::kFunctionComplete})) return;
  absl::StatusOr<ControlResponse> next =
      scsi().RunTaskManagement(vs::tmf::kQueryTaskSet, Lun(0, 0), 0);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->response, response::kFunctionComplete) << "the control queue goes on";
}

std::string CaseName(const ::testing::TestParamInfo<MalformedCase>& info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Rows, ScsiMalformedCommandTest, ::testing::ValuesIn(kCommandCases),
                         CaseName);
INSTANTIATE_TEST_SUITE_P(Rows, ScsiMalformedControlTest, ::testing::ValuesIn(kControlCases),
                         CaseName);

// Asynchronous notification answers put the response byte at offset 4.
TEST_F(ScsiMalformedTest, NotificationRequestsOfTheWrongSize) {
  SetUpDevice();
  ASSERT_FALSE(HasFailure());
  std::array<uint8_t, vs::kAnRequestSize> query{};
  query[0] = vs::kControlAnQuery;
  RawChain chain = MakeChain(vs::kControlQueue, query);
  // A request of 8 bytes: FAILURE, in the AN layout.
  chain.Post({Readable(chain.request, 8), Writable(chain.response, 5)});
  driver().Kick(vs::kControlQueue);
  std::optional<uint32_t> used = WaitForRawAnswer(vs::kControlQueue);
  ASSERT_TRUE(used.has_value());
  EXPECT_EQ(*used, 5u);
  EXPECT_EQ(ResponseByte(chain, vs::kAnResponseCode), response::kFailure);
  EXPECT_EQ(ResponseByte(chain, vs::kAnResponseEventActual), 0);
  // A response buffer of 4 bytes has no room for the response byte.
  chain.Post({Readable(chain.request, 16), Writable(chain.response, 4)});
  driver().Kick(vs::kControlQueue);
  used = WaitForRawAnswer(vs::kControlQueue);
  EXPECT_FALSE(used.has_value());
  EXPECT_TRUE(NeedsReset());
  ExpectRecoveryAfterReset();
}

// A head made available again while its command waits for the backend:
// answering it twice is impossible, so the queue breaks; the command in
// flight still completes, and a reset brings the device back.
TEST_F(ScsiMalformedTest, HeadReusedWhileInFlightBreaksTheQueue) {
  ScsiTestbedOptions options;
  options.backend = TestBackend::kMemory;
  StartDevice(options, 1, kQueueSize);
  MemoryBlockBackend& backend = *testbed_->memory_backend();
  backend.HoldCompletions(true);
  absl::StatusOr<uint16_t> head = scsi().Post(0, {.cdb = Read10(0, 1), .data_in_length = 512});
  ASSERT_TRUE(head.ok());
  scsi().Kick(0);
  ASSERT_TRUE(driver().WaitUntil([&] { return backend.held() == 1; }, absl::Seconds(10)));
  driver().queue(vs::kFirstRequestQueue).PublishHead(*head);
  scsi().Kick(0);
  ASSERT_TRUE(driver().WaitUntil([&] { return NeedsReset(); }, absl::Seconds(10)));
  backend.HoldCompletions(false);
  backend.ReleaseHeld();
  ASSERT_TRUE(driver().WaitUntil([&] { return device().stats().in_flight == 0; },
                                 absl::Seconds(10)));
  EXPECT_EQ(device().stats().completed, 1u) << "the command in flight is answered once";
  ExpectRecoveryAfterReset();
}

}  // namespace
}  // namespace kvmini::test

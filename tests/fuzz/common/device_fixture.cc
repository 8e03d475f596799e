#include "tests/fuzz/common/device_fixture.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "hw/virtio/virtio_constants.h"
#include "tests/fuzz/common/fuzz_check.h"
#include "tests/fuzz/common/fuzz_main_loop.h"

namespace kvmini::fuzz {
namespace {
namespace mmio = hw::virtio::mmio;
namespace status = hw::virtio::status;

// Guest RAM as it was at the last TakeSnapshot(); one buffer for the
// process, so the check costs two copies of 132 KiB and no allocation.
std::vector<uint8_t>& Snapshot() {
  static std::vector<uint8_t>* snapshot = new std::vector<uint8_t>();
  return *snapshot;
}

void TakeSnapshot() {
  std::vector<uint8_t>& snapshot = Snapshot();
  snapshot.clear();
  for (const hw::GuestMemory::Region& region : FuzzGuestMemory().regions()) {
    snapshot.insert(snapshot.end(), region.host, region.host + region.size);
  }
}

bool RamMatchesSnapshot() {
  const uint8_t* expected = Snapshot().data();
  for (const hw::GuestMemory::Region& region : FuzzGuestMemory().regions()) {
    if (std::memcmp(region.host, expected, region.size) != 0) return false;
    expected += region.size;
  }
  return true;
}
}  // namespace

DeviceFixture::DeviceFixture(MakeDevice make_device, uint64_t disk_bytes, bool read_only)
    : driver_(FuzzGuestMemory()) {
  util::AioContext& main = FuzzMainLoop();
  ClearFuzzGuestMemory();
  auto backend = std::make_unique<test::MemoryBlockBackend>(disk_bytes, read_only, main);
  backend_ = backend.get();
  std::unique_ptr<hw::virtio::VirtioDevice> device = make_device(std::move(backend));
  FUZZ_REQUIRE(device != nullptr);
  auto transport = hw::virtio::MmioTransport::Create(FuzzGuestMemory(), std::move(device), {});
  FUZZ_REQUIRE(transport.ok());
  transport_ = std::move(*transport);
}

DeviceFixture::~DeviceFixture() { ResetAndCheck(); }

uint32_t DeviceFixture::Read32(uint64_t offset) {
  uint32_t value = 0;
  transport_->Read(offset, {reinterpret_cast<uint8_t*>(&value), 4});
  return value;
}

void DeviceFixture::Write32(uint64_t offset, uint32_t value) {
  transport_->Write(offset, {reinterpret_cast<const uint8_t*>(&value), 4});
}

void DeviceFixture::BringUp(uint64_t wanted, uint32_t queue_size, uint16_t queue_count) {
  wanted_ = wanted;
  queue_size_ = queue_size;
  queue_count_ = queue_count;
  ResetAndCheck();
  Write32(mmio::kStatus, status::kAcknowledge);
  Write32(mmio::kStatus, status::kAcknowledge | status::kDriver);
  uint64_t offered = 0;
  for (uint32_t half = 0; half < 2; ++half) {
    Write32(mmio::kDeviceFeaturesSel, half);
    offered |= uint64_t{Read32(mmio::kDeviceFeatures)} << (32 * half);
  }
  uint64_t accepted = offered & (wanted | hw::virtio::feature::kVersion1);
  for (uint32_t half = 0; half < 2; ++half) {
    Write32(mmio::kDriverFeaturesSel, half);
    Write32(mmio::kDriverFeatures, static_cast<uint32_t>(accepted >> (32 * half)));
  }
  Write32(mmio::kStatus, status::kAcknowledge | status::kDriver | status::kFeaturesOk);
  FUZZ_REQUIRE(Read32(mmio::kStatus) & status::kFeaturesOk);
  // A driver lays its rings out afresh after a reset.
  driver_.Clear();
  std::vector<uint8_t> zeroes(layout::kDataArea - layout::kRingArea);
  FuzzGuestMemory().Write(layout::kRingArea, zeroes).IgnoreError();
  for (uint16_t index = 0; index < queue_count; ++index) {
    Write32(mmio::kQueueSel, index);
    if (Read32(mmio::kQueueNumMax) == 0) break;
    RingAddresses ring = GuestDriver::StandardRing(index, queue_size);
    Write32(mmio::kQueueNum, queue_size);
    Write32(mmio::kQueueDescLow, static_cast<uint32_t>(ring.descriptor_table));
    Write32(mmio::kQueueDescHigh, 0);
    Write32(mmio::kQueueDriverLow, static_cast<uint32_t>(ring.avail_ring));
    Write32(mmio::kQueueDriverHigh, 0);
    Write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(ring.used_ring));
    Write32(mmio::kQueueDeviceHigh, 0);
    Write32(mmio::kQueueReady, 1);
    driver_.AddRing(ring);
  }
  Write32(mmio::kStatus,
          status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk);
}

void DeviceFixture::ReleaseHeld() {
  holding_ = false;
  backend_->HoldCompletions(false);
  backend_->ReleaseHeld();
}

void DeviceFixture::Settle() {
  ReleaseHeld();
  RunUntilIdle();
  FUZZ_REQUIRE(transport_->dataplane_status().in_flight == 0);
}

void DeviceFixture::ResetAndCheck() {
  ReleaseHeld();
  Write32(mmio::kStatus, 0);
  FUZZ_REQUIRE(Read32(mmio::kStatus) == 0);
  FUZZ_REQUIRE(Read32(mmio::kInterruptStatus) == 0);
  FUZZ_REQUIRE(transport_->dataplane_status().in_flight == 0);
  // Kicks after a reset must not reach the stopped queues.
  TakeSnapshot();
  for (const auto& notifier : transport_->queue_notifiers()) {
    uint64_t one = 1;
    FUZZ_REQUIRE(write(notifier.fd, &one, sizeof(one)) == sizeof(one));
  }
  RunUntilIdle();
  FUZZ_REQUIRE(RamMatchesSnapshot());
}

void DeviceFixture::RunOps(FuzzInput& input) {
  while (!input.done()) {
    uint8_t op = input.U8() % (GuestDriver::kRingOps + kDeviceOps);
    if (op < GuestDriver::kRingOps) {
      driver_.RunRingOp(op, input);
    } else {
      RunDeviceOp(op - GuestDriver::kRingOps, input);
    }
  }
  Settle();
}

void DeviceFixture::RunDeviceOp(uint8_t op, FuzzInput& input) {
  switch (op) {
    case 0: {
      uint8_t queue = input.U8();
      auto notifiers = transport_->queue_notifiers();
      uint64_t one = 1;
      FUZZ_REQUIRE(write(notifiers[queue % notifiers.size()].fd, &one, sizeof(one)) == sizeof(one));
      return;
    }
    case 1: {
      uint8_t size = input.U8() % 8 + 1;
      uint64_t value = input.U64();
      transport_->Write(mmio::kQueueNotify, {reinterpret_cast<const uint8_t*>(&value), size});
      return;
    }
    case 2:
      RunUntilIdle();
      FUZZ_REQUIRE(holding_ || transport_->dataplane_status().in_flight == 0);
      return;
    case 3: {
      static constexpr int kErrors[] = {-EIO, -ENOSPC, -EINVAL, -EAGAIN};
      uint8_t choice = input.U8();
      backend_->FailNext(choice % 4 + 1, kErrors[(choice >> 2) % 4]);
      return;
    }
    case 4: {
      uint8_t offset = input.U8();
      uint8_t buffer[8];
      transport_->Read(mmio::kConfig + offset, {buffer, input.U8() % 8 + 1u});
      return;
    }
    case 5: {
      uint8_t offset = input.U8();
      uint8_t size = input.U8() % 8 + 1;
      uint64_t value = input.U64();
      transport_->Write(mmio::kConfig + offset, {reinterpret_cast<const uint8_t*>(&value), size});
      return;
    }
    case kBringUpOp:
      BringUp(wanted_, queue_size_, queue_count_);
      return;
    case 7:
      holding_ = true;
      backend_->HoldCompletions(true);
      return;
    default:
      ReleaseHeld();
      return;
  }
}

}  // namespace kvmini::fuzz

// Fuzzes the virtio-mmio transport's register file and life cycle: reads
// and writes of any offset, size and value (registers and config space),
// Status driven in any order (FEATURES_OK before DRIVER, DRIVER_OK without
// features, bits cleared without a reset), queue set-up at any time with
// any QueueNum and ring addresses (outside RAM, misaligned, overlapping),
// mixed with the guest driver's ring operations, kicks and resets, on a
// virtio-blk (one or two queues) or virtio-scsi device. Checks what a
// driver relies on: the identification registers never change, registers
// read with the wrong size read 0, Status holds only bits the driver wrote
// since the last reset (plus DEVICE_NEEDS_RESET) and reads 0 right after a
// reset, QueueNumMax is 0 exactly for absent queues, plus the device
// fixture's checks (nothing in flight when idle, resets complete).
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "hw/virtio/virtio_blk.h"
#include "hw/virtio/virtio_constants.h"
#include "hw/virtio/virtio_scsi.h"
#include "tests/fuzz/common/device_fixture.h"
#include "tests/fuzz/common/fuzz_check.h"
#include "tests/fuzz/common/fuzz_input.h"

namespace {
using kvmini::fuzz::DeviceFixture;
using kvmini::fuzz::FuzzInput;
using kvmini::fuzz::GuestDriver;
namespace mmio = kvmini::hw::virtio::mmio;
namespace status = kvmini::hw::virtio::status;

class RegisterDriver {
 public:
  RegisterDriver(DeviceFixture& fixture, uint16_t num_queues)
      : fixture_(fixture), num_queues_(num_queues) {}

  static constexpr uint8_t kOps = 4;

  // The fixture's bring-up (device op 6) wrote these status bits.
  void AfterBringUp() {
    written_status_ =
        status::kAcknowledge | status::kDriver | status::kFeaturesOk | status::kDriverOk;
  }

  void RunOp(uint8_t op, FuzzInput& input) {
    switch (op) {
      case 0:
        Read(input.U16() % 0x210, SizeChoice(input.U8()));
        return;
      case 1: {
        uint64_t offset = input.U16() % 0x210;
        size_t size = SizeChoice(input.U8());
        uint64_t value = input.U64();
        const bool status = offset == mmio::kStatus && size == 4;
        if (status) BeforeStatusWrite(static_cast<uint8_t>(value));
        fixture_.transport().Write(offset, {reinterpret_cast<const uint8_t*>(&value), size});
        if (status) AfterStatusWrite(static_cast<uint8_t>(value));
        return;
      }
      case 2: {
        uint8_t value = input.U8();
        BeforeStatusWrite(value);
        fixture_.Write32(mmio::kStatus, value);
        AfterStatusWrite(value);
        return;
      }
      default:
        SetUpQueue(input);
        return;
    }
  }

 private:
  static size_t SizeChoice(uint8_t choice) {
    static constexpr size_t kSizes[] = {4, 1, 2, 8, 3};
    return kSizes[choice % 5];
  }

  void Read(uint64_t offset, size_t size) {
    uint64_t value = 0;
    fixture_.transport().Read(offset, {reinterpret_cast<uint8_t*>(&value), size});
    if (offset >= mmio::kConfig) return;
    if (size != 4 || offset % 4 != 0) {
      FUZZ_REQUIRE(value == 0);
      return;
    }
    switch (offset) {
      case mmio::kMagicValue:
        FUZZ_REQUIRE(value == mmio::kMagic);
        break;
      case mmio::kVersion:
        FUZZ_REQUIRE(value == mmio::kVersion2);
        break;
      case mmio::kVendorId:
        FUZZ_REQUIRE(value == mmio::kVendor);
        break;
      case mmio::kStatus:
        FUZZ_REQUIRE((value & ~uint64_t{status::kDeviceNeedsReset} & ~uint64_t{written_status_}) ==
                     0);
        break;
      default:
        break;
    }
  }

  // A reset waits for the requests in flight: held completions must be
  // able to finish (a real disk always completes, eventually).
  void BeforeStatusWrite(uint8_t value) {
    if (value == 0) fixture_.ReleaseHeld();
  }

  void AfterStatusWrite(uint8_t value) {
    if (value == 0) {
      written_status_ = 0;
      FUZZ_REQUIRE(fixture_.Read32(mmio::kStatus) == 0);
      return;
    }
    written_status_ |= value;
    uint32_t now = fixture_.Read32(mmio::kStatus);
    FUZZ_REQUIRE((now & ~uint32_t{status::kDeviceNeedsReset} & ~uint32_t{written_status_}) == 0);
  }

  void SetUpQueue(FuzzInput& input) {
    uint8_t choice = input.U8();
    uint32_t queue = choice % (num_queues_ + 1);  // one past the last: absent
    fixture_.Write32(mmio::kQueueSel, queue);
    uint32_t max = fixture_.Read32(mmio::kQueueNumMax);
    FUZZ_REQUIRE((max == 0) == (queue >= num_queues_));
    uint32_t size = choice & 0x80 ? input.U16() : 1u << ((choice >> 3) % 10);
    kvmini::fuzz::RingAddresses ring = GuestDriver::StandardRing(queue, size);
    if (choice & 0x40) {
      ring.descriptor_table = input.U32();
      ring.avail_ring = input.U32();
      ring.used_ring = input.U32();
    }
    fixture_.Write32(mmio::kQueueNum, size);
    fixture_.Write32(mmio::kQueueDescLow, static_cast<uint32_t>(ring.descriptor_table));
    fixture_.Write32(mmio::kQueueDescHigh, 0);
    fixture_.Write32(mmio::kQueueDriverLow, static_cast<uint32_t>(ring.avail_ring));
    fixture_.Write32(mmio::kQueueDriverHigh, 0);
    fixture_.Write32(mmio::kQueueDeviceLow, static_cast<uint32_t>(ring.used_ring));
    fixture_.Write32(mmio::kQueueDeviceHigh, 0);
    fixture_.Write32(mmio::kQueueReady, input.U8() % 4 != 0);
    if (queue < num_queues_ && fixture_.driver().ring_count() < 8) fixture_.driver().AddRing(ring);
  }

  DeviceFixture& fixture_;
  const uint16_t num_queues_;
  uint8_t written_status_ = 0;
};

std::unique_ptr<kvmini::hw::virtio::VirtioDevice> MakeDevice(
    uint8_t kind, std::unique_ptr<kvmini::block::BlockBackend> backend) {
  using namespace kvmini::hw::virtio;
  if (kind == 2) {
    auto scsi = VirtioScsi::Create(std::move(backend), {.id = "sda"});
    return scsi.ok() ? std::move(*scsi) : nullptr;
  }
  auto blk = VirtioBlk::Create(
      std::move(backend), {.id = "vda", .num_queues = static_cast<uint16_t>(kind == 1 ? 2 : 1)});
  return blk.ok() ? std::move(*blk) : nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput input(data, size);
  // Byte 0: the device (blk, blk with two queues, scsi) and a read-only disk.
  const uint8_t setup = input.U8();
  const uint8_t kind = setup % 3;
  const uint16_t num_queues = kind == 0 ? 1 : kind == 1 ? 2 : 3;
  DeviceFixture fixture(
      [&](std::unique_ptr<kvmini::block::BlockBackend> backend) {
        return MakeDevice(kind, std::move(backend));
      },
      64 << 10, setup & 4);
  RegisterDriver registers(fixture, num_queues);
  constexpr uint8_t kRegisterOps = RegisterDriver::kOps;
  constexpr uint8_t kRingOps = GuestDriver::kRingOps;
  while (!input.done()) {
    uint8_t op = input.U8() % (kRegisterOps + kRingOps + DeviceFixture::kDeviceOps);
    if (op < kRegisterOps) {
      registers.RunOp(op, input);
    } else if (op < kRegisterOps + kRingOps) {
      fixture.driver().RunRingOp(op - kRegisterOps, input);
    } else {
      uint8_t device_op = op - kRegisterOps - kRingOps;
      fixture.RunDeviceOp(device_op, input);
      if (device_op == DeviceFixture::kBringUpOp) registers.AfterBringUp();
    }
  }
  fixture.Settle();
  return 0;
}

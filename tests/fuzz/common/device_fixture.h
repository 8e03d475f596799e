// DeviceFixture: one virtio device on the virtio-mmio transport over an
// in-memory disk, in the fuzz targets' guest RAM, driven from the main
// loop thread (the device's queues are served by the main loop, so every
// run is deterministic). The targets for virtio-blk and virtio-scsi share
// its bring-up, its device operations (kicks, loop runs, injected disk
// errors, config accesses, resets) and its checks:
//  - once the main loop is idle, nothing is in flight (no request is lost);
//  - a reset (Status 0) is complete when the write returns: Status and
//    InterruptStatus read 0 and the device writes no guest memory after it.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/functional/function_ref.h"
#include "block/block_backend.h"
#include "hw/virtio/mmio_transport.h"
#include "hw/virtio/virtio_device.h"
#include "tests/fuzz/common/fuzz_input.h"
#include "tests/fuzz/common/guest_driver.h"
#include "tests/harness/memory_block_backend.h"

namespace kvmini::fuzz {

class DeviceFixture {
 public:
  using MakeDevice = absl::FunctionRef<std::unique_ptr<hw::virtio::VirtioDevice>(
      std::unique_ptr<block::BlockBackend>)>;
  // Operations RunDeviceOp understands: opcodes 0 .. kDeviceOps - 1.
  static constexpr uint8_t kDeviceOps = 9;
  static constexpr uint8_t kBringUpOp = 6;

  // Clears the guest RAM and creates the device over a zeroed disk of
  // `disk_bytes`. Aborts if the device refuses the options (a harness bug).
  DeviceFixture(MakeDevice make_device, uint64_t disk_bytes, bool read_only);
  // Resets the device (checked, as ResetAndCheck) before destroying it.
  ~DeviceFixture();
  DeviceFixture(const DeviceFixture&) = delete;
  DeviceFixture& operator=(const DeviceFixture&) = delete;

  hw::virtio::MmioTransport& transport() { return *transport_; }
  test::MemoryBlockBackend& backend() { return *backend_; }
  GuestDriver& driver() { return driver_; }

  uint32_t Read32(uint64_t offset);
  void Write32(uint64_t offset, uint32_t value);

  // A driver's probe: reset, ACKNOWLEDGE, DRIVER, the offered features
  // that `wanted` has (VERSION_1 always), FEATURES_OK, the first
  // `queue_count` queues with `queue_size` entries in the standard layout,
  // DRIVER_OK. Remembered for op 6.
  void BringUp(uint64_t wanted, uint32_t queue_size, uint16_t queue_count);

  // Runs device operation `op` (< kDeviceOps), operands from `input`:
  //  0 kick a queue (its eventfd, as KVM's ioeventfd does); 1 write
  //  QueueNotify with any size and value; 2 run the main loop until idle
  //  (and, unless completions are held, check nothing is left in flight);
  //  3 fail the next disk
  //  operations; 4 read config space; 5 write config space; 6 reset the
  //  device (checked) and bring it up again; 7 hold the disk's completions
  //  (requests stay in flight across kicks, TMFs and resets); 8 let them go.
  void RunDeviceOp(uint8_t op, FuzzInput& input);

  // Runs ring and device operations until the input ends, then Settle().
  void RunOps(FuzzInput& input);

  // Lets held completions go (they run at the next loop pass), then runs
  // the main loop until idle; aborts if anything is still in flight.
  void Settle();
  // Writes Status 0 and checks the reset is complete (see above). Held
  // completions are let go first, so the reset drains them.
  void ResetAndCheck();
  // Stops holding the disk's completions and schedules the held ones. Call
  // before anything that waits for requests to drain (a Status 0 write).
  void ReleaseHeld();

 private:
  std::unique_ptr<hw::virtio::MmioTransport> transport_;
  test::MemoryBlockBackend* backend_ = nullptr;
  GuestDriver driver_;
  uint64_t wanted_ = 0;
  uint32_t queue_size_ = 0;
  uint16_t queue_count_ = 0;
  bool holding_ = false;
};

}  // namespace kvmini::fuzz

// BlkDriver: a virtio-blk guest driver on top of VirtioDriver, for device
// tests and benchmarks: builds requests (header, data split into buffers of
// a chosen size, status) in guest RAM, direct or indirect, and reads the
// answers back.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hw/virtio/virtio_blk.h"
#include "tests/harness/virtio_driver.h"

namespace kvmini::test {

struct BlkRequest {
  uint32_t type = hw::virtio::blk::kTypeIn;
  uint64_t sector = 0;
  // IN and GET_ID: bytes of writable data buffer.
  uint32_t in_length = 0;
  // OUT, DISCARD, WRITE_ZEROES: the readable payload after the header.
  std::vector<uint8_t> out_data = {};
  // Splits the data into buffers of at most this many bytes (0: one buffer).
  uint32_t segment_size = 0;
  bool indirect = false;
};

struct BlkResult {
  uint8_t status = 0xff;
  uint32_t used_length = 0;
  std::vector<uint8_t> in_data;  // IN and GET_ID
};

class BlkDriver {
 public:
  static constexpr uint32_t kDefaultMaxData = 64 * 1024;

  BlkDriver(VirtioDriver& driver, const hw::GuestMemory& memory, GuestAllocator& allocator,
            uint32_t max_data = kDefaultMaxData)
      : driver_(driver), memory_(memory), allocator_(allocator), max_data_(max_data) {}

  // Negotiates `wanted` (VERSION_1 is added), sets up `queues` queues of
  // `size` entries and sets DRIVER_OK.
  absl::Status Start(uint64_t wanted, uint16_t queues, uint16_t size);
  VirtioDriver& driver() { return driver_; }
  bool event_idx() const;
  // Whether Collect copies IN data out of guest RAM (benchmarks turn it
  // off: a guest reads its buffers in place).
  void set_copy_in_data(bool copy) { copy_in_data_ = copy; }

  // Posts without kicking; returns the head.
  absl::StatusOr<uint16_t> Post(uint16_t queue, const BlkRequest& request);
  // Completed requests of `queue`, as (head, result).
  std::vector<std::pair<uint16_t, BlkResult>> Collect(uint16_t queue);
  size_t in_flight(uint16_t queue) const {
    return frames_[queue].size() - free_frames_[queue].size();
  }
  // Post, kick, wait for this request's answer.
  absl::StatusOr<BlkResult> Run(uint16_t queue, const BlkRequest& request,
                                VirtioDriver::KickVia via = VirtioDriver::KickVia::kEventfd,
                                absl::Duration timeout = absl::Seconds(10));

 private:
  struct Frame {
    uint64_t header;
    uint64_t status;
    uint64_t data;
    uint32_t in_length = 0;
    uint32_t type = 0;
  };

  VirtioDriver& driver_;
  const hw::GuestMemory& memory_;
  GuestAllocator& allocator_;
  const uint32_t max_data_;
  bool copy_in_data_ = true;
  std::vector<std::vector<Frame>> frames_;        // [queue][frame]
  std::vector<std::vector<uint32_t>> free_frames_;  // [queue]
  std::vector<std::vector<int>> pending_;         // [queue][head] -> frame or -1
};

}  // namespace kvmini::test

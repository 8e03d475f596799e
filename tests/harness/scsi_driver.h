// ScsiDriver: a virtio-scsi guest driver on top of VirtioDriver, for device
// tests and benchmarks. It lays out commands the way Linux's virtio_scsi
// does (request header, data-out, response header, data-in; direct or
// indirect), posts task management and asynchronous notification requests
// on the control queue and event buffers on the event queue, and reads the
// answers back. Knobs let a test send what Linux never would (short
// headers, small response buffers).
//
// Request queues are numbered from 0 here (virtqueue 2 + n).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "hw/scsi/scsi_target.h"
#include "hw/virtio/virtio_scsi_protocol.h"
#include "tests/harness/virtio_driver.h"

namespace kvmini::test {

struct ScsiCommand {
  std::array<uint8_t, 8> lun = hw::scsi::EncodeVirtioLun(0, 0);
  uint64_t tag = 0;
  // Padded with zeroes (or cut) to the header's CDB field.
  std::vector<uint8_t> cdb = {};
  std::vector<uint8_t> data_out = {};
  uint32_t data_in_length = 0;
  // Splits the data into buffers of at most this many bytes (0: one buffer).
  uint32_t segment_size = 0;
  bool indirect = false;
  // Bytes of request header and of response buffer to give; default
  // 19 + cdb_size and 12 + sense_size as the driver set them.
  std::optional<uint32_t> header_length = std::nullopt;
  std::optional<uint32_t> response_length = std::nullopt;
};

struct ScsiResponse {
  uint32_t sense_length = 0;
  uint32_t residual = 0;
  uint8_t status = 0xff;
  uint8_t response = 0xff;
  // The sense bytes the device wrote (sense_length of them, at most the
  // response buffer's room).
  std::vector<uint8_t> sense;
  std::vector<uint8_t> data_in;  // all of data_in_length, written or not
  uint32_t used_length = 0;
};

struct ControlResponse {
  uint8_t response = 0xff;
  uint32_t event_actual = 0xffffffff;  // AN requests only
  uint32_t used_length = 0;
};

class ScsiDriver {
 public:
  static constexpr uint32_t kDefaultMaxData = 64 * 1024;
  // Room in each frame for a request header and a response header.
  static constexpr uint32_t kMaxHeader = 512;
  static constexpr uint32_t kMaxResponse = 2048;

  ScsiDriver(VirtioDriver& driver, const hw::GuestMemory& memory, GuestAllocator& allocator,
             uint32_t max_data = kDefaultMaxData)
      : driver_(driver), memory_(memory), allocator_(allocator), max_data_(max_data) {}

  // Negotiates `wanted` (VERSION_1 is added), writes cdb_size and
  // sense_size to the config space as Linux does, sets up the control and
  // event queues and `request_queues` request queues of `size` entries, and
  // sets DRIVER_OK.
  absl::Status Start(uint64_t wanted, uint16_t request_queues, uint16_t size,
                     uint32_t cdb_size = hw::virtio::virtio_scsi::kDefaultCdbSize,
                     uint32_t sense_size = hw::virtio::virtio_scsi::kDefaultSenseSize);
  VirtioDriver& driver() { return driver_; }
  uint32_t ReadConfig32(uint64_t offset);
  void WriteConfig32(uint64_t offset, uint32_t value);
  // What the driver lays out requests for (set by Start).
  uint32_t cdb_size() const { return cdb_size_; }
  uint32_t sense_size() const { return sense_size_; }
  // Whether Collect copies data-in out of guest RAM (benchmarks turn it off).
  void set_copy_in_data(bool copy) { copy_in_data_ = copy; }

  // Posts without kicking; returns the head.
  absl::StatusOr<uint16_t> Post(uint16_t request_queue, const ScsiCommand& command);
  std::vector<std::pair<uint16_t, ScsiResponse>> Collect(uint16_t request_queue);
  size_t in_flight(uint16_t request_queue) const;
  void Kick(uint16_t request_queue);
  // Post, kick, wait for this command's answer.
  absl::StatusOr<ScsiResponse> Run(const ScsiCommand& command, uint16_t request_queue = 0,
                                   absl::Duration timeout = absl::Seconds(10));

  // Control queue: posts without kicking, returns the head.
  absl::StatusOr<uint16_t> PostTaskManagement(uint32_t subtype, std::array<uint8_t, 8> lun,
                                              uint64_t tag);
  absl::StatusOr<uint16_t> PostNotification(uint32_t type, std::array<uint8_t, 8> lun,
                                            uint32_t events);
  std::vector<std::pair<uint16_t, ControlResponse>> CollectControl();
  absl::StatusOr<ControlResponse> RunTaskManagement(uint32_t subtype, std::array<uint8_t, 8> lun,
                                                    uint64_t tag,
                                                    absl::Duration timeout = absl::Seconds(10));
  absl::StatusOr<ControlResponse> RunNotification(uint32_t type, std::array<uint8_t, 8> lun,
                                                  uint32_t events);
  // Waits until the control request at `head` is answered.
  absl::StatusOr<ControlResponse> WaitControl(uint16_t head, absl::Duration timeout);

  // Makes `count` 16-byte event buffers available and kicks.
  absl::Status PostEventBuffers(int count);

 private:
  struct Frame {
    uint64_t header;
    uint64_t response;
    uint64_t data;
    uint32_t data_in_length = 0;
    uint32_t response_length = 0;
  };
  struct ControlFrame {
    uint64_t request;
    uint64_t response;
    bool notification = false;
  };
  uint16_t queue_index(uint16_t request_queue) const;
  absl::StatusOr<uint16_t> PostControl(std::span<const uint8_t> request, uint32_t response_size,
                                       bool notification);

  VirtioDriver& driver_;
  const hw::GuestMemory& memory_;
  GuestAllocator& allocator_;
  const uint32_t max_data_;
  uint32_t cdb_size_ = hw::virtio::virtio_scsi::kDefaultCdbSize;
  uint32_t sense_size_ = hw::virtio::virtio_scsi::kDefaultSenseSize;
  bool copy_in_data_ = true;
  std::vector<std::vector<Frame>> frames_;          // [request queue][frame]
  std::vector<std::vector<uint32_t>> free_frames_;  // [request queue]
  std::vector<std::vector<int>> pending_;           // [request queue][head] -> frame or -1
  std::vector<ControlFrame> control_frames_;
  std::vector<uint32_t> free_control_frames_;
  std::vector<int> control_pending_;  // [head] -> frame or -1
  // Answers collected while waiting for another head.
  std::vector<std::pair<uint16_t, ControlResponse>> control_answers_;
};

}  // namespace kvmini::test

// VirtioScsi: the virtio SCSI host bus adapter (device ID 8) with one
// emulated disk (hw/scsi/ScsiDisk) at target 0, LUN 0, over a BlockBackend.
// It parses virtio-scsi's request layouts and hands SCSI commands to the
// disk emulation; the dataplane, virtqueues and register file are the ones
// virtio-blk uses.
//
// Queues: 0 control (task management, asynchronous notification), 1 event,
// 2.. request. No feature bit is offered (no bidirectional commands, no
// events to report), so the driver posts event buffers only if it wants to:
// they stay in the ring, unused, as QEMU leaves them.
//
// What the guest gets for what it sends:
//  - a LUN field whose first byte is not 1, or a target other than 0:
//    BAD_TARGET; a missing LUN on target 0: INQUIRY peripheral 0x7F, other
//    commands CHECK CONDITION LOGICAL UNIT NOT SUPPORTED (hw/scsi/);
//  - sense data cut to the driver's sense_size, `residual` from the buffers
//    it gave, OVERRUN when the CDB wants more than they hold;
//  - a request that can be answered but not served (a buffer outside RAM,
//    readable after writable, a header shorter than 19 + cdb_size, a
//    response buffer shorter than 12 + sense_size, data in both directions):
//    response FAILURE, the queue goes on;
//  - a request with no room for the 12 fixed response bytes, or a head made
//    available again while in flight: the queue breaks (DEVICE_NEEDS_RESET,
//    see virtqueue.h). The same on the control queue when there is no
//    writable byte for the response (or no 5 bytes for an AN answer).
//  - task management: ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL
//    UNIT RESET and I_T NEXUS RESET are answered after the requests they
//    affect have completed (ABORTED) and been published; QUERY TASK (SET)
//    answer FUNCTION SUCCEEDED when a matching request is in flight; CLEAR
//    ACA and unknown subtypes FUNCTION REJECTED. A TMF covers every command
//    made available before it, kicked or not (the request queues are served
//    first). AN query/subscribe: OK with no events. Task attributes
//    (ORDERED, HEAD OF QUEUE) are not enforced.
//
// Threading: requests, TMFs and the disk run in the thread of the context
// the queues are attached to (main loop or IOThread), as does the backend;
// config space is read and written by vCPU threads; counters may be read
// from any thread.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "block/block_backend.h"
#include "hw/scsi/scsi_disk.h"
#include "hw/scsi/scsi_target.h"
#include "hw/virtio/virtio_device.h"
#include "hw/virtio/virtio_scsi_protocol.h"
#include "hw/virtio/virtqueue.h"
#include "util/log.h"
#include "util/mutex.h"

namespace kvmini::hw::virtio {

struct VirtioScsiOptions {
  std::string id;  // names the controller in logs, e.g. "sda" or the --scsi id
  uint16_t num_request_queues = 1;
  uint16_t queue_size = 256;
  // The disk at target 0, LUN 0: serial, identity strings, block size, limits.
  scsi::ScsiDiskOptions disk = {};
};

struct VirtioScsiStats {
  uint64_t completed;  // commands answered (request queues)
  uint64_t in_flight;
  uint64_t bytes_read;     // by READ(6/10/12/16) answered GOOD
  uint64_t bytes_written;  // by WRITE(6/10/12/16) answered GOOD
  uint64_t errors;  // commands answered with a response other than OK or a status other than GOOD
  uint64_t task_management;  // TMFs answered
};

class VirtioScsi final : public VirtioDevice {
 public:
  static constexpr uint16_t kMaxRequestQueues = 64;
  // One target (0): the driver scans 0..max_target, so keep it small.
  static constexpr uint16_t kMaxTarget = 0;

  // Errors name the image and the option at fault (queue count or size,
  // the disk's options).
  static absl::StatusOr<std::unique_ptr<VirtioScsi>> Create(
      std::unique_ptr<block::BlockBackend> backend, VirtioScsiOptions options);
  ~VirtioScsi() override;

  uint32_t device_id() const override { return virtio_scsi::kDeviceId; }
  const std::string& name() const override { return name_; }
  uint64_t device_features() const override { return 0; }
  uint16_t num_queues() const override {
    return virtio_scsi::kFirstRequestQueue + options_.num_request_queues;
  }
  uint16_t queue_max_size() const override { return options_.queue_size; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  void Activate(uint64_t negotiated_features, std::span<Virtqueue* const> queues) override;
  void ProcessQueue(Virtqueue& queue) override;
  void Reset() override;
  void DrainBackends() override;
  void MoveBackends(util::AioContext& context) override;

  VirtioScsiStats stats() const;
  block::BlockBackend& backend() { return *backend_; }
  scsi::ScsiDisk& disk() { return *disk_; }
  // The driver-writable configuration fields, as they are now.
  uint32_t sense_size() const { return sense_size_.load(std::memory_order_acquire); }
  uint32_t cdb_size() const { return cdb_size_.load(std::memory_order_acquire); }

 private:
  enum class Transfer : uint8_t { kOther, kRead, kWrite };

  // One command of a request queue, indexed by its head.
  struct Command {
    Virtqueue* queue = nullptr;
    uint16_t head = 0;
    bool busy = false;
    // Set while the disk may complete the command inside Submit(): the
    // processing pass then publishes it.
    bool submitting = false;
    Transfer transfer = Transfer::kOther;
    uint32_t response_bytes = 0;  // 12 + sense_size at the time it arrived
    uint64_t data_out_bytes = 0;
    std::vector<iovec> response;  // the writable bytes of the response header
  };
  // One control-queue request, indexed by its head.
  struct ControlRequest {
    uint16_t head = 0;
    bool busy = false;
    bool submitting = false;
    std::vector<iovec> response;
  };

  VirtioScsi(std::unique_ptr<block::BlockBackend> backend, VirtioScsiOptions options,
             std::unique_ptr<scsi::ScsiDisk> disk);

  // Request queues (virtio_scsi.cc).
  void HandleCommand(Virtqueue& queue, const DescriptorChain& chain);
  // Hands the command to the disk, or refuses it at once.
  void StartCommand(Command& command, const DescriptorChain& chain);
  void CompleteCommand(Command& command, const scsi::ScsiResult& result);
  // Answers without a SCSI result: only the fixed 12 bytes are written.
  void RefuseCommand(Command& command, uint8_t response, uint64_t residual);
  void FinishCommand(Command& command, uint32_t written, bool error, uint64_t read,
                     uint64_t written_to_disk);

  // Control queue (virtio_scsi_control.cc).
  void HandleControl(Virtqueue& queue, const DescriptorChain& chain);
  // Answers at once, or from the disk's callback once the affected
  // commands have completed.
  void StartTaskManagement(ControlRequest& control,
                           std::span<const uint8_t, virtio_scsi::kTmfRequestSize> request);
  void AnswerControl(ControlRequest& control, std::span<const uint8_t> response);
  // Takes every command waiting in the request queues.
  void ServeRequestQueues();
  // Makes every completed command visible before a TMF answer that
  // promises they are done.
  void PublishRequestQueues();

  template <typename... Args>
  void LogGuestError(const Args&... args);

  // Destroyed in reverse: the target refers to the disk, the disk to the
  // backend.
  const std::unique_ptr<block::BlockBackend> backend_;
  const VirtioScsiOptions options_;
  const std::string name_;
  const std::unique_ptr<scsi::ScsiDisk> disk_;
  scsi::ScsiTarget target_;

  std::atomic<uint32_t> sense_size_{virtio_scsi::kDefaultSenseSize};
  std::atomic<uint32_t> cdb_size_{virtio_scsi::kDefaultCdbSize};
  // Serialises config writes (read-modify-write of a field by partial
  // accesses from several vCPUs).
  util::Mutex config_write_mutex_;

  // Set in Activate (main loop, queues attached nowhere); then used by the
  // thread that owns the queues.
  bool activated_ = false;
  std::vector<Virtqueue*> queues_;
  std::vector<std::vector<Command>> commands_;  // [queue][head], request queues only
  std::vector<ControlRequest> controls_;        // [head]
  std::vector<DescriptorChain> scratch_chains_;  // [queue], reused by Pop

  std::atomic<uint64_t> started_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> task_management_{0};
  util::RateLimiter log_limiter_{20, absl::Seconds(10)};
};

template <typename... Args>
void VirtioScsi::LogGuestError(const Args&... args) {
  if (!log_limiter_.Allow()) return;
  KVMINI_LOG(Warning) << name_ << ": " << absl::StrCat(args...);
}

}  // namespace kvmini::hw::virtio

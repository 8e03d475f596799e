// VirtioBlk: the virtio block device (device ID 2) over a BlockBackend.
//
// Features: SIZE_MAX, SEG_MAX, BLK_SIZE, TOPOLOGY, FLUSH, DISCARD,
// WRITE_ZEROES, RO (read-only backends) and MQ (more than one queue).
// Requests: IN, OUT, FLUSH, GET_ID (the serial), DISCARD, WRITE_ZEROES (with
// UNMAP); any other type -> UNSUPP. The logical block size is the backend's
// alignment (at least 512). Out of range or misaligned, a failed
// backend operation, any write to a read-only disk, or a chain with a bad
// buffer (outside RAM, wrong direction order, no 16-byte header) -> IOERR.
// A chain without a writable status byte cannot be answered: the queue
// breaks (DEVICE_NEEDS_RESET), see virtqueue.h.
//
// Requests run in the thread of the context the queues are attached to
// (main loop or IOThread), as does the backend; counters may be read from
// any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/virtio/virtio_device.h"
#include "hw/virtio/virtqueue.h"
#include "util/log.h"

namespace kvmini::hw::virtio {

namespace blk {
inline constexpr uint32_t kDeviceId = 2;
// Feature bits.
inline constexpr uint64_t kFeatureSizeMax = 1ull << 1;
inline constexpr uint64_t kFeatureSegMax = 1ull << 2;
inline constexpr uint64_t kFeatureReadOnly = 1ull << 5;
inline constexpr uint64_t kFeatureBlockSize = 1ull << 6;
inline constexpr uint64_t kFeatureFlush = 1ull << 9;
inline constexpr uint64_t kFeatureTopology = 1ull << 10;
inline constexpr uint64_t kFeatureMultiQueue = 1ull << 12;
inline constexpr uint64_t kFeatureDiscard = 1ull << 13;
inline constexpr uint64_t kFeatureWriteZeroes = 1ull << 14;
// Request types.
inline constexpr uint32_t kTypeIn = 0;
inline constexpr uint32_t kTypeOut = 1;
inline constexpr uint32_t kTypeFlush = 4;
inline constexpr uint32_t kTypeGetId = 8;
inline constexpr uint32_t kTypeDiscard = 11;
inline constexpr uint32_t kTypeWriteZeroes = 13;
// Status byte.
inline constexpr uint8_t kStatusOk = 0;
inline constexpr uint8_t kStatusIoError = 1;
inline constexpr uint8_t kStatusUnsupported = 2;
// DISCARD / WRITE_ZEROES segment flag.
inline constexpr uint32_t kSegmentFlagUnmap = 1;

inline constexpr uint32_t kSectorSize = 512;
inline constexpr size_t kIdBytes = 20;
inline constexpr uint32_t kSizeMax = 1 << 20;
inline constexpr uint32_t kMaxDiscardSectors = 1 << 22;  // 2 GiB per segment
inline constexpr uint32_t kMaxDiscardSegments = 16;
inline constexpr size_t kConfigSize = 60;

struct RequestHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(RequestHeader) == 16);

struct DiscardSegment {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;
};
static_assert(sizeof(DiscardSegment) == 16);
}  // namespace blk

struct VirtioBlkOptions {
  std::string id;  // names the disk in logs, e.g. "vda" or the --blk id
  std::string serial;  // GET_ID answer, at most 20 bytes
  uint16_t num_queues = 1;
  uint16_t queue_size = 256;
};

struct VirtioBlkStats {
  uint64_t completed;
  uint64_t in_flight;
  uint64_t bytes_read;
  uint64_t bytes_written;
  uint64_t errors;  // requests answered with a status other than OK
};

class VirtioBlk final : public VirtioDevice {
 public:
  static inline constexpr uint16_t kMaxQueues = 64;

  static absl::StatusOr<std::unique_ptr<VirtioBlk>> Create(
      std::unique_ptr<block::BlockBackend> backend, VirtioBlkOptions options);
  ~VirtioBlk() override;

  uint32_t device_id() const override { return blk::kDeviceId; }
  const std::string& name() const override { return name_; }
  uint64_t device_features() const override;
  uint16_t num_queues() const override { return options_.num_queues; }
  uint16_t queue_max_size() const override { return options_.queue_size; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  void WriteConfig(uint64_t offset, std::span<const uint8_t> data) override;
  void Activate(uint64_t negotiated_features, std::span<Virtqueue* const> queues) override;
  void ProcessQueue(Virtqueue& queue) override;
  void Reset() override;
  void DrainBackends() override;
  void MoveBackends(util::AioContext& context) override;

  VirtioBlkStats stats() const;
  block::BlockBackend& backend() { return *backend_; }
  uint64_t capacity_sectors() const { return capacity_sectors_; }
  uint32_t block_size() const { return block_size_; }

 private:
  struct Request {
    Virtqueue* queue = nullptr;
    uint16_t head = 0;
    bool busy = false;
    uint8_t* status = nullptr;
    uint32_t type = 0;
    uint64_t data_bytes = 0;
    int pending = 0;       // backend operations not yet completed
    int first_error = 0;   // negative errno
  };

  VirtioBlk(std::unique_ptr<block::BlockBackend> backend, VirtioBlkOptions options);
  void BuildConfig();
  void HandleChain(Virtqueue& queue, const DescriptorChain& chain);
  // Returns the status to answer with now, or nullopt if backend
  // operations were started (the request completes in OnBackendDone).
  std::optional<uint8_t> Start(Request& request, const DescriptorChain& chain,
                               const blk::RequestHeader& header, uint32_t& written);
  std::optional<uint8_t> StartDiscardOrWriteZeroes(Request& request,
                                                   const DescriptorChain& chain,
                                                   const blk::RequestHeader& header);
  bool InRange(uint64_t sector, uint64_t sectors) const;
  // Whether a range starts and ends on logical block boundaries.
  bool Aligned(uint64_t sector, uint64_t bytes) const;
  block::BlockBackend::Completion BackendCompletion(Request& request);
  void OnBackendDone(Request& request, int result);
  void Account(uint8_t status, uint32_t type, uint64_t data_bytes);
  template <typename... Args>
  void LogGuestError(const Args&... args);

  const std::unique_ptr<block::BlockBackend> backend_;
  const VirtioBlkOptions options_;
  const std::string name_;
  const uint64_t capacity_sectors_;
  const uint32_t block_size_;  // logical block, a multiple of 512
  std::array<uint8_t, blk::kConfigSize> config_{};

  // Set in Activate (main loop, queues attached nowhere); then used by the
  // thread that owns the queues.
  std::vector<std::vector<Request>> requests_;  // [queue][head]
  std::vector<DescriptorChain> scratch_chains_;  // [queue], reused by Pop

  std::atomic<uint64_t> started_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> bytes_written_{0};
  std::atomic<uint64_t> errors_{0};
  util::RateLimiter log_limiter_{20, absl::Seconds(10)};
};

}  // namespace kvmini::hw::virtio

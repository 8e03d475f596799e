// The hot-stop harness (issue 8): a virtio-blk or virtio-scsi device whose
// block backend checks that every operation starts, and every completion
// runs, in the thread that owns the disk at that moment, behind one
// interface (DiskPort) that a load driver uses for plain reads and writes
// whichever device it is. Shared by tests/unit/hw/virtio/hotstop_stress_test
// and bench/hotstop.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "block/block_backend.h"
#include "tests/harness/virtio_testbed.h"
#include "util/aio_context.h"
#include "util/mutex.h"

namespace kvmini::test {

// Forwards to a real backend. The disk's owner is the context the dataplane
// last attached the backend to (SetAioContext): the main loop while stopped,
// an IOThread while running. Any operation started, or completion run, in
// another thread is counted and the first one described.
class OwnerCheckingBackend final : public block::BlockBackend {
 public:
  explicit OwnerCheckingBackend(std::unique_ptr<block::BlockBackend> inner);

  const std::string& path() const override { return inner_->path(); }
  uint64_t size_bytes() const override { return inner_->size_bytes(); }
  bool read_only() const override { return inner_->read_only(); }
  uint32_t alignment() const override { return inner_->alignment(); }
  block::AioEngine engine() const override { return inner_->engine(); }
  void Read(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Write(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Flush(Completion done) override;
  void Discard(uint64_t offset, uint64_t length, Completion done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap, Completion done) override;
  uint64_t in_flight() const override { return inner_->in_flight(); }
  void Drain() override { inner_->Drain(); }
  void SetAioContext(util::AioContext& context) override;
  util::AioContext& context() const override { return inner_->context(); }

  uint64_t wrong_thread_starts() const { return wrong_thread_starts_.load(); }
  uint64_t wrong_thread_completions() const { return wrong_thread_completions_.load(); }
  uint64_t completions() const { return completions_.load(); }
  // When the last completion ran (the Unix epoch before any): the end of the
  // slowest I/O a dataplane stop had to wait for.
  absl::Time last_completion() const {
    return absl::FromUnixNanos(last_completion_unix_ns_.load());
  }
  std::string first_violation() const;

 private:
  // Checks the calling thread for `what`, counting into `counter`.
  void CheckOwner(const char* what, std::atomic<uint64_t>& counter);
  Completion Checked(Completion done);

  const std::unique_ptr<block::BlockBackend> inner_;
  std::atomic<util::AioContext*> owner_;
  std::atomic<uint64_t> wrong_thread_starts_{0};
  std::atomic<uint64_t> wrong_thread_completions_{0};
  std::atomic<uint64_t> completions_{0};
  std::atomic<int64_t> last_completion_unix_ns_{0};
  mutable util::Mutex mutex_;
  std::string first_violation_ ABSL_GUARDED_BY(mutex_);
};

enum class HotstopDevice { kBlk, kScsi };
const char* HotstopDeviceName(HotstopDevice device);

// What a load driver sends: a read or a write of whole 512-byte sectors.
struct DiskIo {
  bool write = false;
  uint64_t offset = 0;             // bytes, a multiple of 512
  uint32_t length = 0;             // bytes, a multiple of 512
  std::vector<uint8_t> data = {};  // write: `length` bytes
  bool indirect = false;
  uint32_t segment_size = 0;  // split data into buffers of this size (0: one)
};
struct DiskIoResult {
  bool ok = false;
  std::vector<uint8_t> data;  // read: what the device returned
};

// The guest driver of either device, reduced to reads and writes on
// `queues()` request queues. Use from one thread at a time.
class DiskPort {
 public:
  virtual ~DiskPort() = default;
  virtual uint16_t queues() const = 0;
  // Posts without kicking; returns the head.
  virtual absl::StatusOr<uint16_t> Post(uint16_t queue, const DiskIo& io) = 0;
  virtual std::vector<std::pair<uint16_t, DiskIoResult>> Collect(uint16_t queue) = 0;
  virtual void Kick(uint16_t queue) = 0;
  virtual VirtioDriver& driver() = 0;
};

struct HotstopTestbedOptions {
  HotstopDevice device = HotstopDevice::kBlk;
  uint64_t image_bytes = 16 << 20;
  uint16_t queues = 2;
  // Ring entries per request queue.
  uint16_t queue_size = 256;
  // The largest request a DiskPort sends (bytes).
  uint32_t max_request_bytes = 64 * 1024;
  block::BlockOptions block = {};
  util::AioContext* iothread = nullptr;
};

// One device over a fresh image file (the real backend, io_uring), its
// backend wrapped in an OwnerCheckingBackend, the driver started (DRIVER_OK)
// with what Linux negotiates. Create and destroy in the main loop thread.
class HotstopTestbed final : public VirtioTestbed {
 public:
  static absl::StatusOr<std::unique_ptr<HotstopTestbed>> Create(HotstopTestbedOptions options);
  ~HotstopTestbed() override;

  DiskPort& port() { return *port_; }
  const OwnerCheckingBackend& backend() const { return *backend_; }
  HotstopDevice device_type() const { return device_type_; }
  // The device's own counters, whichever type it is.
  uint64_t device_completed() const;
  uint64_t device_errors() const;

 private:
  HotstopTestbed() = default;

  HotstopDevice device_type_ = HotstopDevice::kBlk;
  hw::virtio::VirtioDevice* device_ = nullptr;
  OwnerCheckingBackend* backend_ = nullptr;
  std::unique_ptr<DiskPort> port_;
};

}  // namespace kvmini::test

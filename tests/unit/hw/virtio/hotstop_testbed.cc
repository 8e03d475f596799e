#include "tests/unit/hw/virtio/hotstop_testbed.h"

#include "absl/strings/str_cat.h"
#include "hw/virtio/virtio_blk.h"
#include "hw/virtio/virtio_scsi.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/scsi_driver.h"
#include "tests/unit/hw/virtio/blk_test_support.h"
#include "tests/unit/hw/virtio/scsi_test_support.h"

namespace kvmini::test {

OwnerCheckingBackend::OwnerCheckingBackend(std::unique_ptr<block::BlockBackend> inner)
    : inner_(std::move(inner)), owner_(&inner_->context()) {}

void OwnerCheckingBackend::CheckOwner(const char* what, std::atomic<uint64_t>& counter) {
  util::AioContext* owner = owner_.load();
  if (owner->InHomeThread()) return;
  if (counter.fetch_add(1) != 0) return;
  util::AioContext* current = util::AioContext::Current();
  util::MutexLock lock(&mutex_);
  if (!first_violation_.empty()) return;
  first_violation_ = absl::StrCat(what, " in the thread of ",
                                  current != nullptr ? current->name() : "no AioContext",
                                  " while the disk belongs to ", owner->name());
}

block::BlockBackend::Completion OwnerCheckingBackend::Checked(Completion done) {
  CheckOwner("an operation started", wrong_thread_starts_);
  return [this, done = std::move(done)](int status) mutable {
    CheckOwner("a completion ran", wrong_thread_completions_);
    completions_.fetch_add(1);
    last_completion_unix_ns_.store(absl::ToUnixNanos(absl::Now()));
    std::move(done)(status);
  };
}

void OwnerCheckingBackend::Read(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  inner_->Read(offset, std::move(buffers), Checked(std::move(done)));
}

void OwnerCheckingBackend::Write(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  inner_->Write(offset, std::move(buffers), Checked(std::move(done)));
}

void OwnerCheckingBackend::Flush(Completion done) { inner_->Flush(Checked(std::move(done))); }

void OwnerCheckingBackend::Discard(uint64_t offset, uint64_t length, Completion done) {
  inner_->Discard(offset, length, Checked(std::move(done)));
}

void OwnerCheckingBackend::WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap,
                                       Completion done) {
  inner_->WriteZeroes(offset, length, may_unmap, Checked(std::move(done)));
}

void OwnerCheckingBackend::SetAioContext(util::AioContext& context) {
  inner_->SetAioContext(context);
  owner_.store(&context);
}

std::string OwnerCheckingBackend::first_violation() const {
  util::MutexLock lock(&mutex_);
  return first_violation_;
}

const char* HotstopDeviceName(HotstopDevice device) {
  return device == HotstopDevice::kBlk ? "virtio-blk" : "virtio-scsi";
}

namespace {

class BlkPort final : public DiskPort {
 public:
  BlkPort(VirtioDriver& driver, const hw::GuestMemory& memory, GuestAllocator& allocator,
          uint32_t max_data, uint16_t queues)
      : blk_(driver, memory, allocator, max_data), queues_(queues) {}
  uint16_t queues() const override { return queues_; }
  absl::StatusOr<uint16_t> Post(uint16_t queue, const DiskIo& io) override {
    BlkRequest request{.type = io.write ? hw::virtio::blk::kTypeOut : hw::virtio::blk::kTypeIn,
                       .sector = io.offset / 512,
                       .in_length = io.write ? 0 : io.length,
                       .out_data = io.data,
                       .segment_size = io.segment_size,
                       .indirect = io.indirect};
    return blk_.Post(queue, request);
  }
  std::vector<std::pair<uint16_t, DiskIoResult>> Collect(uint16_t queue) override {
    std::vector<std::pair<uint16_t, DiskIoResult>> results;
    for (auto& [head, result] : blk_.Collect(queue)) {
      results.push_back(
          {head, {result.status == hw::virtio::blk::kStatusOk, std::move(result.in_data)}});
    }
    return results;
  }
  void Kick(uint16_t queue) override { blk_.driver().Kick(queue); }
  VirtioDriver& driver() override { return blk_.driver(); }
  BlkDriver& blk() { return blk_; }

 private:
  BlkDriver blk_;
  const uint16_t queues_;
};

class ScsiPort final : public DiskPort {
 public:
  ScsiPort(VirtioDriver& driver, const hw::GuestMemory& memory, GuestAllocator& allocator,
           uint32_t max_data, uint16_t queues)
      : scsi_(driver, memory, allocator, max_data), queues_(queues) {}
  uint16_t queues() const override { return queues_; }
  absl::StatusOr<uint16_t> Post(uint16_t queue, const DiskIo& io) override {
    const auto lba = static_cast<uint32_t>(io.offset / 512);
    const auto blocks = static_cast<uint16_t>(io.length / 512);
    ScsiCommand command{.tag = ++tag_,
                        .cdb = io.write ? Write10(lba, blocks) : Read10(lba, blocks),
                        .data_out = io.data,
                        .data_in_length = io.write ? 0 : io.length,
                        .segment_size = io.segment_size,
                        .indirect = io.indirect};
    return scsi_.Post(queue, command);
  }
  std::vector<std::pair<uint16_t, DiskIoResult>> Collect(uint16_t queue) override {
    std::vector<std::pair<uint16_t, DiskIoResult>> results;
    for (auto& [head, answer] : scsi_.Collect(queue)) {
      const bool ok = answer.response == vs::response::kOk &&
                      answer.status == hw::scsi::status::kGood && answer.residual == 0;
      results.push_back({head, {ok, std::move(answer.data_in)}});
    }
    return results;
  }
  void Kick(uint16_t queue) override { scsi_.Kick(queue); }
  VirtioDriver& driver() override { return scsi_.driver(); }
  ScsiDriver& scsi() { return scsi_; }

 private:
  ScsiDriver scsi_;
  const uint16_t queues_;
  uint64_t tag_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HotstopTestbed>> HotstopTestbed::Create(
    HotstopTestbedOptions options) {
  std::unique_ptr<HotstopTestbed> testbed(new HotstopTestbed());
  testbed->device_type_ = options.device;
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> real =
      testbed->Prepare(128 << 20, {.backend = TestBackend::kImageFile,
                                   .image_bytes = options.image_bytes,
                                   .block = options.block});
  if (!real.ok()) return real.status();
  auto checking = std::make_unique<OwnerCheckingBackend>(std::move(*real));
  testbed->backend_ = checking.get();

  std::unique_ptr<hw::virtio::VirtioDevice> device;
  if (options.device == HotstopDevice::kBlk) {
    auto blk = hw::virtio::VirtioBlk::Create(
        std::move(checking), {.id = "vda", .serial = "hotstop", .num_queues = options.queues});
    if (!blk.ok()) return blk.status();
    device = std::move(*blk);
  } else {
    auto scsi = hw::virtio::VirtioScsi::Create(
        std::move(checking),
        {.id = "sda", .num_request_queues = options.queues, .disk = {.serial = "hotstop"}});
    if (!scsi.ok()) return scsi.status();
    device = std::move(*scsi);
  }
  testbed->device_ = device.get();
  absl::Status connected = testbed->Connect(std::move(device), options.iothread);
  if (!connected.ok()) return connected;

  if (options.device == HotstopDevice::kBlk) {
    auto port =
        std::make_unique<BlkPort>(testbed->driver(), testbed->memory(), testbed->allocator(),
                                  options.max_request_bytes, options.queues);
    absl::Status started = port->blk().Start(kLinuxFeatures, options.queues, options.queue_size);
    if (!started.ok()) return started;
    testbed->port_ = std::move(port);
  } else {
    auto port =
        std::make_unique<ScsiPort>(testbed->driver(), testbed->memory(), testbed->allocator(),
                                   options.max_request_bytes, options.queues);
    absl::Status started =
        port->scsi().Start(kLinuxScsiFeatures, options.queues, options.queue_size);
    if (!started.ok()) return started;
    testbed->port_ = std::move(port);
  }
  return testbed;
}

HotstopTestbed::~HotstopTestbed() = default;

uint64_t HotstopTestbed::device_completed() const {
  if (device_type_ == HotstopDevice::kBlk) {
    return static_cast<hw::virtio::VirtioBlk*>(device_)->stats().completed;
  }
  return static_cast<hw::virtio::VirtioScsi*>(device_)->stats().completed;
}

uint64_t HotstopTestbed::device_errors() const {
  if (device_type_ == HotstopDevice::kBlk) {
    return static_cast<hw::virtio::VirtioBlk*>(device_)->stats().errors;
  }
  return static_cast<hw::virtio::VirtioScsi*>(device_)->stats().errors;
}

}  // namespace kvmini::test

// VirtioScsi: creation, config space, life cycle and the request queues.
// The control queue is in virtio_scsi_control.cc.
#include "hw/virtio/virtio_scsi.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "hw/scsi/iovec_util.h"
#include "hw/scsi/scsi_protocol.h"
#include "hw/virtio/virtio_scsi_buffers.h"
#include "util/check.h"

namespace kvmini::hw::virtio {

using namespace virtio_scsi;

namespace {

// The part of a command response that does not depend on sense_size.
constexpr uint32_t kFixedResponseBytes = kResponseSense;
// cmd_per_lun as QEMU reports it, unless the queue is smaller.
constexpr uint32_t kCommandsPerLun = 128;

// Which counter a command's data feeds.
bool IsRead(uint8_t code) {
  using namespace scsi::opcode;
  return code == kRead6 || code == kRead10 || code == kRead12 || code == kRead16;
}

bool IsWrite(uint8_t code) {
  using namespace scsi::opcode;
  return code == kWrite6 || code == kWrite10 || code == kWrite12 || code == kWrite16;
}

uint32_t ClampTo32(uint64_t value) {
  return static_cast<uint32_t>(std::min<uint64_t>(value, 0xffffffff));
}

}  // namespace

absl::StatusOr<std::unique_ptr<VirtioScsi>> VirtioScsi::Create(
    std::unique_ptr<block::BlockBackend> backend, VirtioScsiOptions options) {
  const std::string what = absl::StrCat("virtio-scsi '", options.id, "' (", backend->path(), ")");
  if (options.num_request_queues < 1 || options.num_request_queues > kMaxRequestQueues) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: queues=%u is outside 1..%u", what, options.num_request_queues, kMaxRequestQueues));
  }
  const uint16_t size = options.queue_size;
  if (size < 4 || (size & (size - 1)) != 0 || size > kMaxQueueSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: queue size %u is not a power of two in 4..32768", what, size));
  }
  absl::StatusOr<std::unique_ptr<scsi::ScsiDisk>> disk =
      scsi::ScsiDisk::Create(*backend, options.disk);
  if (!disk.ok()) {
    return absl::Status(disk.status().code(), absl::StrCat(what, ": ", disk.status().message()));
  }
  return std::unique_ptr<VirtioScsi>(
      new VirtioScsi(std::move(backend), std::move(options), std::move(*disk)));
}

VirtioScsi::VirtioScsi(std::unique_ptr<block::BlockBackend> backend, VirtioScsiOptions options,
                       std::unique_ptr<scsi::ScsiDisk> disk)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      name_(absl::StrCat("virtio-scsi ", options_.id)),
      disk_(std::move(disk)) {
  absl::Status attached = target_.AttachLun(0, *disk_);
  KVMINI_CHECK(attached.ok(), "attaching LUN 0 to an empty SCSI target");
}

VirtioScsi::~VirtioScsi() {
  KVMINI_CHECK(started_.load() == completed_.load(),
               "virtio-scsi destroyed with commands in flight");
}

void VirtioScsi::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  std::array<uint8_t, config::kSize> bytes{};
  const scsi::DiskProfile& profile = disk_->profile();
  const uint64_t max_sectors = uint64_t{profile.max_transfer_blocks} * profile.block_size / 512;
  StoreLittleEndian<uint32_t>(bytes, config::kNumQueues, options_.num_request_queues);
  // Header and response take two descriptors of a direct chain.
  StoreLittleEndian<uint32_t>(bytes, config::kSegMax, options_.queue_size - 2u);
  StoreLittleEndian<uint32_t>(bytes, config::kMaxSectors, ClampTo32(max_sectors));
  StoreLittleEndian<uint32_t>(bytes, config::kCmdPerLun,
                              std::min<uint32_t>(kCommandsPerLun, options_.queue_size));
  StoreLittleEndian<uint32_t>(bytes, config::kEventInfoSize, kEventInfoSizeBytes);
  StoreLittleEndian<uint32_t>(bytes, config::kSenseSize, sense_size());
  StoreLittleEndian<uint32_t>(bytes, config::kCdbSize, cdb_size());
  StoreLittleEndian<uint16_t>(bytes, config::kMaxChannel, 0);
  StoreLittleEndian<uint16_t>(bytes, config::kMaxTarget, kMaxTarget);
  StoreLittleEndian<uint32_t>(bytes, config::kMaxLun, scsi::kMaxLun);

  std::fill(data.begin(), data.end(), 0);
  if (offset >= bytes.size()) return;
  const size_t n = std::min<uint64_t>(data.size(), bytes.size() - offset);
  std::memcpy(data.data(), bytes.data() + offset, n);
}

void VirtioScsi::WriteConfig(uint64_t offset, std::span<const uint8_t> data) {
  // sense_size and cdb_size, adjacent, are the only writable fields; a
  // write may cover part of one (byte accesses) or spill into read-only
  // neighbours, which are ignored.
  util::MutexLock lock(&config_write_mutex_);
  std::array<uint8_t, 8> fields;
  StoreLittleEndian<uint32_t>(fields, 0, sense_size());
  StoreLittleEndian<uint32_t>(fields, 4, cdb_size());
  bool ignored = false;
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t position = offset + i;
    if (position >= config::kSenseSize && position < config::kCdbSize + 4) {
      fields[position - config::kSenseSize] = data[i];
    } else {
      ignored = true;
    }
  }
  if (ignored) {
    LogGuestError(data.size(), "-byte config write at offset ", offset,
                  " touches read-only fields; only sense_size and cdb_size are writable");
  }
  const uint32_t sense = LoadLittleEndian<uint32_t>(fields, 0);
  const uint32_t cdb = LoadLittleEndian<uint32_t>(fields, 4);
  if (sense > kSenseSizeLimit) {
    LogGuestError("sense_size ", sense, " refused (at most ", kSenseSizeLimit, ")");
  } else {
    sense_size_.store(sense, std::memory_order_release);
  }
  if (cdb > kCdbSizeLimit) {
    LogGuestError("cdb_size ", cdb, " refused (at most ", kCdbSizeLimit, ")");
  } else {
    cdb_size_.store(cdb, std::memory_order_release);
  }
}

void VirtioScsi::Activate(uint64_t, std::span<Virtqueue* const> queues) {
  queues_.assign(queues.begin(), queues.end());
  commands_.assign(queues.size(), {});
  scratch_chains_.assign(queues.size(), {});
  controls_.clear();
  if (queues[kControlQueue]->configured()) controls_.resize(queues[kControlQueue]->size());
  for (size_t i = kFirstRequestQueue; i < queues.size(); ++i) {
    if (!queues[i]->configured()) continue;
    commands_[i].resize(queues[i]->size());
    for (Command& command : commands_[i]) command.queue = queues[i];
  }
  activated_ = true;
}

void VirtioScsi::Reset() {
  KVMINI_CHECK(started_.load() == completed_.load() && disk_->in_flight() == 0,
               "virtio-scsi reset with commands in flight");
  queues_.clear();
  commands_.clear();
  controls_.clear();
  scratch_chains_.clear();
  sense_size_.store(kDefaultSenseSize, std::memory_order_release);
  cdb_size_.store(kDefaultCdbSize, std::memory_order_release);
  // As a bus reset does to a real disk (and QEMU's to scsi-hd): mode pages
  // back to their defaults, and a power-on/reset unit attention for the
  // next driver. Not before the first activation: nothing to forget then.
  if (activated_) disk_->Reset([] {});  // nothing in flight: runs at once
  activated_ = false;
}

void VirtioScsi::DrainBackends() {
  backend_->Drain();
  // Every command was published before the dataplane stopped waiting.
  KVMINI_CHECK(disk_->in_flight() == 0, "virtio-scsi drained with disk commands in flight");
}

void VirtioScsi::MoveBackends(util::AioContext& context) {
  if (&backend_->context() != &context) backend_->SetAioContext(context);
}

VirtioScsiStats VirtioScsi::stats() const {
  const uint64_t completed = completed_.load(std::memory_order_relaxed);
  const uint64_t started = started_.load(std::memory_order_relaxed);
  return {completed,
          started >= completed ? started - completed : 0,
          bytes_read_.load(std::memory_order_relaxed),
          bytes_written_.load(std::memory_order_relaxed),
          errors_.load(std::memory_order_relaxed),
          task_management_.load(std::memory_order_relaxed)};
}

void VirtioScsi::ProcessQueue(Virtqueue& queue) {
  // Queues, disk and backend move together: anything else is a dataplane
  // bug that would race with the backend's own thread.
  KVMINI_CHECK(backend_->context().InHomeThread(),
               "virtio-scsi queue processed outside its backend's event loop thread");
  const uint16_t index = queue.index();
  if (index >= scratch_chains_.size()) return;  // not activated
  // Event buffers wait in the ring for an event; we have none to report.
  if (index == kEventQueue) return;
  if (index == kControlQueue) {
    queue.ServeAvailable(scratch_chains_[index],
                         [&](const DescriptorChain& chain) { HandleControl(queue, chain); });
    return;
  }
  queue.ServeAvailable(scratch_chains_[index],
                       [&](const DescriptorChain& chain) { HandleCommand(queue, chain); });
}

void VirtioScsi::HandleCommand(Virtqueue& queue, const DescriptorChain& chain) {
  Command& command = commands_[queue.index()][chain.head];
  if (command.busy) {
    queue.Break(absl::StrFormat("descriptor %u made available again while its command is in "
                                "flight",
                                chain.head));
    queue.DropPopped();
    return;
  }
  if (!WritablePrefixInRam(chain, kFixedResponseBytes)) {
    queue.Break(absl::StrFormat("command at descriptor %u has no room in RAM for the %u-byte "
                                "response header",
                                chain.head, kFixedResponseBytes));
    queue.DropPopped();
    return;
  }
  command.busy = true;
  command.head = chain.head;
  command.transfer = Transfer::kOther;
  command.data_out_bytes = 0;
  command.response_bytes = kFixedResponseBytes + sense_size();
  // Answer through the whole response header if it is there, else through
  // its fixed part (the FAILURE answer below needs no more).
  const uint64_t room = WritablePrefixInRam(chain, command.response_bytes)
                            ? command.response_bytes
                            : kFixedResponseBytes;
  command.response = chain.Iovecs(/*writable=*/true, 0, chain.TotalLength(true) - room);
  started_.fetch_add(1, std::memory_order_relaxed);
  command.submitting = true;
  StartCommand(command, chain);
  command.submitting = false;
}

void VirtioScsi::StartCommand(Command& command, const DescriptorChain& chain) {
  const uint32_t cdb_size = this->cdb_size();
  const uint64_t header_bytes = kCommandCdb + cdb_size;
  const uint64_t readable = chain.TotalLength(false);
  const uint64_t writable = chain.TotalLength(true);
  if (!chain.defect.empty()) {
    LogGuestError("command at descriptor ", chain.head, ": ", chain.defect);
    return RefuseCommand(command, response::kFailure, 0);
  }
  if (writable < command.response_bytes) {
    LogGuestError("command at descriptor ", chain.head, ": ", writable,
                  " writable bytes, the response header needs ", command.response_bytes,
                  " (sense_size ", command.response_bytes - kFixedResponseBytes, ")");
    return RefuseCommand(command, response::kFailure, 0);
  }
  if (readable < header_bytes) {
    LogGuestError("command at descriptor ", chain.head, ": ", readable,
                  " readable bytes, the request header needs ", header_bytes, " (cdb_size ",
                  cdb_size, ")");
    return RefuseCommand(command, response::kFailure, 0);
  }
  const uint64_t data_out_bytes = readable - header_bytes;
  const uint64_t data_in_bytes = writable - command.response_bytes;
  if (data_out_bytes > 0 && data_in_bytes > 0) {
    LogGuestError("command at descriptor ", chain.head,
                  " has data in both directions; VIRTIO_SCSI_F_INOUT is not offered");
    return RefuseCommand(command, response::kFailure, 0);
  }
  const uint64_t data_bytes = data_out_bytes + data_in_bytes;

  std::array<uint8_t, kCommandCdb + scsi::ScsiRequest::kMaxCdbLength> header{};
  const size_t copied_cdb = std::min<size_t>(cdb_size, scsi::ScsiRequest::kMaxCdbLength);
  chain.CopyFromReadable(0, std::span(header.data(), kCommandCdb + copied_cdb));
  const std::optional<scsi::LunAddress> address =
      scsi::DecodeVirtioLun(std::span<const uint8_t, 8>(header.data() + kCommandLun, 8));
  if (!address || address->target != 0) {
    return RefuseCommand(command, response::kBadTarget, data_bytes);
  }

  scsi::ScsiRequest request;
  request.tag = LoadLittleEndian<uint64_t>(header, kCommandTag);
  request.SetCdb(std::span(header.data() + kCommandCdb, copied_cdb));
  request.sense_capacity = command.response_bytes - kFixedResponseBytes;
  if (data_out_bytes > 0) request.data_out = chain.Iovecs(false, header_bytes, 0);
  if (data_in_bytes > 0) request.data_in = chain.Iovecs(true, command.response_bytes, 0);
  command.data_out_bytes = data_out_bytes;
  if (copied_cdb > 0 && IsRead(request.cdb[0])) command.transfer = Transfer::kRead;
  if (copied_cdb > 0 && IsWrite(request.cdb[0])) command.transfer = Transfer::kWrite;
  target_.Submit(*address, std::move(request),
                 [this, &command](const scsi::ScsiResult& result) {
                   CompleteCommand(command, result);
                 });
}

void VirtioScsi::CompleteCommand(Command& command, const scsi::ScsiResult& result) {
  KVMINI_CHECK(backend_->context().InHomeThread(),
               "virtio-scsi completion outside its backend's event loop thread");
  uint8_t code = response::kOk;
  switch (result.response) {
    case scsi::ScsiResult::Response::kCompleted:
      break;
    case scsi::ScsiResult::Response::kOverrun:
      code = response::kOverrun;
      break;
    case scsi::ScsiResult::Response::kAborted:
      code = response::kAborted;
      break;
  }
  std::array<uint8_t, kFixedResponseBytes + scsi::kFixedSenseLength> bytes{};
  StoreLittleEndian<uint32_t>(bytes, kResponseSenseLength, result.sense_length);
  StoreLittleEndian<uint32_t>(bytes, kResponseResidual, ClampTo32(result.residual));
  bytes[kResponseStatus] = result.status;
  bytes[kResponseCode] = code;
  const std::span<const uint8_t> sense = result.sense_bytes();
  std::copy(sense.begin(), sense.end(), bytes.begin() + kResponseSense);
  scsi::CopyToIovecs(command.response, std::span(bytes.data(), kResponseSense + sense.size()));

  const bool good = code == response::kOk && result.status == scsi::status::kGood;
  uint64_t read = 0, written_to_disk = 0;
  if (good && command.transfer == Transfer::kRead) read = result.data_in_length;
  if (good && command.transfer == Transfer::kWrite) {
    written_to_disk = command.data_out_bytes - std::min(result.residual, command.data_out_bytes);
  }
  FinishCommand(command, ClampTo32(command.response_bytes + result.data_in_length), !good, read,
                written_to_disk);
}

void VirtioScsi::RefuseCommand(Command& command, uint8_t code, uint64_t residual) {
  std::array<uint8_t, kFixedResponseBytes> bytes{};
  StoreLittleEndian<uint32_t>(bytes, kResponseResidual, ClampTo32(residual));
  bytes[kResponseCode] = code;
  scsi::CopyToIovecs(command.response, bytes);
  FinishCommand(command, kFixedResponseBytes, /*error=*/true, 0, 0);
}

void VirtioScsi::FinishCommand(Command& command, uint32_t written, bool error, uint64_t read,
                               uint64_t written_to_disk) {
  if (error) errors_.fetch_add(1, std::memory_order_relaxed);
  if (read > 0) bytes_read_.fetch_add(read, std::memory_order_relaxed);
  if (written_to_disk > 0) bytes_written_.fetch_add(written_to_disk, std::memory_order_relaxed);
  completed_.fetch_add(1, std::memory_order_relaxed);
  command.busy = false;
  if (command.submitting) {
    command.queue->Push(command.head, written);  // the pass publishes it
  } else {
    command.queue->PushAndPublishSoon(command.head, written);
  }
}

}  // namespace kvmini::hw::virtio

#include "hw/virtio/virtio_blk.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "util/check.h"

namespace kvmini::hw::virtio {
namespace {
template <typename T>
void Put(std::span<uint8_t> config, size_t offset, T value) {
  std::memcpy(config.data() + offset, &value, sizeof(value));  // x86: little endian
}

}  // namespace

absl::StatusOr<std::unique_ptr<VirtioBlk>> VirtioBlk::Create(
    std::unique_ptr<block::BlockBackend> backend, VirtioBlkOptions options) {
  const std::string what = absl::StrCat("virtio-blk '", options.id, "' (", backend->path(), ")");
  if (options.serial.size() > blk::kIdBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: serial '%s' is %u bytes long, at most %u fit", what, options.serial,
        options.serial.size(), blk::kIdBytes));
  }
  if (options.num_queues < 1 || options.num_queues > kMaxQueues) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: queues=%u is outside 1..%u", what,
                                                      options.num_queues, kMaxQueues));
  }
  const uint16_t size = options.queue_size;
  if (size < 4 || (size & (size - 1)) != 0 || size > kMaxQueueSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: queue size %u is not a power of two in 4..32768", what, size));
  }
  if (backend->size_bytes() % blk::kSectorSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: image size %u is not a multiple of 512 bytes", what, backend->size_bytes()));
  }
  return std::unique_ptr<VirtioBlk>(new VirtioBlk(std::move(backend), std::move(options)));
}

VirtioBlk::VirtioBlk(std::unique_ptr<block::BlockBackend> backend, VirtioBlkOptions options)
    : backend_(std::move(backend)),
      options_(std::move(options)),
      name_(absl::StrCat("virtio-blk ", options_.id)),
      capacity_sectors_(backend_->size_bytes() / blk::kSectorSize),
      block_size_(std::max<uint32_t>(backend_->alignment(), blk::kSectorSize)) {
  BuildConfig();
}

VirtioBlk::~VirtioBlk() {
  KVMINI_CHECK(started_.load() == completed_.load(), "virtio-blk destroyed with requests in flight");
}

void VirtioBlk::BuildConfig() {
  std::span<uint8_t> config(config_);
  // Logical block = the image's alignment (4 KiB with O_DIRECT), so the
  // guest never sends a write the backend would have to read-modify-write.
  const uint32_t sectors_per_block = block_size_ / blk::kSectorSize;
  Put<uint64_t>(config, 0, capacity_sectors_);
  Put<uint32_t>(config, 8, blk::kSizeMax);
  Put<uint32_t>(config, 12, options_.queue_size - 2u);  // seg_max: header and status take two
  Put<uint32_t>(config, 20, block_size_);
  Put<uint8_t>(config, 24, 0);  // physical block = logical block
  Put<uint8_t>(config, 25, 0);  // alignment offset
  Put<uint16_t>(config, 26, 1);  // min_io_size, in logical blocks
  Put<uint32_t>(config, 28, 0);  // opt_io_size: no preference
  Put<uint16_t>(config, 34, options_.num_queues);
  Put<uint32_t>(config, 36, blk::kMaxDiscardSectors);
  Put<uint32_t>(config, 40, blk::kMaxDiscardSegments);
  Put<uint32_t>(config, 44, sectors_per_block);
  Put<uint32_t>(config, 48, blk::kMaxDiscardSectors);
  Put<uint32_t>(config, 52, blk::kMaxDiscardSegments);
  Put<uint8_t>(config, 56, 1);  // write_zeroes_may_unmap
}

uint64_t VirtioBlk::device_features() const {
  uint64_t features = blk::kFeatureSizeMax | blk::kFeatureSegMax | blk::kFeatureBlockSize |
                      blk::kFeatureFlush | blk::kFeatureTopology | blk::kFeatureDiscard |
                      blk::kFeatureWriteZeroes;
  if (backend_->read_only()) features |= blk::kFeatureReadOnly;
  if (options_.num_queues > 1) features |= blk::kFeatureMultiQueue;
  return features;
}

void VirtioBlk::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= config_.size()) return;
  size_t n = std::min<uint64_t>(data.size(), config_.size() - offset);
  std::memcpy(data.data(), config_.data() + offset, n);
}

void VirtioBlk::WriteConfig(uint64_t, std::span<const uint8_t>) {
  // Only `writeback` is writable, and only with CONFIG_WCE, not offered.
}

void VirtioBlk::Activate(uint64_t, std::span<Virtqueue* const> queues) {
  requests_.assign(queues.size(), {});
  scratch_chains_.assign(queues.size(), {});
  for (size_t i = 0; i < queues.size(); ++i) {
    if (!queues[i]->configured()) continue;
    requests_[i].resize(queues[i]->size());
    for (Request& request : requests_[i]) request.queue = queues[i];
  }
}

void VirtioBlk::Reset() {
  KVMINI_CHECK(started_.load() == completed_.load(), "virtio-blk reset with requests in flight");
  requests_.clear();
  scratch_chains_.clear();
}

void VirtioBlk::DrainBackends() { backend_->Drain(); }

void VirtioBlk::MoveBackends(util::AioContext& context) {
  if (&backend_->context() != &context) backend_->SetAioContext(context);
}

VirtioBlkStats VirtioBlk::stats() const {
  uint64_t completed = completed_.load(std::memory_order_relaxed);
  uint64_t started = started_.load(std::memory_order_relaxed);
  return {completed, started >= completed ? started - completed : 0,
          bytes_read_.load(std::memory_order_relaxed),
          bytes_written_.load(std::memory_order_relaxed),
          errors_.load(std::memory_order_relaxed)};
}

template <typename... Args>
void VirtioBlk::LogGuestError(const Args&... args) {
  if (!log_limiter_.Allow()) return;
  KVMINI_LOG(Warning) << name_ << ": " << absl::StrCat(args...);
}

void VirtioBlk::ProcessQueue(Virtqueue& queue) {
  // Queues and backend move together: anything else is a dataplane bug
  // that would race with the backend's own thread.
  KVMINI_CHECK(backend_->context().InHomeThread(),
               "virtio-blk queue processed outside its backend's event loop thread");
  if (queue.index() >= scratch_chains_.size()) return;  // not activated
  queue.ServeAvailable(scratch_chains_[queue.index()],
                       [&](const DescriptorChain& chain) { HandleChain(queue, chain); });
}

bool VirtioBlk::InRange(uint64_t sector, uint64_t sectors) const {
  return sector <= capacity_sectors_ && sectors <= capacity_sectors_ - sector;
}

bool VirtioBlk::Aligned(uint64_t sector, uint64_t bytes) const {
  const uint64_t sectors_per_block = block_size_ / blk::kSectorSize;
  return sector % sectors_per_block == 0 && bytes % block_size_ == 0;
}

void VirtioBlk::HandleChain(Virtqueue& queue, const DescriptorChain& chain) {
  Request& request = requests_[queue.index()][chain.head];
  if (request.busy) {
    queue.Break(absl::StrFormat("descriptor %u made available again while its request is in "
                                "flight",
                                chain.head));
    queue.DropPopped();
    return;
  }
  uint8_t* status = chain.LastWritableByte();
  if (status == nullptr) {
    queue.Break(absl::StrFormat("request at descriptor %u has no writable status byte at its "
                                "end",
                                chain.head));
    queue.DropPopped();
    return;
  }
  request.busy = true;
  request.head = chain.head;
  request.status = status;
  request.type = 0;
  request.data_bytes = 0;
  request.pending = 0;
  request.first_error = 0;
  started_.fetch_add(1, std::memory_order_relaxed);

  uint32_t written = 1;  // the status byte
  std::optional<uint8_t> answer;
  blk::RequestHeader header{};
  if (!chain.defect.empty()) {
    LogGuestError("request at descriptor ", chain.head, ": ", chain.defect);
    answer = blk::kStatusIoError;
  } else if (chain.CopyFromReadable(0, std::span(reinterpret_cast<uint8_t*>(&header),
                                                 sizeof(header))) != sizeof(header)) {
    LogGuestError("request at descriptor ", chain.head, " has no 16-byte header");
    answer = blk::kStatusIoError;
  } else {
    request.type = header.type;
    answer = Start(request, chain, header, written);
  }
  if (!answer) return;  // completes in OnBackendDone
  *status = *answer;
  Account(*answer, request.type, request.data_bytes);
  request.busy = false;
  queue.Push(chain.head, written);
}

std::optional<uint8_t> VirtioBlk::Start(Request& request, const DescriptorChain& chain,
                                        const blk::RequestHeader& header, uint32_t& written) {
  switch (header.type) {
    case blk::kTypeIn:
    case blk::kTypeOut: {
      const bool read = header.type == blk::kTypeIn;
      // In: data is every writable byte but the status; out: every
      // readable byte after the header.
      const uint64_t bytes = read ? chain.TotalLength(true) - 1 : chain.TotalLength(false) - 16;
      if (!Aligned(header.sector, bytes) || !InRange(header.sector, bytes / blk::kSectorSize)) {
        LogGuestError(read ? "read" : "write", " of ", bytes, " bytes at sector ",
                      header.sector, " is misaligned or beyond the capacity of ",
                      capacity_sectors_, " sectors");
        return blk::kStatusIoError;
      }
      if (!read && backend_->read_only()) return blk::kStatusIoError;
      request.data_bytes = bytes;
      if (bytes == 0) return blk::kStatusOk;
      request.pending = 1;
      const uint64_t offset = header.sector * blk::kSectorSize;
      if (read) {
        backend_->Read(offset, chain.Iovecs(true, 0, 1), BackendCompletion(request));
      } else {
        backend_->Write(offset, chain.Iovecs(false, 16, 0), BackendCompletion(request));
      }
      return std::nullopt;
    }
    case blk::kTypeFlush:
      request.pending = 1;
      backend_->Flush(BackendCompletion(request));
      return std::nullopt;
    case blk::kTypeGetId: {
      std::array<uint8_t, blk::kIdBytes> id{};  // NUL padded, no terminator at 20
      std::memcpy(id.data(), options_.serial.data(), options_.serial.size());
      const uint64_t room = chain.TotalLength(true) - 1;
      const size_t n = std::min<uint64_t>(room, id.size());
      chain.CopyToWritable(0, std::span(id.data(), n));
      written += n;
      return blk::kStatusOk;
    }
    case blk::kTypeDiscard:
    case blk::kTypeWriteZeroes:
      return StartDiscardOrWriteZeroes(request, chain, header);
    default:
      return blk::kStatusUnsupported;
  }
}

std::optional<uint8_t> VirtioBlk::StartDiscardOrWriteZeroes(Request& request,
                                                            const DescriptorChain& chain,
                                                            const blk::RequestHeader& header) {
  const bool discard = header.type == blk::kTypeDiscard;
  const uint64_t bytes = chain.TotalLength(false) - 16;
  if (bytes == 0 || bytes % sizeof(blk::DiscardSegment) != 0) {
    LogGuestError(discard ? "discard" : "write-zeroes", " request with ", bytes,
                  " bytes of segments, not a positive multiple of 16");
    return blk::kStatusIoError;
  }
  const uint64_t count = bytes / sizeof(blk::DiscardSegment);
  if (count > blk::kMaxDiscardSegments) return blk::kStatusUnsupported;
  std::array<blk::DiscardSegment, blk::kMaxDiscardSegments> segments;
  chain.CopyFromReadable(16, std::span(reinterpret_cast<uint8_t*>(segments.data()), bytes));
  for (uint64_t i = 0; i < count; ++i) {
    const blk::DiscardSegment& segment = segments[i];
    if ((segment.flags & ~blk::kSegmentFlagUnmap) != 0 ||
        (discard && (segment.flags & blk::kSegmentFlagUnmap))) {
      return blk::kStatusUnsupported;
    }
    if (segment.num_sectors > blk::kMaxDiscardSectors ||
        !Aligned(segment.sector, uint64_t{segment.num_sectors} * blk::kSectorSize) ||
        !InRange(segment.sector, segment.num_sectors)) {
      LogGuestError(discard ? "discard" : "write-zeroes", " of ", segment.num_sectors,
                    " sectors at ", segment.sector,
                    " is too long, misaligned or beyond the capacity");
      return blk::kStatusIoError;
    }
  }
  if (backend_->read_only()) return blk::kStatusIoError;
  // Count them all first: a completion must not see the count reach zero
  // while later segments are still being started.
  for (uint64_t i = 0; i < count; ++i) request.pending += segments[i].num_sectors != 0;
  if (request.pending == 0) return blk::kStatusOk;
  for (uint64_t i = 0; i < count; ++i) {
    const blk::DiscardSegment& segment = segments[i];
    if (segment.num_sectors == 0) continue;
    const uint64_t offset = segment.sector * blk::kSectorSize;
    const uint64_t length = uint64_t{segment.num_sectors} * blk::kSectorSize;
    if (discard) {
      backend_->Discard(offset, length, BackendCompletion(request));
    } else {
      backend_->WriteZeroes(offset, length, segment.flags & blk::kSegmentFlagUnmap,
                            BackendCompletion(request));
    }
  }
  return std::nullopt;
}

block::BlockBackend::Completion VirtioBlk::BackendCompletion(Request& request) {
  return [this, &request](int result) { OnBackendDone(request, result); };
}

void VirtioBlk::OnBackendDone(Request& request, int result) {
  KVMINI_CHECK(backend_->context().InHomeThread(),
               "virtio-blk completion outside its backend's event loop thread");
  if (result < 0 && request.first_error == 0) request.first_error = result;
  if (--request.pending > 0) return;
  uint8_t status = blk::kStatusOk;
  if (request.first_error != 0) {
    status = blk::kStatusIoError;
    LogGuestError("request type ", request.type, " failed: ", std::strerror(-request.first_error));
  }
  *request.status = status;
  const uint32_t written =
      request.type == blk::kTypeIn && status == blk::kStatusOk
          ? static_cast<uint32_t>(request.data_bytes + 1)
          : 1;
  Account(status, request.type, request.data_bytes);
  request.busy = false;
  request.queue->PushAndPublishSoon(request.head, written);
}

void VirtioBlk::Account(uint8_t status, uint32_t type, uint64_t data_bytes) {
  if (status != blk::kStatusOk) {
    errors_.fetch_add(1, std::memory_order_relaxed);
  } else if (type == blk::kTypeIn) {
    bytes_read_.fetch_add(data_bytes, std::memory_order_relaxed);
  } else if (type == blk::kTypeOut) {
    bytes_written_.fetch_add(data_bytes, std::memory_order_relaxed);
  }
  completed_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace kvmini::hw::virtio

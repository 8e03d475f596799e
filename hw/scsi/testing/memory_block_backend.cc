#include "hw/scsi/testing/memory_block_backend.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hw/scsi/iovec_util.h"

namespace kvmini::hw::scsi {

MemoryBlockBackend::MemoryBlockBackend(util::AioContext& context, uint64_t size_bytes,
                                       bool read_only)
    : context_(&context), bytes_(size_bytes, 0), read_only_(read_only) {}

int MemoryBlockBackend::Begin(Operation operation) {
  ++counts_[operation];
  ++in_flight_;
  const auto failure = failures_.find(operation);
  if (failure == failures_.end()) return 0;
  const int error = failure->second;
  failures_.erase(failure);
  return -error;
}

bool MemoryBlockBackend::InRange(uint64_t offset, uint64_t length) const {
  return offset <= bytes_.size() && length <= bytes_.size() - offset;
}

void MemoryBlockBackend::Complete(Completion done, int status) {
  if (hold_) {
    held_.emplace_back(std::move(done), status);
    return;
  }
  context_->ScheduleOneshot([this, done = std::move(done), status]() mutable {
    --in_flight_;
    std::move(done)(status);
  });
}

size_t MemoryBlockBackend::ReleaseHeld() {
  std::vector<std::pair<Completion, int>> held = std::move(held_);
  held_.clear();
  const bool hold = hold_;
  hold_ = false;
  for (auto& [done, status] : held) Complete(std::move(done), status);
  hold_ = hold;
  return held.size();
}

uint64_t MemoryBlockBackend::count(Operation operation) const {
  const auto it = counts_.find(operation);
  return it == counts_.end() ? 0 : it->second;
}

void MemoryBlockBackend::Read(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  int status = Begin(Operation::kRead);
  const uint64_t length = TotalLength(buffers);
  if (status == 0 && !InRange(offset, length)) status = -EINVAL;
  if (status == 0) {
    CopyToIovecs(buffers, std::span<const uint8_t>(bytes_).subspan(offset, length));
  }
  Complete(std::move(done), status);
}

void MemoryBlockBackend::Write(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  int status = Begin(Operation::kWrite);
  const uint64_t length = TotalLength(buffers);
  if (status == 0 && !InRange(offset, length)) status = -EINVAL;
  if (status == 0 && read_only_) status = -EROFS;
  if (status == 0) CopyFromIovecs(std::span<uint8_t>(bytes_).subspan(offset, length), buffers);
  Complete(std::move(done), status);
}

void MemoryBlockBackend::Flush(Completion done) {
  Complete(std::move(done), Begin(Operation::kFlush));
}

void MemoryBlockBackend::Discard(uint64_t offset, uint64_t length, Completion done) {
  int status = Begin(Operation::kDiscard);
  if (status == 0 && !InRange(offset, length)) status = -EINVAL;
  if (status == 0 && read_only_) status = -EROFS;
  if (status == 0) {
    std::fill_n(bytes_.begin() + offset, length, 0);
    unmapped_.emplace_back(offset, length);
  }
  Complete(std::move(done), status);
}

void MemoryBlockBackend::WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap,
                                     Completion done) {
  int status = Begin(Operation::kWriteZeroes);
  if (status == 0 && !InRange(offset, length)) status = -EINVAL;
  if (status == 0 && read_only_) status = -EROFS;
  if (status == 0) {
    std::fill_n(bytes_.begin() + offset, length, 0);
    if (may_unmap) unmapped_.emplace_back(offset, length);
  }
  Complete(std::move(done), status);
}

void MemoryBlockBackend::Drain() {
  ReleaseHeld();
  while (in_flight_ > 0) context_->Poll(true);
}

void MemoryBlockBackend::SetAioContext(util::AioContext& context) { context_ = &context; }

}  // namespace kvmini::hw::scsi

#include "tests/harness/memory_block_backend.h"

#include <cerrno>
#include <cstring>

#include "util/aio_wait.h"
#include "util/check.h"

namespace kvmini::test {

MemoryBlockBackend::MemoryBlockBackend(uint64_t size_bytes, bool read_only,
                                       util::AioContext& context)
    : read_only_(read_only), data_(size_bytes), context_(&context) {}

MemoryBlockBackend::~MemoryBlockBackend() {
  KVMINI_CHECK(in_flight_.load() == 0, "MemoryBlockBackend destroyed with operations in flight");
}

bool MemoryBlockBackend::TakeInjectedError(int& error) {
  util::MutexLock lock(&mutex_);
  if (fail_count_ == 0) return false;
  --fail_count_;
  error = fail_error_;
  return true;
}

bool MemoryBlockBackend::InRange(uint64_t offset, uint64_t length) const {
  return offset <= data_.size() && length <= data_.size() - offset;
}

void MemoryBlockBackend::Complete(Completion done, int result) {
  {
    util::MutexLock lock(&mutex_);
    if (hold_) {
      held_.push_back({std::move(done), result});
      return;
    }
  }
  ScheduleCompletion(std::move(done), result);
}

void MemoryBlockBackend::ScheduleCompletion(Completion done, int result) {
  context_.load()->ScheduleOneshot([this, done = std::move(done), result]() mutable {
    std::move(done)(result);
    in_flight_.fetch_sub(1);
    util::AioWaitKick();
  });
}

void MemoryBlockBackend::Read(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  in_flight_.fetch_add(1);
  int error = 0;
  if (TakeInjectedError(error)) return Complete(std::move(done), error);
  for (const iovec& buffer : buffers) {
    if (!InRange(offset, buffer.iov_len)) return Complete(std::move(done), -EINVAL);
    std::memcpy(buffer.iov_base, data_.data() + offset, buffer.iov_len);
    offset += buffer.iov_len;
  }
  Complete(std::move(done), 0);
}

void MemoryBlockBackend::Write(uint64_t offset, std::vector<iovec> buffers, Completion done) {
  in_flight_.fetch_add(1);
  int error = 0;
  if (TakeInjectedError(error)) return Complete(std::move(done), error);
  if (read_only_) return Complete(std::move(done), -EROFS);
  for (const iovec& buffer : buffers) {
    if (!InRange(offset, buffer.iov_len)) return Complete(std::move(done), -EINVAL);
    std::memcpy(data_.data() + offset, buffer.iov_base, buffer.iov_len);
    offset += buffer.iov_len;
  }
  Complete(std::move(done), 0);
}

void MemoryBlockBackend::Flush(Completion done) {
  in_flight_.fetch_add(1);
  flushes_.fetch_add(1);
  int error = 0;
  if (TakeInjectedError(error)) return Complete(std::move(done), error);
  Complete(std::move(done), 0);
}

void MemoryBlockBackend::Discard(uint64_t offset, uint64_t length, Completion done) {
  discards_.fetch_add(1);
  ZeroRange(offset, length, std::move(done));
}

void MemoryBlockBackend::WriteZeroes(uint64_t offset, uint64_t length, bool, Completion done) {
  write_zeroes_.fetch_add(1);
  ZeroRange(offset, length, std::move(done));
}

void MemoryBlockBackend::ZeroRange(uint64_t offset, uint64_t length, Completion done) {
  in_flight_.fetch_add(1);
  int error = 0;
  if (TakeInjectedError(error)) return Complete(std::move(done), error);
  if (read_only_) return Complete(std::move(done), -EROFS);
  if (!InRange(offset, length)) return Complete(std::move(done), -EINVAL);
  std::memset(data_.data() + offset, 0, length);
  Complete(std::move(done), 0);
}

void MemoryBlockBackend::Drain() {
  util::AioWaitWhileUnlocked([this] { return in_flight_.load() > 0; });
}

void MemoryBlockBackend::SetAioContext(util::AioContext& context) {
  KVMINI_CHECK(in_flight_.load() == 0, "MemoryBlockBackend moved with operations in flight");
  context_.store(&context);
}

void MemoryBlockBackend::FailNext(int count, int error) {
  util::MutexLock lock(&mutex_);
  fail_count_ = count;
  fail_error_ = error;
}

void MemoryBlockBackend::HoldCompletions(bool hold) {
  util::MutexLock lock(&mutex_);
  hold_ = hold;
}

void MemoryBlockBackend::ReleaseHeld() {
  std::deque<Held> held;
  {
    util::MutexLock lock(&mutex_);
    held.swap(held_);
  }
  for (Held& entry : held) ScheduleCompletion(std::move(entry.done), entry.result);
}

uint64_t MemoryBlockBackend::held() const {
  util::MutexLock lock(&mutex_);
  return held_.size();
}

}  // namespace kvmini::test

// MemoryBlockBackend: a BlockBackend over a byte vector, for device tests
// that need what a real image cannot give on demand: failing operations
// (to check IOERR) and completions held back (to keep requests in flight
// across a reset or a dataplane move deterministically). Everything else
// is tested on the real backend over image files.
//
// Like the real one it completes in its context's thread, never inside the
// call that started the operation.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "block/block_backend.h"
#include "util/aio_context.h"
#include "util/mutex.h"

namespace kvmini::test {

class MemoryBlockBackend final : public block::BlockBackend {
 public:
  MemoryBlockBackend(uint64_t size_bytes, bool read_only, util::AioContext& context);
  ~MemoryBlockBackend() override;

  const std::string& path() const override { return path_; }
  uint64_t size_bytes() const override { return data_.size(); }
  bool read_only() const override { return read_only_; }
  uint32_t alignment() const override { return 1; }
  block::AioEngine engine() const override { return block::AioEngine::kThreads; }
  void Read(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Write(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Flush(Completion done) override;
  void Discard(uint64_t offset, uint64_t length, Completion done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap, Completion done) override;
  uint64_t in_flight() const override { return in_flight_.load(); }
  void Drain() override;
  void SetAioContext(util::AioContext& context) override;
  util::AioContext& context() const override { return *context_.load(); }

  // The next `count` operations fail with `error` (a negative errno).
  void FailNext(int count, int error);
  // While held, completions wait until ReleaseHeld(). Any thread.
  void HoldCompletions(bool hold);
  void ReleaseHeld();
  uint64_t held() const;
  // Operations of each kind started so far. Any thread.
  uint64_t flushes() const { return flushes_.load(); }
  uint64_t discards() const { return discards_.load(); }
  uint64_t write_zeroes() const { return write_zeroes_.load(); }
  // The image bytes; touch only while nothing is in flight.
  std::vector<uint8_t>& data() { return data_; }

 private:
  bool TakeInjectedError(int& error);
  bool InRange(uint64_t offset, uint64_t length) const;
  // Discard and write-zeroes: both leave zeroes here.
  void ZeroRange(uint64_t offset, uint64_t length, Completion done);
  // Completes now, or later if completions are held.
  void Complete(Completion done, int result);
  void ScheduleCompletion(Completion done, int result);

  const std::string path_ = "memory";
  const bool read_only_;
  std::vector<uint8_t> data_;
  std::atomic<util::AioContext*> context_;
  std::atomic<uint64_t> in_flight_{0};
  std::atomic<uint64_t> flushes_{0}, discards_{0}, write_zeroes_{0};

  mutable util::Mutex mutex_;
  int fail_count_ ABSL_GUARDED_BY(mutex_) = 0;
  int fail_error_ ABSL_GUARDED_BY(mutex_) = 0;
  bool hold_ ABSL_GUARDED_BY(mutex_) = false;
  struct Held {
    Completion done;
    int result;
  };
  std::deque<Held> held_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace kvmini::test

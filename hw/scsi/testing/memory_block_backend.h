// MemoryBlockBackend: a block::BlockBackend over a byte vector, for unit
// tests and the SCSI fuzz entry point, where a real image file would be slow
// or unavailable. It keeps the interface's contract (completions in the
// attached context, never inside the starting call; range and read-only
// errors) and adds what tests need: fault injection, holding completions
// back to keep requests in flight, and counters.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "block/block_backend.h"

namespace kvmini::hw::scsi {

class MemoryBlockBackend final : public block::BlockBackend {
 public:
  enum class Operation { kRead, kWrite, kFlush, kDiscard, kWriteZeroes };

  MemoryBlockBackend(util::AioContext& context, uint64_t size_bytes, bool read_only = false);

  // The image bytes, for tests to seed and inspect.
  std::vector<uint8_t>& bytes() { return bytes_; }
  // The next `operation` fails with -`error` (and has no effect).
  void FailNext(Operation operation, int error) { failures_[operation] = error; }
  // While holding, completions are kept back (operations still take effect
  // at once); ReleaseHeld() schedules them. Returns how many there were.
  void set_hold_completions(bool hold) { hold_ = hold; }
  size_t ReleaseHeld();
  size_t held() const { return held_.size(); }
  // What alignment() reports (an O_DIRECT image on a 4K-sector device).
  void set_alignment(uint32_t alignment) { alignment_ = alignment; }
  // Operations started, by kind.
  uint64_t count(Operation operation) const;
  // Byte ranges deallocated by Discard or WriteZeroes with may_unmap.
  const std::vector<std::pair<uint64_t, uint64_t>>& unmapped() const { return unmapped_; }

  const std::string& path() const override { return path_; }
  uint64_t size_bytes() const override { return bytes_.size(); }
  bool read_only() const override { return read_only_; }
  uint32_t alignment() const override { return alignment_; }
  void Read(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Write(uint64_t offset, std::vector<iovec> buffers, Completion done) override;
  void Flush(Completion done) override;
  void Discard(uint64_t offset, uint64_t length, Completion done) override;
  void WriteZeroes(uint64_t offset, uint64_t length, bool may_unmap, Completion done) override;
  uint64_t in_flight() const override { return in_flight_; }
  void Drain() override;
  void SetAioContext(util::AioContext& context) override;
  util::AioContext& context() const override { return *context_; }

 private:
  // Counts the operation; returns the injected failure (negative) or 0.
  int Begin(Operation operation);
  bool InRange(uint64_t offset, uint64_t length) const;
  void Complete(Completion done, int status);

  util::AioContext* context_;
  std::vector<uint8_t> bytes_;
  const bool read_only_;
  const std::string path_ = "memory";
  std::map<Operation, int> failures_;
  std::map<Operation, uint64_t> counts_;
  std::vector<std::pair<uint64_t, uint64_t>> unmapped_;
  uint32_t alignment_ = 1;
  bool hold_ = false;
  std::vector<std::pair<Completion, int>> held_;
  uint64_t in_flight_ = 0;
};

}  // namespace kvmini::hw::scsi

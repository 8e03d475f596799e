// Test harness for the SCSI emulation: an AioContext polled by the test
// thread, an in-memory (or real) backend, one ScsiDisk attached at LUN 0 of
// a ScsiTarget, and Run() which submits one request and polls until its
// completion.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "gtest/gtest.h"
#include "hw/scsi/scsi_disk.h"
#include "hw/scsi/scsi_target.h"
#include "hw/scsi/testing/memory_block_backend.h"
#include "util/aio_context.h"

namespace kvmini::hw::scsi::testing {

struct Exchange {
  ScsiResult result;
  std::vector<uint8_t> data_in;  // the whole data-in buffer after the command
  int completions = 0;

  SenseCode sense() const {
    if (result.sense_length < 14) return {0xff, 0xff, 0xff};
    return {static_cast<uint8_t>(result.sense[2] & 0x0f), result.sense[12], result.sense[13]};
  }
  std::span<const uint8_t> written() const {
    return std::span<const uint8_t>(data_in).first(result.data_in_length);
  }
};

struct RunOptions {
  uint64_t data_in_capacity = 0;
  std::vector<uint8_t> data_out = {};
  uint32_t sense_capacity = 96;
  std::array<uint8_t, 8> lun = EncodeVirtioLun(0, 0);
  uint64_t tag = 0;
};

class ScsiHarness {
 public:
  // Over a MemoryBlockBackend of `size_bytes`.
  explicit ScsiHarness(const ScsiDiskOptions& options = {}, uint64_t size_bytes = 1 << 20,
                       bool read_only = false);
  // Over a backend the caller opened in context().
  ScsiHarness(std::unique_ptr<util::AioContext> context,
              std::unique_ptr<block::BlockBackend> backend, const ScsiDiskOptions& options);
  ~ScsiHarness();

  // Submits and polls until the completion ran; the result says how often.
  Exchange Run(std::vector<uint8_t> cdb, const RunOptions& options = {});
  // Submits without waiting; the exchange fills in when the completion runs.
  void Start(Exchange& exchange, std::vector<uint8_t> cdb, const RunOptions& options);
  // Polls until every backend operation not held back by a
  // MemoryBlockBackend has completed and nothing is left to run.
  void Settle();

  util::AioContext& context() { return *context_; }
  block::BlockBackend& backend() { return *backend_; }
  // Only for harnesses over a MemoryBlockBackend.
  MemoryBlockBackend& memory() { return *memory_; }
  ScsiDisk& disk() { return *disk_; }
  ScsiTarget& target() { return target_; }

 private:
  void Attach(const ScsiDiskOptions& options);

  std::unique_ptr<util::AioContext> context_;
  std::unique_ptr<block::BlockBackend> backend_;
  MemoryBlockBackend* memory_ = nullptr;  // when the backend is one
  std::unique_ptr<ScsiDisk> disk_;
  ScsiTarget target_;
  // Data-out buffers must live until their command completes.
  std::vector<std::unique_ptr<std::vector<uint8_t>>> data_out_buffers_;
};

}  // namespace kvmini::hw::scsi::testing

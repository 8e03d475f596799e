// Building a ScsiResult for a request, shared by the disk and the target:
// the overrun rule, the residual rule and sense truncation live here only.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "hw/scsi/cdb.h"
#include "hw/scsi/scsi_protocol.h"
#include "hw/scsi/scsi_request.h"

namespace kvmini::hw::scsi {

// What a command answered from emulated state produced: its parameter data
// (data-in, cut to the allocation length later), or the sense to fail with.
struct EmulatedReply {
  static EmulatedReply Fail(SenseCode code) { return {code, {}}; }
  static EmulatedReply Data(std::vector<uint8_t> data) { return {std::nullopt, std::move(data)}; }
  std::optional<SenseCode> failure;
  std::vector<uint8_t> data;
};

// The buffer sizes of a request, summed once.
struct RequestBuffers {
  explicit RequestBuffers(const ScsiRequest& request);
  uint64_t data_in_capacity;
  uint64_t data_out_length;
};

// Whether `parsed` wants more data (or another direction) than the request's
// buffers provide: virtio-scsi's rule is that the allocation, transfer or
// parameter list length in the CDB must fit the buffers.
bool IsOverrun(const ParsedCdb& parsed, const RequestBuffers& buffers);

ScsiResult OverrunResult(const RequestBuffers& buffers);
ScsiResult AbortedResult(const RequestBuffers& buffers);
ScsiResult CheckConditionResult(const ScsiRequest& request, const RequestBuffers& buffers,
                                SenseCode code);
// GOOD; `data_out_consumed` bytes of data-out were used, nothing written.
ScsiResult GoodResult(const RequestBuffers& buffers, uint64_t data_out_consumed);
// GOOD with `data` (cut to `allocation_length` and to the buffer) copied
// into data-in.
ScsiResult DataInResult(const ScsiRequest& request, const RequestBuffers& buffers,
                        std::span<const uint8_t> data, uint64_t allocation_length);
// GOOD after the block layer filled `bytes` of data-in itself.
ScsiResult DataInWrittenResult(const RequestBuffers& buffers, uint64_t bytes);

}  // namespace kvmini::hw::scsi

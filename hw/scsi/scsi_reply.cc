#include "hw/scsi/scsi_reply.h"

#include <algorithm>

#include "hw/scsi/iovec_util.h"

namespace kvmini::hw::scsi {
namespace {

// The residual rule: whatever part of the buffer the initiator supplied was
// not transferred.
uint64_t Residual(const RequestBuffers& buffers, uint64_t data_in_written,
                  uint64_t data_out_consumed) {
  if (buffers.data_in_capacity > 0) return buffers.data_in_capacity - data_in_written;
  return buffers.data_out_length - data_out_consumed;
}

}  // namespace

RequestBuffers::RequestBuffers(const ScsiRequest& request)
    : data_in_capacity(TotalLength(request.data_in)),
      data_out_length(TotalLength(request.data_out)) {}

bool IsOverrun(const ParsedCdb& parsed, const RequestBuffers& buffers) {
  switch (parsed.direction) {
    case DataDirection::kNone:
      return false;
    case DataDirection::kIn:
      return parsed.transfer_bytes > buffers.data_in_capacity || buffers.data_out_length > 0;
    case DataDirection::kOut:
      return parsed.transfer_bytes > buffers.data_out_length || buffers.data_in_capacity > 0;
  }
  return true;
}

ScsiResult OverrunResult(const RequestBuffers& buffers) {
  ScsiResult result;
  result.response = ScsiResult::Response::kOverrun;
  result.residual = Residual(buffers, 0, 0);
  return result;
}

ScsiResult AbortedResult(const RequestBuffers& buffers) {
  ScsiResult result;
  result.response = ScsiResult::Response::kAborted;
  result.status = status::kTaskAborted;
  result.residual = Residual(buffers, 0, 0);
  return result;
}

ScsiResult CheckConditionResult(const ScsiRequest& request, const RequestBuffers& buffers,
                                SenseCode code) {
  ScsiResult result;
  result.status = status::kCheckCondition;
  result.sense = FixedSense(code);
  result.sense_length =
      static_cast<uint8_t>(std::min<uint64_t>(request.sense_capacity, kFixedSenseLength));
  result.residual = Residual(buffers, 0, 0);
  return result;
}

ScsiResult GoodResult(const RequestBuffers& buffers, uint64_t data_out_consumed) {
  ScsiResult result;
  result.residual = Residual(buffers, 0, data_out_consumed);
  return result;
}

ScsiResult DataInResult(const ScsiRequest& request, const RequestBuffers& buffers,
                        std::span<const uint8_t> data, uint64_t allocation_length) {
  const auto wanted = data.first(std::min<uint64_t>(data.size(), allocation_length));
  return DataInWrittenResult(buffers, CopyToIovecs(request.data_in, wanted));
}

ScsiResult DataInWrittenResult(const RequestBuffers& buffers, uint64_t bytes) {
  ScsiResult result;
  result.data_in_length = bytes;
  result.residual = Residual(buffers, bytes, 0);
  return result;
}

}  // namespace kvmini::hw::scsi

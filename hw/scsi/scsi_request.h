// The request/response contract between a SCSI transport (virtio-scsi in
// hw/virtio/) and the SCSI emulation in this folder. It carries no virtio
// types: the transport copies the CDB out of guest memory, maps the guest's
// data buffers to host iovecs, and translates ScsiResult back into its own
// response layout.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "hw/scsi/scsi_protocol.h"

namespace kvmini::hw::scsi {

struct ScsiRequest {
  // Every command we implement fits in 16 bytes; virtio-scsi's default (and
  // Linux's) cdb_size is 32. Longer CDBs are truncated to this.
  static constexpr size_t kMaxCdbLength = 32;

  // The initiator's task tag (virtio-scsi `id`), matched by AbortTask().
  uint64_t tag = 0;
  // A private copy: the guest could rewrite its CDB while we parse it.
  std::array<uint8_t, kMaxCdbLength> cdb{};
  // How many bytes of `cdb` the transport delivered (virtio-scsi: the
  // negotiated cdb_size). A command whose CDB is longer than this fails.
  uint8_t cdb_length = 0;
  // Host mappings of the initiator's buffers: data-out is read by the
  // device, data-in written. Both must stay valid until the completion runs.
  // Without bidirectional commands at most one of them is non-empty.
  std::vector<iovec> data_out;
  std::vector<iovec> data_in;
  // Bytes of sense data the initiator has room for (virtio-scsi sense_size).
  uint32_t sense_capacity = 0;

  // Copies `bytes` (at most kMaxCdbLength of them) into `cdb`.
  void SetCdb(std::span<const uint8_t> bytes);
};

struct ScsiResult {
  enum class Response {
    // The command ran; `status` and the sense data say how it went.
    kCompleted,
    // The CDB asks for more data than the buffers hold (allocation length,
    // transfer length or parameter list length beyond data-in/data-out), or
    // for a data direction the initiator gave no buffer for. Nothing ran,
    // nothing was transferred (virtio-scsi VIRTIO_SCSI_S_OVERRUN).
    kOverrun,
    // Ended by AbortTask/AbortAllTasks/Reset (virtio-scsi ABORTED). Its
    // side effects may or may not have happened; data_in_length is 0.
    kAborted,
  };

  Response response = Response::kCompleted;
  uint8_t status = status::kGood;
  // Fixed-format sense data, truncated to the request's sense_capacity.
  // Non-empty only with CHECK CONDITION.
  std::array<uint8_t, kFixedSenseLength> sense{};
  uint8_t sense_length = 0;
  // Bytes written at the start of data-in.
  uint64_t data_in_length = 0;
  // Bytes of the initiator's buffer not transferred: for data-in, its size
  // minus data_in_length; for data-out, its size minus the bytes the command
  // consumed (all of them when it failed before using the data). 64 bits
  // wide; the transport clamps to its field.
  uint64_t residual = 0;

  std::span<const uint8_t> sense_bytes() const { return {sense.data(), sense_length}; }
};

// Runs exactly once per submitted request, in the thread that serves the
// disk (see ScsiDisk). It may run inside the Submit() call itself.
using ScsiCompletion = absl::AnyInvocable<void(const ScsiResult& result) &&>;

}  // namespace kvmini::hw::scsi

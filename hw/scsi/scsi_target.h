// ScsiTarget: one SCSI target (virtio-scsi's "target" byte) holding the
// logical units behind it. It routes each request to its LUN and answers
// for the target itself: REPORT LUNS (also through the REPORT LUNS
// well-known LUN), and INQUIRY / REQUEST SENSE / TEST UNIT READY sent to a
// LUN that does not exist, as SPC-4 asks (INQUIRY peripheral byte 0x7F,
// everything else LOGICAL UNIT NOT SUPPORTED).
//
// Also the decoding of virtio-scsi's 8-byte LUN field. A transport answers
// BAD_TARGET itself when DecodeVirtioLun() fails or names a target it does
// not have.
//
// Threading: as ScsiDisk, every call from the thread serving the disks.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "hw/scsi/scsi_disk.h"
#include "hw/scsi/scsi_request.h"

namespace kvmini::hw::scsi {

// Flat-space LUNs run 0..16383 (14 bits).
inline constexpr uint16_t kMaxLun = 0x3fff;

struct LunAddress {
  enum class Kind : uint8_t {
    kLogicalUnit,          // `lun` is set
    kReportLunsWellKnown,  // W-LUN C101h, which only answers target commands
    kUnsupported,          // an addressing method we lack: treated as absent
  };
  Kind kind = Kind::kUnsupported;
  uint8_t target = 0;
  uint16_t lun = 0;
};

// virtio-scsi's LUN field: byte 0 = 1, byte 1 = target, bytes 2-3 a
// single-level LUN (peripheral addressing 00 LL, flat addressing 01LL LLLL,
// or the W-LUN C1 01), bytes 4-7 zero. nullopt when byte 0 is not 1.
std::optional<LunAddress> DecodeVirtioLun(std::span<const uint8_t, 8> bytes);
// The inverse for a plain LUN (flat addressing from 256 up, as Linux sends).
std::array<uint8_t, 8> EncodeVirtioLun(uint8_t target, uint16_t lun);

class ScsiTarget {
 public:
  // Errors: LUN beyond 16383, or already taken.
  absl::Status AttachLun(uint16_t lun, ScsiDisk& disk);
  void DetachLun(uint16_t lun);
  // The disk at `address`, or null (absent LUN, W-LUN, unsupported form).
  ScsiDisk* Find(const LunAddress& address) const;
  std::vector<uint16_t> luns() const;

  // Runs one command addressed to `address` (whose target is this one).
  // `done` runs exactly once, as with ScsiDisk::Submit().
  void Submit(const LunAddress& address, ScsiRequest request, ScsiCompletion done);

 private:
  ScsiResult AnswerForTarget(const LunAddress& address, const ScsiRequest& request);
  EmulatedReply ReportLuns(std::span<const uint8_t> cdb, uint64_t allocation_length) const;

  std::map<uint16_t, ScsiDisk*> luns_;
};

}  // namespace kvmini::hw::scsi

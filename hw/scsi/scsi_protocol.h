// SCSI wire constants the disk emulation speaks (SPC-4/SBC-3 numbering):
// operation codes, status bytes, and the sense codes we report, plus the
// builders for fixed- and descriptor-format sense data.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace kvmini::hw::scsi {

namespace opcode {
inline constexpr uint8_t kTestUnitReady = 0x00;
inline constexpr uint8_t kRequestSense = 0x03;
inline constexpr uint8_t kRead6 = 0x08;
inline constexpr uint8_t kWrite6 = 0x0a;
inline constexpr uint8_t kInquiry = 0x12;
inline constexpr uint8_t kModeSelect6 = 0x15;
inline constexpr uint8_t kModeSense6 = 0x1a;
inline constexpr uint8_t kStartStopUnit = 0x1b;
inline constexpr uint8_t kPreventAllowMediumRemoval = 0x1e;
inline constexpr uint8_t kReadCapacity10 = 0x25;
inline constexpr uint8_t kRead10 = 0x28;
inline constexpr uint8_t kWrite10 = 0x2a;
inline constexpr uint8_t kVerify10 = 0x2f;
inline constexpr uint8_t kSynchronizeCache10 = 0x35;
inline constexpr uint8_t kWriteSame10 = 0x41;
inline constexpr uint8_t kUnmap = 0x42;
inline constexpr uint8_t kModeSelect10 = 0x55;
inline constexpr uint8_t kModeSense10 = 0x5a;
inline constexpr uint8_t kRead16 = 0x88;
inline constexpr uint8_t kWrite16 = 0x8a;
inline constexpr uint8_t kVerify16 = 0x8f;
inline constexpr uint8_t kSynchronizeCache16 = 0x91;
inline constexpr uint8_t kWriteSame16 = 0x93;
inline constexpr uint8_t kServiceActionIn16 = 0x9e;
inline constexpr uint8_t kReportLuns = 0xa0;
inline constexpr uint8_t kRead12 = 0xa8;
inline constexpr uint8_t kWrite12 = 0xaa;
}  // namespace opcode

// SERVICE ACTION IN(16) service action (CDB byte 1, bits 4..0).
inline constexpr uint8_t kServiceActionReadCapacity16 = 0x10;

namespace status {
inline constexpr uint8_t kGood = 0x00;
inline constexpr uint8_t kCheckCondition = 0x02;
inline constexpr uint8_t kTaskAborted = 0x40;
}  // namespace status

// Sense key with additional sense code and qualifier.
struct SenseCode {
  uint8_t key;
  uint8_t asc;
  uint8_t ascq;
  friend bool operator==(const SenseCode&, const SenseCode&) = default;
};

namespace sense {
inline constexpr SenseCode kNoSense{0x00, 0x00, 0x00};
inline constexpr SenseCode kUnrecoveredReadError{0x03, 0x11, 0x00};
inline constexpr SenseCode kWriteError{0x03, 0x0c, 0x00};
inline constexpr SenseCode kInternalTargetFailure{0x04, 0x44, 0x00};
inline constexpr SenseCode kParameterListLengthError{0x05, 0x1a, 0x00};
inline constexpr SenseCode kInvalidOpcode{0x05, 0x20, 0x00};
inline constexpr SenseCode kLbaOutOfRange{0x05, 0x21, 0x00};
inline constexpr SenseCode kInvalidFieldInCdb{0x05, 0x24, 0x00};
inline constexpr SenseCode kLunNotSupported{0x05, 0x25, 0x00};
inline constexpr SenseCode kInvalidFieldInParameterList{0x05, 0x26, 0x00};
inline constexpr SenseCode kSavingParametersNotSupported{0x05, 0x39, 0x00};
inline constexpr SenseCode kPowerOnReset{0x06, 0x29, 0x00};
inline constexpr SenseCode kWriteProtected{0x07, 0x27, 0x00};
inline constexpr SenseCode kSpaceAllocationFailed{0x07, 0x27, 0x07};
inline constexpr SenseCode kIoProcessTerminated{0x0b, 0x00, 0x06};
inline constexpr SenseCode kMiscompareDuringVerify{0x0e, 0x1d, 0x00};
}  // namespace sense

inline constexpr size_t kFixedSenseLength = 18;
inline constexpr size_t kDescriptorSenseLength = 8;

// Fixed format (response code 0x70, current error, no INFORMATION field).
std::array<uint8_t, kFixedSenseLength> FixedSense(SenseCode code);
// Descriptor format (response code 0x72) without descriptors.
std::array<uint8_t, kDescriptorSenseLength> DescriptorSense(SenseCode code);

// The sense a failed block-layer operation reports. `errno_value` is
// positive (EIO, ENOSPC, ...); `writing` picks WRITE ERROR over UNRECOVERED
// READ ERROR for plain I/O errors. Choices (documented for users comparing
// with QEMU, which answers 0B/00/06 for every EIO):
//   EIO            -> 03/11/00 (read) or 03/0C/00 (write, flush, unmap)
//   EROFS          -> 07/27/00 write protected
//   ENOSPC, EDQUOT -> 07/27/07 space allocation failed (Linux reports it
//                     as a thin-provisioning exhaustion)
//   EINVAL         -> 05/21/00 (the image shrank under us)
//   anything else  -> 0B/00/06 aborted command, which Linux retries
SenseCode SenseFromErrno(int errno_value, bool writing);

}  // namespace kvmini::hw::scsi

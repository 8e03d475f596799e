#include "hw/scsi/scsi_protocol.h"

#include <cerrno>

namespace kvmini::hw::scsi {

std::array<uint8_t, kFixedSenseLength> FixedSense(SenseCode code) {
  std::array<uint8_t, kFixedSenseLength> bytes{};
  bytes[0] = 0x70;
  bytes[2] = code.key & 0x0f;
  bytes[7] = kFixedSenseLength - 8;  // additional sense length
  bytes[12] = code.asc;
  bytes[13] = code.ascq;
  return bytes;
}

std::array<uint8_t, kDescriptorSenseLength> DescriptorSense(SenseCode code) {
  std::array<uint8_t, kDescriptorSenseLength> bytes{};
  bytes[0] = 0x72;
  bytes[1] = code.key & 0x0f;
  bytes[2] = code.asc;
  bytes[3] = code.ascq;
  return bytes;
}

SenseCode SenseFromErrno(int errno_value, bool writing) {
  switch (errno_value) {
    case EIO:
      return writing ? sense::kWriteError : sense::kUnrecoveredReadError;
    case EROFS:
      return sense::kWriteProtected;
    case ENOSPC:
    case EDQUOT:
      return sense::kSpaceAllocationFailed;
    case EINVAL:
      return sense::kLbaOutOfRange;
    default:
      return sense::kIoProcessTerminated;
  }
}

}  // namespace kvmini::hw::scsi

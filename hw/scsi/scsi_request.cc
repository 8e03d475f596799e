#include "hw/scsi/scsi_request.h"

#include <algorithm>

namespace kvmini::hw::scsi {

void ScsiRequest::SetCdb(std::span<const uint8_t> bytes) {
  cdb_length = static_cast<uint8_t>(std::min(bytes.size(), kMaxCdbLength));
  cdb.fill(0);
  std::copy_n(bytes.begin(), cdb_length, cdb.begin());
}

}  // namespace kvmini::hw::scsi

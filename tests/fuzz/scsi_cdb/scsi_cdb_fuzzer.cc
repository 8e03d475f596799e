// Fuzzes the SCSI disk emulation: hostile CDBs with hostile buffer sizes,
// run against an in-memory disk (hw/scsi/testing). The entry point checks
// its own invariants (bounded copies, exactly-once completion, sense size).
#include <cstddef>
#include <cstdint>

#include "hw/scsi/testing/scsi_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kvmini::hw::scsi::ScsiFuzzOneInput(data, size);
}

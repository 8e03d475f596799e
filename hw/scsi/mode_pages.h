// MODE SENSE(6)/(10) and MODE SELECT(6)/(10) for a disk: the caching page
// (0x08, whose WCE bit is the only changeable field) and the control page
// (0x0A), with or without a block descriptor.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "hw/scsi/cdb.h"
#include "hw/scsi/disk_profile.h"
#include "hw/scsi/scsi_protocol.h"
#include "hw/scsi/scsi_reply.h"

namespace kvmini::hw::scsi {

struct ModeValues {
  bool write_cache;          // current WCE
  bool default_write_cache;  // WCE after a reset
};

// The full mode parameter data (not yet cut to the allocation length).
EmulatedReply ModeSense(const DiskProfile& profile, const ModeValues& values,
                        std::span<const uint8_t> cdb, const ParsedCdb& parsed);

// Checks a MODE SELECT against the current pages: only WCE may differ.
// On success stores the new WCE in `write_cache`; on failure leaves it and
// returns the sense (parameter list length or invalid field errors).
std::optional<SenseCode> ModeSelect(const DiskProfile& profile, bool& write_cache,
                                    std::span<const uint8_t> cdb, const ParsedCdb& parsed,
                                    std::span<const uint8_t> parameters);

}  // namespace kvmini::hw::scsi

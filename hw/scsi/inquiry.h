// The data a disk reports about itself: INQUIRY (standard data and the VPD
// pages Linux reads) and READ CAPACITY(10)/(16), built from a DiskProfile.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "hw/scsi/disk_profile.h"
#include "hw/scsi/scsi_reply.h"

namespace kvmini::hw::scsi {

// Standard INQUIRY data (EVPD=0) or VPD pages 0x00, 0x80 (with a serial),
// 0x83, 0xB0, 0xB1, 0xB2. The result is not yet cut to the allocation length.
EmulatedReply Inquiry(const DiskProfile& profile, std::span<const uint8_t> cdb);

EmulatedReply ReadCapacity10(const DiskProfile& profile, std::span<const uint8_t> cdb);
// SERVICE ACTION IN(16); READ CAPACITY(16) is its only service action we serve.
EmulatedReply ServiceActionIn16(const DiskProfile& profile, std::span<const uint8_t> cdb);

// Peripheral device type of a direct-access block device (SBC).
inline constexpr uint8_t kDirectAccessDevice = 0x00;
// Standard INQUIRY data of a LUN that does not exist on an existing target.
inline constexpr uint8_t kNoLogicalUnitPeripheral = 0x7f;
// Peripheral device type of a well-known logical unit (SPC-4).
inline constexpr uint8_t kWellKnownLogicalUnit = 0x1e;

// 36 bytes of standard INQUIRY data, shared with the target's answers for
// absent and well-known LUNs. Strings are space-padded (and cut) to 8, 16
// and 4 characters.
std::vector<uint8_t> StandardInquiryData(uint8_t peripheral, std::string_view vendor,
                                         std::string_view product, std::string_view revision);

}  // namespace kvmini::hw::scsi

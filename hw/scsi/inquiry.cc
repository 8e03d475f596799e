#include "hw/scsi/inquiry.h"

#include <algorithm>

#include "hw/scsi/big_endian.h"
#include "hw/scsi/scsi_protocol.h"

namespace kvmini::hw::scsi {
namespace {

namespace vpd {
constexpr uint8_t kSupportedPages = 0x00;
constexpr uint8_t kUnitSerialNumber = 0x80;
constexpr uint8_t kDeviceIdentification = 0x83;
constexpr uint8_t kBlockLimits = 0xb0;
constexpr uint8_t kBlockDeviceCharacteristics = 0xb1;
constexpr uint8_t kLogicalBlockProvisioning = 0xb2;
}  // namespace vpd

void AppendPadded(std::vector<uint8_t>& data, std::string_view text, size_t width) {
  for (size_t i = 0; i < width; ++i) data.push_back(i < text.size() ? text[i] : ' ');
}

// A VPD page: 4-byte header (device type, page code, page length) + body.
std::vector<uint8_t> VpdPage(uint8_t page, std::vector<uint8_t> body) {
  std::vector<uint8_t> data(4 + body.size());
  data[0] = kDirectAccessDevice;
  data[1] = page;
  StoreBigEndian16(&data[2], static_cast<uint16_t>(body.size()));
  std::copy(body.begin(), body.end(), data.begin() + 4);
  return data;
}

std::vector<uint8_t> SupportedPages(const DiskProfile& profile) {
  std::vector<uint8_t> pages = {vpd::kSupportedPages};
  if (!profile.serial.empty()) pages.push_back(vpd::kUnitSerialNumber);
  pages.insert(pages.end(), {vpd::kDeviceIdentification, vpd::kBlockLimits,
                             vpd::kBlockDeviceCharacteristics, vpd::kLogicalBlockProvisioning});
  return pages;
}

// 64-bit FNV-1a: a stable, well-spread hash of the disk's identifier for
// its NAA designator.
uint64_t IdentifierHash(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

std::vector<uint8_t> DeviceIdentification(const DiskProfile& profile) {
  std::vector<uint8_t> body;
  // T10 vendor ID designator (type 1, ASCII, associated with the LU):
  // vendor padded to 8, then the identifier.
  const size_t t10_length = 8 + profile.identifier.size();
  body.insert(body.end(), {0x02, 0x01, 0x00, static_cast<uint8_t>(t10_length)});
  AppendPadded(body, profile.vendor, 8);
  body.insert(body.end(), profile.identifier.begin(), profile.identifier.end());
  // NAA designator (type 3, binary), NAA 3 "locally assigned": 60 bits
  // derived from the identifier, so the same serial gives the same WWN.
  body.insert(body.end(), {0x01, 0x03, 0x00, 0x08});
  const uint64_t naa = (uint64_t{3} << 60) | (IdentifierHash(profile.identifier) >> 4);
  body.resize(body.size() + 8);
  StoreBigEndian64(&body[body.size() - 8], naa);
  return body;
}

std::vector<uint8_t> BlockLimits(const DiskProfile& profile) {
  // Filled at the page offsets SBC-3 gives; the header is added later.
  std::vector<uint8_t> page(4 + 0x3c, 0);
  page[4] = 0x01;  // WSNZ: WRITE SAME of 0 blocks refused
  StoreBigEndian16(&page[6], static_cast<uint16_t>(1u << profile.physical_block_exponent));
  StoreBigEndian32(&page[8], profile.max_transfer_blocks);
  StoreBigEndian32(&page[12], profile.max_transfer_blocks);  // optimal = maximum
  if (profile.unmap) {
    StoreBigEndian32(&page[20], profile.max_unmap_blocks);
    StoreBigEndian32(&page[24], profile.max_unmap_descriptors);
    StoreBigEndian32(&page[28], profile.unmap_granularity_blocks);
  }
  StoreBigEndian64(&page[36], profile.max_write_same_blocks);
  return {page.begin() + 4, page.end()};
}

std::vector<uint8_t> BlockDeviceCharacteristics(const DiskProfile& profile) {
  std::vector<uint8_t> body(0x3c, 0);
  // MEDIUM ROTATION RATE: 1 = non-rotating (solid state), 0 = not reported.
  StoreBigEndian16(&body[0], profile.rotational ? 0 : 1);
  return body;
}

std::vector<uint8_t> LogicalBlockProvisioning(const DiskProfile& profile) {
  std::vector<uint8_t> body(4, 0);
  if (profile.unmap) {
    // LBPU, LBPWS, LBPWS10, and LBPRZ: deallocated blocks read as zeroes
    // (a punched hole in the image does).
    body[1] = 0x80 | 0x40 | 0x20 | 0x04;
    body[2] = 0x02;  // provisioning type: thin
  }
  return body;
}

EmulatedReply VitalProductData(const DiskProfile& profile, uint8_t page) {
  switch (page) {
    case vpd::kSupportedPages:
      return EmulatedReply::Data(VpdPage(page, SupportedPages(profile)));
    case vpd::kUnitSerialNumber:
      if (profile.serial.empty()) break;
      return EmulatedReply::Data(VpdPage(page, {profile.serial.begin(), profile.serial.end()}));
    case vpd::kDeviceIdentification:
      return EmulatedReply::Data(VpdPage(page, DeviceIdentification(profile)));
    case vpd::kBlockLimits:
      return EmulatedReply::Data(VpdPage(page, BlockLimits(profile)));
    case vpd::kBlockDeviceCharacteristics:
      return EmulatedReply::Data(VpdPage(page, BlockDeviceCharacteristics(profile)));
    case vpd::kLogicalBlockProvisioning:
      return EmulatedReply::Data(VpdPage(page, LogicalBlockProvisioning(profile)));
  }
  return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
}

}  // namespace

std::vector<uint8_t> StandardInquiryData(uint8_t peripheral, std::string_view vendor,
                                         std::string_view product, std::string_view revision) {
  std::vector<uint8_t> data = {
      peripheral,
      0x00,  // not removable
      0x05,  // SPC-3: Linux then uses READ CAPACITY(16) and the VPD pages
      0x12,  // HISUP, response data format 2
      31,    // additional length: 36 bytes in all
      0x00,       0x00,
      0x02,  // CMDQUE: tagged queueing
  };
  AppendPadded(data, vendor, 8);
  AppendPadded(data, product, 16);
  AppendPadded(data, revision, 4);
  return data;
}

EmulatedReply Inquiry(const DiskProfile& profile, std::span<const uint8_t> cdb) {
  const bool vital_product_data = cdb[1] & 0x01;
  const bool command_support_data = cdb[1] & 0x02;  // CMDDT, obsolete
  const uint8_t page = cdb[2];
  if (command_support_data || (!vital_product_data && page != 0)) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  if (vital_product_data) return VitalProductData(profile, page);
  return EmulatedReply::Data(
      StandardInquiryData(kDirectAccessDevice, profile.vendor, profile.product, profile.revision));
}

EmulatedReply ReadCapacity10(const DiskProfile& profile, std::span<const uint8_t> cdb) {
  const bool partial_medium_indicator = cdb[8] & 0x01;
  if (!partial_medium_indicator && LoadBigEndian32(&cdb[2]) != 0) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  std::vector<uint8_t> data(8);
  // A disk too large for 32 bits reports FFFFFFFFh: Linux then asks RC16.
  StoreBigEndian32(&data[0],
                   static_cast<uint32_t>(std::min<uint64_t>(profile.last_lba(), 0xffffffff)));
  StoreBigEndian32(&data[4], profile.block_size);
  return EmulatedReply::Data(std::move(data));
}

EmulatedReply ServiceActionIn16(const DiskProfile& profile, std::span<const uint8_t> cdb) {
  if ((cdb[1] & 0x1f) != kServiceActionReadCapacity16) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  const bool partial_medium_indicator = cdb[14] & 0x01;
  if (!partial_medium_indicator && LoadBigEndian64(&cdb[2]) != 0) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  std::vector<uint8_t> data(32, 0);
  StoreBigEndian64(&data[0], profile.last_lba());
  StoreBigEndian32(&data[8], profile.block_size);
  data[13] = profile.physical_block_exponent;
  if (profile.unmap) data[14] = 0x80 | 0x40;  // LBPME, LBPRZ
  return EmulatedReply::Data(std::move(data));
}

}  // namespace kvmini::hw::scsi

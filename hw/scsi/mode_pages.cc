#include "hw/scsi/mode_pages.h"

#include <algorithm>
#include <array>
#include <vector>

#include "hw/scsi/big_endian.h"

namespace kvmini::hw::scsi {
namespace {

constexpr uint8_t kCachingPage = 0x08;
constexpr uint8_t kControlPage = 0x0a;
constexpr uint8_t kAllPages = 0x3f;
constexpr uint8_t kAllSubpages = 0xff;
constexpr uint8_t kWriteCacheEnable = 0x04;  // caching page byte 2

enum class PageControl : uint8_t { kCurrent = 0, kChangeable = 1, kDefault = 2, kSaved = 3 };

// Page bytes for one page control. The caching page is 20 bytes, control 12.
std::vector<uint8_t> CachingPage(PageControl control, const ModeValues& values) {
  std::vector<uint8_t> page(20, 0);
  page[0] = kCachingPage;
  page[1] = 0x12;
  bool wce = values.write_cache;
  if (control == PageControl::kDefault) wce = values.default_write_cache;
  if (control == PageControl::kChangeable) wce = true;  // the mask: WCE may change
  if (wce) page[2] = kWriteCacheEnable;
  return page;
}

std::vector<uint8_t> ControlPage(PageControl control) {
  std::vector<uint8_t> page(12, 0);
  page[0] = kControlPage;
  page[1] = 0x0a;
  // QUEUE ALGORITHM MODIFIER 1: commands may be reordered (we complete them
  // as the backend does). Nothing here is changeable.
  if (control != PageControl::kChangeable) page[3] = 0x10;
  return page;
}

std::optional<std::vector<uint8_t>> PageFor(uint8_t code, PageControl control,
                                            const ModeValues& values) {
  switch (code) {
    case kCachingPage:
      return CachingPage(control, values);
    case kControlPage:
      return ControlPage(control);
  }
  return std::nullopt;
}

std::vector<uint8_t> BlockDescriptor(const DiskProfile& profile, bool long_lba) {
  if (long_lba) {
    std::vector<uint8_t> descriptor(16, 0);
    StoreBigEndian64(&descriptor[0], profile.block_count);
    StoreBigEndian32(&descriptor[12], profile.block_size);
    return descriptor;
  }
  // Short LBA descriptor (SBC-3 6.4.2): FFFFFFFFh when the count won't fit.
  std::vector<uint8_t> descriptor(8, 0);
  StoreBigEndian32(&descriptor[0],
                   static_cast<uint32_t>(std::min<uint64_t>(profile.block_count, 0xffffffff)));
  StoreBigEndian24(&descriptor[5], profile.block_size);
  return descriptor;
}

}  // namespace

EmulatedReply ModeSense(const DiskProfile& profile, const ModeValues& values,
                        std::span<const uint8_t> cdb, const ParsedCdb& parsed) {
  const bool ten_byte = parsed.opcode == opcode::kModeSense10;
  const bool disable_block_descriptors = cdb[1] & 0x08;
  const bool long_lba_accepted = ten_byte && (cdb[1] & 0x10);
  const auto control = static_cast<PageControl>(cdb[2] >> 6);
  const uint8_t page_code = cdb[2] & 0x3f;
  const uint8_t subpage = cdb[3];

  if (control == PageControl::kSaved) {
    return EmulatedReply::Fail(sense::kSavingParametersNotSupported);
  }
  // We have no subpages: subpage 0, or "all subpages" which adds none.
  if (subpage != 0 && subpage != kAllSubpages) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  std::vector<uint8_t> pages;
  for (uint8_t code : {kCachingPage, kControlPage}) {
    if (page_code != kAllPages && page_code != code) continue;
    const auto page = PageFor(code, control, values);
    pages.insert(pages.end(), page->begin(), page->end());
  }
  if (pages.empty()) return EmulatedReply::Fail(sense::kInvalidFieldInCdb);

  const bool long_lba = long_lba_accepted && profile.block_count > 0xffffffff;
  std::vector<uint8_t> descriptor;
  if (!disable_block_descriptors) descriptor = BlockDescriptor(profile, long_lba);

  // Device-specific parameter: WP (bit 7) for a read-only disk, DPOFUA
  // (bit 4): we honour FUA.
  const uint8_t device_specific = (profile.read_only ? 0x80 : 0x00) | 0x10;
  std::vector<uint8_t> data;
  if (ten_byte) {
    data.assign(8, 0);
    data[3] = device_specific;
    data[4] = long_lba ? 0x01 : 0x00;
    StoreBigEndian16(&data[6], static_cast<uint16_t>(descriptor.size()));
  } else {
    data.assign(4, 0);
    data[2] = device_specific;
    data[3] = static_cast<uint8_t>(descriptor.size());
  }
  data.insert(data.end(), descriptor.begin(), descriptor.end());
  data.insert(data.end(), pages.begin(), pages.end());
  // MODE DATA LENGTH counts the bytes after itself.
  if (ten_byte) {
    StoreBigEndian16(&data[0], static_cast<uint16_t>(data.size() - 2));
  } else {
    data[0] = static_cast<uint8_t>(data.size() - 1);
  }
  return EmulatedReply::Data(std::move(data));
}

std::optional<SenseCode> ModeSelect(const DiskProfile& profile, bool& write_cache,
                                    std::span<const uint8_t> cdb, const ParsedCdb& parsed,
                                    std::span<const uint8_t> parameters) {
  const bool ten_byte = parsed.opcode == opcode::kModeSelect10;
  const bool page_format = cdb[1] & 0x10;
  const bool save_pages = cdb[1] & 0x01;
  // We only speak the standard page format and cannot save pages.
  if (!page_format || save_pages) return sense::kInvalidFieldInCdb;
  if (parameters.empty()) return std::nullopt;

  const size_t header_length = ten_byte ? 8 : 4;
  if (parameters.size() < header_length) return sense::kParameterListLengthError;
  const bool long_lba = ten_byte && (parameters[4] & 0x01);
  const size_t descriptor_length = ten_byte ? LoadBigEndian16(&parameters[6]) : parameters[3];
  if (descriptor_length != 0 && descriptor_length != (long_lba ? 16u : 8u)) {
    return sense::kInvalidFieldInParameterList;
  }
  if (parameters.size() < header_length + descriptor_length) {
    return sense::kParameterListLengthError;
  }
  if (descriptor_length != 0) {
    // The block size cannot change (the image has one layout); the block
    // count is ignored, as formatting is not something we do.
    const uint8_t* descriptor = &parameters[header_length];
    const uint32_t block_length =
        long_lba ? LoadBigEndian32(&descriptor[12]) : LoadBigEndian24(&descriptor[5]);
    if (block_length != profile.block_size) return sense::kInvalidFieldInParameterList;
  }

  const ModeValues current{write_cache, write_cache};
  bool new_write_cache = write_cache;
  size_t offset = header_length + descriptor_length;
  while (offset < parameters.size()) {
    if (parameters.size() - offset < 2) return sense::kParameterListLengthError;
    const uint8_t code = parameters[offset] & 0x3f;
    const bool subpage_format = parameters[offset] & 0x40;
    const size_t length = size_t{parameters[offset + 1]} + 2;
    if (parameters.size() - offset < length) return sense::kParameterListLengthError;
    const auto now = PageFor(code, PageControl::kCurrent, current);
    if (subpage_format || !now || now->size() != length) {
      return sense::kInvalidFieldInParameterList;
    }
    const auto changeable = PageFor(code, PageControl::kChangeable, current);
    const auto given = parameters.subspan(offset, length);
    for (size_t i = 2; i < length; ++i) {
      if ((given[i] ^ (*now)[i]) & ~(*changeable)[i]) return sense::kInvalidFieldInParameterList;
    }
    if (code == kCachingPage) new_write_cache = given[2] & kWriteCacheEnable;
    offset += length;
  }
  write_cache = new_write_cache;
  return std::nullopt;
}

}  // namespace kvmini::hw::scsi

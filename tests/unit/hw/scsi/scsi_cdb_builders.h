// CDB and parameter list builders for the SCSI tests, so cases read as
// "READ(10) of 2 blocks at 2047" rather than as raw bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "hw/scsi/big_endian.h"
#include "hw/scsi/scsi_protocol.h"

namespace kvmini::hw::scsi::testing {

// The common layout of READ/WRITE/VERIFY/WRITE SAME/SYNCHRONIZE CACHE:
// 10 bytes (LBA 2-5, blocks 7-8), 12 (LBA 2-5, blocks 6-9) or 16 (LBA 2-9,
// blocks 10-13).
inline std::vector<uint8_t> BlockCdb(size_t length, uint8_t code, uint8_t flags, uint64_t lba,
                                     uint32_t blocks) {
  std::vector<uint8_t> cdb(length, 0);
  cdb[0] = code;
  cdb[1] = flags;
  if (length == 16) {
    StoreBigEndian64(&cdb[2], lba);
    StoreBigEndian32(&cdb[10], blocks);
  } else {
    StoreBigEndian32(&cdb[2], static_cast<uint32_t>(lba));
    if (length == 12) StoreBigEndian32(&cdb[6], blocks);
    if (length == 10) StoreBigEndian16(&cdb[7], static_cast<uint16_t>(blocks));
  }
  return cdb;
}

inline std::vector<uint8_t> Cdb10(uint8_t code, uint8_t flags, uint32_t lba, uint16_t blocks) {
  return BlockCdb(10, code, flags, lba, blocks);
}

inline std::vector<uint8_t> Cdb12(uint8_t code, uint8_t flags, uint32_t lba, uint32_t blocks) {
  return BlockCdb(12, code, flags, lba, blocks);
}

inline std::vector<uint8_t> Cdb16(uint8_t code, uint8_t flags, uint64_t lba, uint32_t blocks) {
  return BlockCdb(16, code, flags, lba, blocks);
}

inline std::vector<uint8_t> Cdb6(uint8_t code, uint32_t lba, uint8_t blocks) {
  return {code,
          static_cast<uint8_t>((lba >> 16) & 0x1f),
          static_cast<uint8_t>(lba >> 8),
          static_cast<uint8_t>(lba),
          blocks,
          0};
}

inline std::vector<uint8_t> Inquiry(bool vital_product_data, uint8_t page, uint16_t allocation) {
  std::vector<uint8_t> cdb = {
      opcode::kInquiry, vital_product_data ? uint8_t{1} : uint8_t{0}, page, 0, 0, 0};
  StoreBigEndian16(&cdb[3], allocation);
  return cdb;
}

inline std::vector<uint8_t> ModeSense6(uint8_t flags, uint8_t page_byte, uint8_t subpage,
                                       uint8_t allocation) {
  return {opcode::kModeSense6, flags, page_byte, subpage, allocation, 0};
}

inline std::vector<uint8_t> ModeSense10(uint8_t flags, uint8_t page_byte, uint16_t allocation) {
  std::vector<uint8_t> cdb = {opcode::kModeSense10, flags, page_byte, 0, 0, 0, 0, 0, 0, 0};
  StoreBigEndian16(&cdb[7], allocation);
  return cdb;
}

inline std::vector<uint8_t> ModeSelect6(uint8_t flags, uint8_t length) {
  return {opcode::kModeSelect6, flags, 0, 0, length, 0};
}

inline std::vector<uint8_t> ReportLuns(uint8_t select, uint32_t allocation) {
  std::vector<uint8_t> cdb(12, 0);
  cdb[0] = opcode::kReportLuns;
  cdb[2] = select;
  StoreBigEndian32(&cdb[6], allocation);
  return cdb;
}

inline std::vector<uint8_t> ReadCapacity16(uint32_t allocation, uint8_t service_action = 0x10) {
  std::vector<uint8_t> cdb(16, 0);
  cdb[0] = opcode::kServiceActionIn16;
  cdb[1] = service_action;
  StoreBigEndian32(&cdb[10], allocation);
  return cdb;
}

inline std::vector<uint8_t> Unmap(uint16_t parameter_length, uint8_t flags = 0) {
  std::vector<uint8_t> cdb(10, 0);
  cdb[0] = opcode::kUnmap;
  cdb[1] = flags;
  StoreBigEndian16(&cdb[7], parameter_length);
  return cdb;
}

struct UnmapDescriptor {
  uint64_t lba;
  uint32_t blocks;
};

// A well-formed UNMAP parameter list.
inline std::vector<uint8_t> UnmapList(const std::vector<UnmapDescriptor>& descriptors) {
  std::vector<uint8_t> list(8 + 16 * descriptors.size(), 0);
  StoreBigEndian16(&list[0], static_cast<uint16_t>(list.size() - 2));
  StoreBigEndian16(&list[2], static_cast<uint16_t>(16 * descriptors.size()));
  for (size_t i = 0; i < descriptors.size(); ++i) {
    StoreBigEndian64(&list[8 + 16 * i], descriptors[i].lba);
    StoreBigEndian32(&list[16 + 16 * i], descriptors[i].blocks);
  }
  return list;
}

}  // namespace kvmini::hw::scsi::testing

// DiskProfile: what a SCSI disk reports about itself (identity, geometry,
// limits), fixed when the disk is created. The INQUIRY, READ CAPACITY and
// MODE SENSE builders read it; nothing writes it after creation.
#pragma once

#include <cstdint>
#include <string>

namespace kvmini::hw::scsi {

struct DiskProfile {
  uint32_t block_size = 512;
  // log2(physical block size / logical block size), READ CAPACITY(16) byte 13.
  uint8_t physical_block_exponent = 0;
  uint64_t block_count = 0;
  bool read_only = false;
  // UNMAP and WRITE SAME with UNMAP deallocate (never on a read-only disk).
  bool unmap = false;
  bool rotational = false;

  std::string vendor;    // at most 8 printable ASCII characters
  std::string product;   // at most 16
  std::string revision;  // at most 4
  std::string serial;    // VPD page 0x80; empty: the page is not offered
  // Names the disk in VPD page 0x83 (the serial, or else the device name):
  // Linux builds /dev/disk/by-id names from it.
  std::string identifier;

  uint32_t max_transfer_blocks = 0;
  uint32_t max_unmap_blocks = 0;
  uint32_t max_unmap_descriptors = 0;
  uint32_t unmap_granularity_blocks = 1;
  uint64_t max_write_same_blocks = 0;

  uint64_t last_lba() const { return block_count - 1; }
  // Whether [lba, lba + blocks) lies on the disk; overflow-safe.
  bool RangeValid(uint64_t lba, uint64_t blocks) const {
    return lba <= block_count && blocks <= block_count - lba;
  }
};

}  // namespace kvmini::hw::scsi

// Big-endian field access for SCSI CDBs and parameter data, which are all
// big endian regardless of the host.
#pragma once

#include <cstdint>

namespace kvmini::hw::scsi {

inline uint16_t LoadBigEndian16(const uint8_t* bytes) {
  return static_cast<uint16_t>((bytes[0] << 8) | bytes[1]);
}

inline uint32_t LoadBigEndian24(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 16) | (uint32_t{bytes[1]} << 8) | bytes[2];
}

inline uint32_t LoadBigEndian32(const uint8_t* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         bytes[3];
}

inline uint64_t LoadBigEndian64(const uint8_t* bytes) {
  return (uint64_t{LoadBigEndian32(bytes)} << 32) | LoadBigEndian32(bytes + 4);
}

inline void StoreBigEndian16(uint8_t* bytes, uint16_t value) {
  bytes[0] = static_cast<uint8_t>(value >> 8);
  bytes[1] = static_cast<uint8_t>(value);
}

inline void StoreBigEndian24(uint8_t* bytes, uint32_t value) {
  bytes[0] = static_cast<uint8_t>(value >> 16);
  bytes[1] = static_cast<uint8_t>(value >> 8);
  bytes[2] = static_cast<uint8_t>(value);
}

inline void StoreBigEndian32(uint8_t* bytes, uint32_t value) {
  StoreBigEndian16(bytes, static_cast<uint16_t>(value >> 16));
  StoreBigEndian16(bytes + 2, static_cast<uint16_t>(value));
}

inline void StoreBigEndian64(uint8_t* bytes, uint64_t value) {
  StoreBigEndian32(bytes, static_cast<uint32_t>(value >> 32));
  StoreBigEndian32(bytes + 4, static_cast<uint32_t>(value));
}

}  // namespace kvmini::hw::scsi

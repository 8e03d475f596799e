// Small helpers virtio-scsi's request and control paths share: little
// endian field access in header copies, and whether a response can be
// written into a chain whose other buffers may be unusable.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include "hw/virtio/virtqueue.h"

namespace kvmini::hw::virtio::virtio_scsi {

template <typename T>
T LoadLittleEndian(std::span<const uint8_t> bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(value));  // x86: little endian
  return value;
}

template <typename T>
void StoreLittleEndian(std::span<uint8_t> bytes, size_t offset, T value) {
  std::memcpy(bytes.data() + offset, &value, sizeof(value));
}

// Whether the chain's first `length` device-writable bytes exist and lie
// inside guest RAM. Holds or fails independently of `chain.defect`: a chain
// with a bad data buffer can still be answered through a good response
// buffer.
inline bool WritablePrefixInRam(const DescriptorChain& chain, uint64_t length) {
  uint64_t covered = 0;
  for (const DescriptorBuffer& buffer : chain.buffers) {
    if (covered >= length) break;
    if (!buffer.writable || buffer.length == 0) continue;
    if (buffer.host == nullptr) return false;
    covered += buffer.length;
  }
  return covered >= length;
}

}  // namespace kvmini::hw::virtio::virtio_scsi

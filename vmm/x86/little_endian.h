// Reading and writing little-endian integers at byte offsets of a buffer:
// boot protocol headers, boot_params and ACPI tables are all byte layouts
// with unaligned little-endian fields, and this keeps their code free of
// pointer casts. Offsets are checked; an out-of-range offset is a kvmini bug.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "util/check.h"

namespace kvmini::vmm::x86 {

static_assert(std::endian::native == std::endian::little, "kvmini targets x86 hosts");

template <typename T>
T LoadLittleEndian(std::span<const uint8_t> bytes, uint64_t offset) {
  static_assert(std::is_integral_v<T>);
  KVMINI_CHECK(offset <= bytes.size() && bytes.size() - offset >= sizeof(T),
               "little-endian load past the end of the buffer");
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void StoreLittleEndian(std::span<uint8_t> bytes, uint64_t offset, T value) {
  static_assert(std::is_integral_v<T>);
  KVMINI_CHECK(offset <= bytes.size() && bytes.size() - offset >= sizeof(T),
               "little-endian store past the end of the buffer");
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

template <typename T>
void AppendLittleEndian(std::vector<uint8_t>& out, T value) {
  static_assert(std::is_integral_v<T>);
  const uint64_t offset = out.size();
  out.resize(offset + sizeof(T));
  std::memcpy(out.data() + offset, &value, sizeof(T));
}

}  // namespace kvmini::vmm::x86

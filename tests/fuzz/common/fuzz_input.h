// FuzzInput: reads little-endian values off the fuzzer's bytes. Once the
// input runs out every read yields zero (and empty spans), so a target can
// read what it needs without checking the length at each step; done()
// tells its loop when to stop.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace kvmini::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  bool done() const { return position_ >= size_; }
  size_t remaining() const { return size_ - position_; }

  uint8_t U8() { return Read<uint8_t>(); }
  uint16_t U16() { return Read<uint16_t>(); }
  uint32_t U32() { return Read<uint32_t>(); }
  uint64_t U64() { return Read<uint64_t>(); }
  bool Bool() { return U8() & 1; }

  // Up to `count` bytes (fewer at the end of the input).
  std::span<const uint8_t> Bytes(size_t count) {
    count = std::min(count, remaining());
    std::span<const uint8_t> result(data_ + position_, count);
    position_ += count;
    return result;
  }

 private:
  template <typename T>
  T Read() {
    T value = 0;
    size_t count = std::min(sizeof(T), remaining());
    std::memcpy(&value, data_ + position_, count);
    position_ += count;
    return value;
  }

  const uint8_t* data_;
  size_t size_;
  size_t position_ = 0;
};

}  // namespace kvmini::fuzz

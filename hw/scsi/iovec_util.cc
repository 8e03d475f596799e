#include "hw/scsi/iovec_util.h"

#include <algorithm>
#include <cstring>

namespace kvmini::hw::scsi {

uint64_t TotalLength(std::span<const iovec> buffers) {
  uint64_t total = 0;
  for (const iovec& buffer : buffers) total += buffer.iov_len;
  return total;
}

uint64_t CopyToIovecs(std::span<const iovec> to, std::span<const uint8_t> from) {
  uint64_t copied = 0;
  for (const iovec& buffer : to) {
    if (copied == from.size()) break;
    const uint64_t chunk = std::min<uint64_t>(buffer.iov_len, from.size() - copied);
    if (chunk == 0) continue;  // empty iovecs may carry a null base
    std::memcpy(buffer.iov_base, from.data() + copied, chunk);
    copied += chunk;
  }
  return copied;
}

uint64_t CopyFromIovecs(std::span<uint8_t> to, std::span<const iovec> from) {
  uint64_t copied = 0;
  for (const iovec& buffer : from) {
    if (copied == to.size()) break;
    const uint64_t chunk = std::min<uint64_t>(buffer.iov_len, to.size() - copied);
    if (chunk == 0) continue;
    std::memcpy(to.data() + copied, buffer.iov_base, chunk);
    copied += chunk;
  }
  return copied;
}

std::vector<iovec> PrefixOfIovecs(std::span<const iovec> buffers, uint64_t length) {
  std::vector<iovec> prefix;
  prefix.reserve(buffers.size());
  for (const iovec& buffer : buffers) {
    if (length == 0) break;
    const uint64_t chunk = std::min<uint64_t>(buffer.iov_len, length);
    prefix.push_back({buffer.iov_base, chunk});
    length -= chunk;
  }
  return prefix;
}

}  // namespace kvmini::hw::scsi

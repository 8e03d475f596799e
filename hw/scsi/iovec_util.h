// Bounded copies between flat byte buffers and the iovec lists a request
// carries. Every copy stops at the smaller of the two sides, so a CDB that
// asks for more than the initiator provided can never touch host memory
// outside the buffers.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <vector>

namespace kvmini::hw::scsi {

uint64_t TotalLength(std::span<const iovec> buffers);

// Copies min(TotalLength(to), from.size()) bytes; returns how many.
uint64_t CopyToIovecs(std::span<const iovec> to, std::span<const uint8_t> from);
// Copies min(TotalLength(from), to.size()) bytes; returns how many.
uint64_t CopyFromIovecs(std::span<uint8_t> to, std::span<const iovec> from);

// The first `length` bytes of `buffers` (all of them if shorter).
std::vector<iovec> PrefixOfIovecs(std::span<const iovec> buffers, uint64_t length);

}  // namespace kvmini::hw::scsi

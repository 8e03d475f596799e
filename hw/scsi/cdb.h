// Parsing of the CDB fields that exist before a command runs: which
// commands we know, how long their CDB is, and which way and how much data
// they move. The transport needs the last two to tell a valid request from
// an overrun before anything executes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace kvmini::hw::scsi {

enum class DataDirection : uint8_t { kNone, kIn, kOut };

struct ParsedCdb {
  uint8_t opcode = 0;
  // Bytes of CDB the opcode defines (6, 10, 12 or 16).
  uint8_t length = 0;
  DataDirection direction = DataDirection::kNone;
  // For data-in: the allocation length or blocks * block size, the most the
  // command may write. For data-out: the bytes the command will read.
  uint64_t transfer_bytes = 0;
};

// nullopt for an opcode the disk does not implement, or a CDB shorter than
// its opcode needs (answered, like QEMU does, with INVALID COMMAND
// OPERATION CODE: the transport did not deliver a command we can parse).
std::optional<ParsedCdb> ParseCdb(std::span<const uint8_t> cdb, uint32_t block_size);

// Whether the CONTROL byte (the last byte of the CDB) asks for nothing we
// lack: NACA (auto contingent allegiance) and the obsolete LINK bit must be 0.
bool ControlByteSupported(std::span<const uint8_t> cdb, const ParsedCdb& parsed);

// LBA and block count of a block command (READ, WRITE, VERIFY, WRITE SAME,
// SYNCHRONIZE CACHE) by CDB length: 6 (21-bit LBA, 0 blocks meaning 256),
// 10, 12 or 16.
struct BlockRange {
  uint64_t lba = 0;
  uint64_t blocks = 0;
};
BlockRange DecodeBlockRange(std::span<const uint8_t> cdb, const ParsedCdb& parsed);

}  // namespace kvmini::hw::scsi

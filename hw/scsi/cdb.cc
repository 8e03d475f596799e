#include "hw/scsi/cdb.h"

#include "hw/scsi/big_endian.h"
#include "hw/scsi/scsi_protocol.h"

namespace kvmini::hw::scsi {
namespace {

// CDB length from the opcode's group code (SPC-4 4.2.5.1); 0 for groups we
// have no commands in.
uint8_t GroupLength(uint8_t opcode) {
  switch (opcode >> 5) {
    case 0:
      return 6;
    case 1:
    case 2:
      return 10;
    case 4:
      return 16;
    case 5:
      return 12;
    default:
      return 0;
  }
}

// Where a command's transfer size comes from.
enum class Transfer : uint8_t {
  kNone,
  kAllocationLength,  // data-in, up to an allocation length field
  kFixedIn8,          // data-in of exactly 8 bytes (READ CAPACITY(10))
  kBlocksIn,          // data-in of the block range
  kBlocksOut,         // data-out of the block range
  kParameterListOut,  // data-out of a parameter list length field
  kVerify,            // depends on BYTCHK
  kWriteSame,         // one block, or none with NDOB
};

struct Command {
  Transfer transfer;
  // Offset and width of the allocation / parameter list length field.
  uint8_t length_offset = 0;
  uint8_t length_width = 0;
};

std::optional<Command> LookUp(uint8_t code) {
  using namespace opcode;
  switch (code) {
    case kTestUnitReady:
    case kStartStopUnit:
    case kPreventAllowMediumRemoval:
    case kSynchronizeCache10:
    case kSynchronizeCache16:
      return Command{Transfer::kNone};
    case kRequestSense:
    case kModeSense6:
      return Command{Transfer::kAllocationLength, 4, 1};
    case kInquiry:
      return Command{Transfer::kAllocationLength, 3, 2};
    case kModeSense10:
      return Command{Transfer::kAllocationLength, 7, 2};
    case kServiceActionIn16:
      return Command{Transfer::kAllocationLength, 10, 4};
    case kReportLuns:
      return Command{Transfer::kAllocationLength, 6, 4};
    case kReadCapacity10:
      return Command{Transfer::kFixedIn8};
    case kRead6:
    case kRead10:
    case kRead12:
    case kRead16:
      return Command{Transfer::kBlocksIn};
    case kWrite6:
    case kWrite10:
    case kWrite12:
    case kWrite16:
      return Command{Transfer::kBlocksOut};
    case kModeSelect6:
      return Command{Transfer::kParameterListOut, 4, 1};
    case kModeSelect10:
    case kUnmap:
      return Command{Transfer::kParameterListOut, 7, 2};
    case kVerify10:
    case kVerify16:
      return Command{Transfer::kVerify};
    case kWriteSame10:
    case kWriteSame16:
      return Command{Transfer::kWriteSame};
    default:
      return std::nullopt;
  }
}

uint64_t LoadField(const uint8_t* bytes, uint8_t width) {
  switch (width) {
    case 1:
      return bytes[0];
    case 2:
      return LoadBigEndian16(bytes);
    default:
      return LoadBigEndian32(bytes);
  }
}

}  // namespace

std::optional<ParsedCdb> ParseCdb(std::span<const uint8_t> cdb, uint32_t block_size) {
  if (cdb.empty()) return std::nullopt;
  const uint8_t code = cdb[0];
  const std::optional<Command> command = LookUp(code);
  const uint8_t length = GroupLength(code);
  if (!command || length == 0 || cdb.size() < length) return std::nullopt;

  ParsedCdb parsed{.opcode = code, .length = length};
  const uint64_t field =
      command->length_width ? LoadField(&cdb[command->length_offset], command->length_width) : 0;
  switch (command->transfer) {
    case Transfer::kNone:
      break;
    case Transfer::kAllocationLength:
      parsed.direction = DataDirection::kIn;
      parsed.transfer_bytes = field;
      break;
    case Transfer::kFixedIn8:
      parsed.direction = DataDirection::kIn;
      parsed.transfer_bytes = 8;
      break;
    case Transfer::kBlocksIn:
      parsed.direction = DataDirection::kIn;
      parsed.transfer_bytes = DecodeBlockRange(cdb, parsed).blocks * block_size;
      break;
    case Transfer::kBlocksOut:
      parsed.direction = DataDirection::kOut;
      parsed.transfer_bytes = DecodeBlockRange(cdb, parsed).blocks * block_size;
      break;
    case Transfer::kParameterListOut:
      parsed.direction = DataDirection::kOut;
      parsed.transfer_bytes = field;
      break;
    case Transfer::kVerify: {
      // BYTCHK 01b: the data-out holds the whole range to compare; 11b: one
      // block compared against every block; 00b (and reserved 10b): none.
      const uint8_t byte_check = (cdb[1] >> 1) & 0x3;
      if (byte_check == 1) {
        parsed.direction = DataDirection::kOut;
        parsed.transfer_bytes = DecodeBlockRange(cdb, parsed).blocks * block_size;
      } else if (byte_check == 3) {
        parsed.direction = DataDirection::kOut;
        parsed.transfer_bytes = block_size;
      }
      break;
    }
    case Transfer::kWriteSame: {
      const bool no_data_out = code == opcode::kWriteSame16 && (cdb[1] & 0x01);
      if (!no_data_out) {
        parsed.direction = DataDirection::kOut;
        parsed.transfer_bytes = block_size;
      }
      break;
    }
  }
  return parsed;
}

bool ControlByteSupported(std::span<const uint8_t> cdb, const ParsedCdb& parsed) {
  constexpr uint8_t kNaca = 0x04;
  constexpr uint8_t kLink = 0x01;
  return (cdb[parsed.length - 1] & (kNaca | kLink)) == 0;
}

BlockRange DecodeBlockRange(std::span<const uint8_t> cdb, const ParsedCdb& parsed) {
  switch (parsed.length) {
    case 6: {
      const uint32_t blocks = cdb[4];
      return {LoadBigEndian24(&cdb[1]) & 0x1fffff, blocks == 0 ? 256u : blocks};
    }
    case 10:
      return {LoadBigEndian32(&cdb[2]), LoadBigEndian16(&cdb[7])};
    case 12:
      return {LoadBigEndian32(&cdb[2]), LoadBigEndian32(&cdb[6])};
    default:
      return {LoadBigEndian64(&cdb[2]), LoadBigEndian32(&cdb[10])};
  }
}

}  // namespace kvmini::hw::scsi

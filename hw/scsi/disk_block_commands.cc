// ScsiDisk commands that reach the block backend: READ/WRITE(6/10/12/16),
// VERIFY(10/16), SYNCHRONIZE CACHE(10/16), WRITE SAME(10/16) and UNMAP.
// Every CDB check happens before a Task exists, so a refusal never touches
// the backend.
#include <algorithm>
#include <cstring>

#include "hw/scsi/big_endian.h"
#include "hw/scsi/disk_task.h"
#include "hw/scsi/iovec_util.h"
#include "util/check.h"

namespace kvmini::hw::scsi {
namespace {

// A WRITE SAME with a non-zero pattern is written in chunks of this many
// bytes (the pattern repeated), one after the other.
constexpr uint64_t kWriteSameChunkBytes = 1 << 20;

constexpr uint8_t kProtectField = 0xe0;  // RDPROTECT/WRPROTECT/VRPROTECT
constexpr uint8_t kForceUnitAccess = 0x08;
constexpr uint8_t kUnmapBit = 0x08;

bool IsWrite(uint8_t code) {
  return code == opcode::kWrite6 || code == opcode::kWrite10 || code == opcode::kWrite12 ||
         code == opcode::kWrite16;
}

bool IsRead(uint8_t code) {
  return code == opcode::kRead6 || code == opcode::kRead10 || code == opcode::kRead12 ||
         code == opcode::kRead16;
}

// The UNMAP parameter list (SBC-3 5.28.2): an 8-byte header, then 16-byte
// descriptors {LBA u64, blocks u32, reserved}. Length rules as in QEMU.
std::optional<SenseCode> ParseUnmapList(const DiskProfile& profile,
                                        std::span<const uint8_t> parameters,
                                        std::vector<BlockRange>& ranges) {
  if (parameters.size() < 8) return sense::kParameterListLengthError;
  const uint32_t data_length = LoadBigEndian16(&parameters[0]);
  const uint32_t descriptors_length = LoadBigEndian16(&parameters[2]);
  if (parameters.size() < data_length + 2 || parameters.size() < descriptors_length + 8 ||
      descriptors_length % 16 != 0) {
    return sense::kParameterListLengthError;
  }
  const size_t count = descriptors_length / 16;
  if (count > profile.max_unmap_descriptors) return sense::kInvalidFieldInParameterList;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* descriptor = &parameters[8 + 16 * i];
    const BlockRange range{LoadBigEndian64(descriptor), LoadBigEndian32(descriptor + 8)};
    if (!profile.RangeValid(range.lba, range.blocks)) return sense::kLbaOutOfRange;
    if (range.blocks > profile.max_unmap_blocks) return sense::kInvalidFieldInParameterList;
    if (range.blocks > 0) ranges.push_back(range);
  }
  return std::nullopt;
}

}  // namespace

void ScsiDisk::RunBlockCommand(ScsiRequest request, const RequestBuffers& buffers,
                               const ParsedCdb& parsed, ScsiCompletion done) {
  const std::span<const uint8_t> cdb(request.cdb.data(), parsed.length);
  const auto refuse = [&](SenseCode code) {
    std::move(done)(CheckConditionResult(request, buffers, code));
  };
  const uint8_t code = parsed.opcode;
  const BlockRange range = code == opcode::kUnmap ? BlockRange{} : DecodeBlockRange(cdb, parsed);

  if (IsRead(code) || IsWrite(code)) {
    if (auto failure = CheckReadWrite(cdb, parsed, range)) return refuse(*failure);
    if (range.blocks == 0) return std::move(done)(GoodResult(buffers, 0));
    const bool fua = parsed.length != 6 && (cdb[1] & kForceUnitAccess);
    Task& task = NewTask(std::move(request), buffers, parsed, std::move(done));
    task.writing = IsWrite(code);
    return Launch(task, [this, range, fua](Task& t) { StartReadWrite(t, range, fua); });
  }
  switch (code) {
    case opcode::kVerify10:
    case opcode::kVerify16: {
      if (auto failure = CheckVerify(cdb, parsed, range)) return refuse(*failure);
      if (parsed.direction == DataDirection::kNone || range.blocks == 0) {
        return std::move(done)(GoodResult(buffers, parsed.transfer_bytes));
      }
      Task& task = NewTask(std::move(request), buffers, parsed, std::move(done));
      return Launch(task, [this, range](Task& t) { StartVerify(t, range); });
    }
    case opcode::kSynchronizeCache10:
    case opcode::kSynchronizeCache16: {
      // 0 blocks means "to the end of the medium".
      if (range.lba >= profile_.block_count || !profile_.RangeValid(range.lba, range.blocks)) {
        return refuse(sense::kLbaOutOfRange);
      }
      Task& task = NewTask(std::move(request), buffers, parsed, std::move(done));
      task.writing = true;
      return Launch(task, [this](Task& t) { backend_.Flush(TrackOperation(t)); });
    }
    case opcode::kWriteSame10:
    case opcode::kWriteSame16: {
      if (auto failure = CheckWriteSame(cdb, parsed, range)) return refuse(*failure);
      const bool no_data_out = parsed.direction == DataDirection::kNone;
      const bool may_unmap = (cdb[1] & kUnmapBit) && profile_.unmap;
      Task& task = NewTask(std::move(request), buffers, parsed, std::move(done));
      task.writing = true;
      return Launch(task, [this, range, no_data_out, may_unmap](Task& t) {
        StartWriteSame(t, range, no_data_out, may_unmap);
      });
    }
    case opcode::kUnmap: {
      constexpr uint8_t kAnchor = 0x01;
      if (cdb[1] & kAnchor) return refuse(sense::kInvalidFieldInCdb);
      if (profile_.read_only) return refuse(sense::kWriteProtected);
      if (!profile_.unmap) return refuse(sense::kInvalidOpcode);
      std::vector<uint8_t> parameters(parsed.transfer_bytes);
      CopyFromIovecs(parameters, request.data_out);
      std::vector<BlockRange> ranges;
      if (parameters.empty()) return std::move(done)(GoodResult(buffers, 0));
      if (auto failure = ParseUnmapList(profile_, parameters, ranges)) return refuse(*failure);
      Task& task = NewTask(std::move(request), buffers, parsed, std::move(done));
      task.writing = true;
      return Launch(task, [this, ranges = std::move(ranges)](Task& t) mutable {
        StartUnmap(t, std::move(ranges));
      });
    }
  }
  KVMINI_CHECK(false, "not a block command");
}

std::optional<SenseCode> ScsiDisk::CheckReadWrite(std::span<const uint8_t> cdb,
                                                  const ParsedCdb& parsed,
                                                  const BlockRange& range) const {
  // Protection information is not supported, so RDPROTECT/WRPROTECT must be 0.
  if (parsed.length != 6 && (cdb[1] & kProtectField)) return sense::kInvalidFieldInCdb;
  if (IsWrite(parsed.opcode) && profile_.read_only) return sense::kWriteProtected;
  if (!profile_.RangeValid(range.lba, range.blocks)) return sense::kLbaOutOfRange;
  if (range.blocks > profile_.max_transfer_blocks) return sense::kInvalidFieldInCdb;
  return std::nullopt;
}

std::optional<SenseCode> ScsiDisk::CheckVerify(std::span<const uint8_t> cdb,
                                               const ParsedCdb& parsed,
                                               const BlockRange& range) const {
  const uint8_t byte_check = (cdb[1] >> 1) & 0x3;
  if ((cdb[1] & kProtectField) || byte_check == 2) return sense::kInvalidFieldInCdb;
  if (!profile_.RangeValid(range.lba, range.blocks)) return sense::kLbaOutOfRange;
  // Comparing reads the range into a device buffer, so it is bounded.
  if (parsed.direction != DataDirection::kNone && range.blocks > profile_.max_transfer_blocks) {
    return sense::kInvalidFieldInCdb;
  }
  return std::nullopt;
}

std::optional<SenseCode> ScsiDisk::CheckWriteSame(std::span<const uint8_t> cdb,
                                                  const ParsedCdb& parsed,
                                                  const BlockRange& range) const {
  // ANCHOR, PBDATA and LBDATA are unsupported, as is WRITE SAME(10)'s
  // obsolete bit 0 (WRITE SAME(16)'s bit 0 is NDOB, handled by ParseCdb).
  const uint8_t unsupported = parsed.opcode == opcode::kWriteSame16 ? 0x16 : 0x17;
  if (cdb[1] & (kProtectField | unsupported)) return sense::kInvalidFieldInCdb;
  if (profile_.read_only) return sense::kWriteProtected;
  // WSNZ (VPD 0xB0): 0 blocks would mean "to the end"; we refuse it.
  if (range.blocks == 0) return sense::kInvalidFieldInCdb;
  if (!profile_.RangeValid(range.lba, range.blocks)) return sense::kLbaOutOfRange;
  if (range.blocks > profile_.max_write_same_blocks) return sense::kInvalidFieldInCdb;
  return std::nullopt;
}

void ScsiDisk::StartReadWrite(Task& task, const BlockRange& range, bool fua) {
  const uint64_t offset = range.lba * profile_.block_size;
  std::vector<iovec>& buffers = task.writing ? task.request.data_out : task.request.data_in;
  // The common case, buffers exactly the transfer size, needs no copy.
  const uint64_t buffer_bytes =
      task.writing ? task.buffers.data_out_length : task.buffers.data_in_capacity;
  std::vector<iovec> transfer = buffer_bytes == task.transfer_bytes
                                    ? std::move(buffers)
                                    : PrefixOfIovecs(buffers, task.transfer_bytes);
  if (task.writing) {
    backend_.Write(offset, std::move(transfer), TrackOperation(task));
    FlushIfWriteThrough(task, fua);
  } else {
    backend_.Read(offset, std::move(transfer), TrackOperation(task));
  }
}

void ScsiDisk::FlushIfWriteThrough(Task& task, bool fua) {
  if (!fua && write_cache_) return;
  task.next_step = [this](Task& t) { backend_.Flush(TrackOperation(t)); };
}

void ScsiDisk::StartVerify(Task& task, const BlockRange& range) {
  task.bounce.resize(range.blocks * profile_.block_size);
  backend_.Read(range.lba * profile_.block_size, {{task.bounce.data(), task.bounce.size()}},
                TrackOperation(task));
  // BYTCHK 01b sends the whole range, 11b one block to compare with each;
  // either way the medium is compared in data-out sized pieces.
  task.next_step = [](Task& t) {
    std::vector<uint8_t> expected(t.transfer_bytes);
    CopyFromIovecs(expected, t.request.data_out);
    for (size_t at = 0; at < t.bounce.size(); at += expected.size()) {
      if (std::memcmp(&t.bounce[at], expected.data(), expected.size()) != 0) {
        t.failure = sense::kMiscompareDuringVerify;
        return;
      }
    }
  };
}

void ScsiDisk::StartWriteSame(Task& task, const BlockRange& range, bool no_data_out,
                              bool may_unmap) {
  const uint32_t block_size = profile_.block_size;
  std::vector<uint8_t> pattern(block_size, 0);
  if (!no_data_out) CopyFromIovecs(pattern, task.request.data_out);
  const uint64_t offset = range.lba * block_size;
  const uint64_t length = range.blocks * block_size;
  if (std::all_of(pattern.begin(), pattern.end(), [](uint8_t byte) { return byte == 0; })) {
    backend_.WriteZeroes(offset, length, may_unmap, TrackOperation(task));
    return FlushIfWriteThrough(task, false);
  }
  const uint64_t chunk = std::min(length, kWriteSameChunkBytes / block_size * block_size);
  task.bounce.resize(chunk);
  for (uint64_t at = 0; at < chunk; at += block_size) {
    std::copy(pattern.begin(), pattern.end(), task.bounce.begin() + at);
  }
  task.offset = offset;
  task.remaining = length;
  WriteSameChunk(task);
}

void ScsiDisk::WriteSameChunk(Task& task) {
  const uint64_t length = std::min<uint64_t>(task.remaining, task.bounce.size());
  backend_.Write(task.offset, {{task.bounce.data(), length}}, TrackOperation(task));
  task.offset += length;
  task.remaining -= length;
  if (task.remaining > 0) {
    task.next_step = [this](Task& t) { WriteSameChunk(t); };
  } else {
    FlushIfWriteThrough(task, false);
  }
}

void ScsiDisk::StartUnmap(Task& task, std::vector<BlockRange> ranges) {
  for (const BlockRange& range : ranges) {
    backend_.Discard(range.lba * profile_.block_size, range.blocks * profile_.block_size,
                     TrackOperation(task));
  }
}

}  // namespace kvmini::hw::scsi

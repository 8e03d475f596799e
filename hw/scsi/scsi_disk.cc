#include "hw/scsi/scsi_disk.h"

#include <bit>
#include <vector>

#include "absl/strings/str_cat.h"
#include "hw/scsi/inquiry.h"
#include "hw/scsi/iovec_util.h"
#include "hw/scsi/mode_pages.h"
#include "util/check.h"

namespace kvmini::hw::scsi {
namespace {

// Limits SPC puts on the identity strings we report.
constexpr size_t kMaxSerialLength = 36;
constexpr size_t kMaxDeviceNameLength = 64;
constexpr uint32_t kMaxUnmapDescriptors = 255;
// The granularity Linux aligns discards to: a file system block, at least.
constexpr uint32_t kUnmapGranularityBytes = 4096;

absl::Status CheckText(const std::string& image, const char* what, const std::string& text,
                       size_t max_length, bool may_be_empty) {
  if (text.size() > max_length || (!may_be_empty && text.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat("SCSI disk ", image, ": ", what, " \"", text, "\" must be ",
                     may_be_empty ? "at most " : "1 to ", max_length, " characters"));
  }
  for (unsigned char c : text) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat("SCSI disk ", image, ": ", what, " \"", text,
                                                     "\" may only hold printable ASCII"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DiskProfile> MakeProfile(const block::BlockBackend& backend,
                                        const ScsiDiskOptions& options) {
  const std::string& image = backend.path();
  const uint32_t alignment = backend.alignment();
  const uint32_t block_size =
      options.block_size ? options.block_size : std::max<uint32_t>(512, alignment);
  if (block_size < 512 || block_size > 4096 || !std::has_single_bit(block_size)) {
    return absl::InvalidArgumentError(absl::StrCat("SCSI disk ", image, ": block size ", block_size,
                                                   " is not supported (use 512 or 4096)"));
  }
  if (block_size % alignment != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SCSI disk ", image, ": block size ", block_size, " is smaller than the ", alignment,
        "-byte alignment the image needs (direct I/O on its device); use a block size of ",
        alignment));
  }
  const uint32_t physical = options.physical_block_size ? options.physical_block_size : block_size;
  if (physical < block_size || !std::has_single_bit(physical) || physical / block_size > 1u << 15) {
    return absl::InvalidArgumentError(
        absl::StrCat("SCSI disk ", image, ": physical block size ", physical,
                     " must be a power of two and at least the block size ", block_size));
  }
  if (backend.size_bytes() < block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("SCSI disk ", image, ": the image (", backend.size_bytes(),
                     " bytes) is smaller than one ", block_size, "-byte block"));
  }
  if (options.max_transfer_bytes < block_size || options.max_transfer_bytes % block_size != 0 ||
      options.max_unmap_bytes < block_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SCSI disk ", image, ": transfer and unmap limits must be multiples of the block size ",
        block_size));
  }
  for (const absl::Status& status :
       {CheckText(image, "vendor", options.vendor, 8, false),
        CheckText(image, "product", options.product, 16, false),
        CheckText(image, "revision", options.revision, 4, false),
        CheckText(image, "serial", options.serial, kMaxSerialLength, true),
        CheckText(image, "device name", options.device_name, kMaxDeviceNameLength, false)}) {
    if (!status.ok()) return status;
  }

  DiskProfile profile;
  profile.block_size = block_size;
  profile.physical_block_exponent = static_cast<uint8_t>(std::countr_zero(physical / block_size));
  profile.block_count = backend.size_bytes() / block_size;
  profile.read_only = backend.read_only();
  profile.unmap = options.unmap && !profile.read_only;
  profile.rotational = options.rotational;
  profile.vendor = options.vendor;
  profile.product = options.product;
  profile.revision = options.revision;
  profile.serial = options.serial;
  profile.identifier = options.serial.empty() ? options.device_name : options.serial;
  profile.max_transfer_blocks = options.max_transfer_bytes / block_size;
  const uint64_t unmap_blocks = options.max_unmap_bytes / block_size;
  profile.max_unmap_blocks = static_cast<uint32_t>(std::min<uint64_t>(unmap_blocks, 0xffffffff));
  profile.max_unmap_descriptors = kMaxUnmapDescriptors;
  profile.unmap_granularity_blocks = std::max<uint32_t>(1, kUnmapGranularityBytes / block_size);
  profile.max_write_same_blocks = profile.max_unmap_blocks;
  return profile;
}

bool IsBlockCommand(uint8_t code) {
  using namespace opcode;
  switch (code) {
    case kRead6:
    case kRead10:
    case kRead12:
    case kRead16:
    case kWrite6:
    case kWrite10:
    case kWrite12:
    case kWrite16:
    case kVerify10:
    case kVerify16:
    case kSynchronizeCache10:
    case kSynchronizeCache16:
    case kWriteSame10:
    case kWriteSame16:
    case kUnmap:
      return true;
  }
  return false;
}

ScsiResult ReplyResult(const ScsiRequest& request, const RequestBuffers& buffers,
                       const ParsedCdb& parsed, const EmulatedReply& reply) {
  if (reply.failure) return CheckConditionResult(request, buffers, *reply.failure);
  return DataInResult(request, buffers, reply.data, parsed.transfer_bytes);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ScsiDisk>> ScsiDisk::Create(block::BlockBackend& backend,
                                                           const ScsiDiskOptions& options) {
  absl::StatusOr<DiskProfile> profile = MakeProfile(backend, options);
  if (!profile.ok()) return profile.status();
  return std::unique_ptr<ScsiDisk>(new ScsiDisk(backend, *std::move(profile), options.write_cache));
}

ScsiDisk::ScsiDisk(block::BlockBackend& backend, DiskProfile profile, bool write_cache)
    : backend_(backend),
      profile_(std::move(profile)),
      default_write_cache_(write_cache),
      write_cache_(write_cache) {}

ScsiDisk::~ScsiDisk() {
  KVMINI_CHECK(first_task_ == nullptr, "SCSI disk destroyed with requests in flight");
}

void ScsiDisk::Submit(ScsiRequest request, ScsiCompletion done) {
  const RequestBuffers buffers(request);
  const std::span<const uint8_t> cdb(request.cdb.data(), request.cdb_length);
  const std::optional<ParsedCdb> parsed = ParseCdb(cdb, profile_.block_size);
  // REPORT LUNS belongs to the target (ScsiTarget answers it for us).
  if (!parsed || parsed->opcode == opcode::kReportLuns) {
    return std::move(done)(CheckConditionResult(request, buffers, sense::kInvalidOpcode));
  }
  if (IsOverrun(*parsed, buffers)) return std::move(done)(OverrunResult(buffers));
  if (!ControlByteSupported(cdb, *parsed)) {
    return std::move(done)(CheckConditionResult(request, buffers, sense::kInvalidFieldInCdb));
  }
  // SAM-5 5.14: a pending unit attention fails any command but INQUIRY,
  // REPORT LUNS and REQUEST SENSE (which reports it), once.
  if (unit_attention_ && parsed->opcode != opcode::kInquiry &&
      parsed->opcode != opcode::kRequestSense) {
    const SenseCode attention = *unit_attention_;
    unit_attention_.reset();
    return std::move(done)(CheckConditionResult(request, buffers, attention));
  }
  if (IsBlockCommand(parsed->opcode)) {
    return RunBlockCommand(std::move(request), buffers, *parsed, std::move(done));
  }
  std::move(done)(RunEmulated(request, buffers, *parsed));
}

ScsiResult ScsiDisk::RunEmulated(const ScsiRequest& request, const RequestBuffers& buffers,
                                 const ParsedCdb& parsed) {
  const std::span<const uint8_t> cdb(request.cdb.data(), parsed.length);
  switch (parsed.opcode) {
    case opcode::kTestUnitReady:
    case opcode::kStartStopUnit:              // nothing to spin up or eject
    case opcode::kPreventAllowMediumRemoval:  // the medium is not removable
      return GoodResult(buffers, 0);
    case opcode::kRequestSense:
      return RequestSense(request, buffers, parsed);
    case opcode::kInquiry:
      return ReplyResult(request, buffers, parsed, Inquiry(profile_, cdb));
    case opcode::kReadCapacity10:
      return ReplyResult(request, buffers, parsed, ReadCapacity10(profile_, cdb));
    case opcode::kServiceActionIn16:
      return ReplyResult(request, buffers, parsed, ServiceActionIn16(profile_, cdb));
    case opcode::kModeSense6:
    case opcode::kModeSense10: {
      const ModeValues values{write_cache_, default_write_cache_};
      return ReplyResult(request, buffers, parsed, ModeSense(profile_, values, cdb, parsed));
    }
    case opcode::kModeSelect6:
    case opcode::kModeSelect10:
      return ModeSelect(request, buffers, parsed);
  }
  // ParseCdb only knows commands handled here or in RunBlockCommand.
  KVMINI_CHECK(false, "parsed SCSI command without a handler");
}

ScsiResult ScsiDisk::RequestSense(const ScsiRequest& request, const RequestBuffers& buffers,
                                  const ParsedCdb& parsed) {
  // Every error is reported with its command (autosense), so only a unit
  // attention can be pending here.
  const SenseCode code = unit_attention_.value_or(sense::kNoSense);
  unit_attention_.reset();
  const bool descriptor_format = request.cdb[1] & 0x01;
  if (descriptor_format) {
    return DataInResult(request, buffers, DescriptorSense(code), parsed.transfer_bytes);
  }
  return DataInResult(request, buffers, FixedSense(code), parsed.transfer_bytes);
}

ScsiResult ScsiDisk::ModeSelect(const ScsiRequest& request, const RequestBuffers& buffers,
                                const ParsedCdb& parsed) {
  std::vector<uint8_t> parameters(parsed.transfer_bytes);
  CopyFromIovecs(parameters, request.data_out);
  const std::span<const uint8_t> cdb(request.cdb.data(), parsed.length);
  if (auto failure = scsi::ModeSelect(profile_, write_cache_, cdb, parsed, parameters)) {
    return CheckConditionResult(request, buffers, *failure);
  }
  return GoodResult(buffers, parsed.transfer_bytes);
}

}  // namespace kvmini::hw::scsi

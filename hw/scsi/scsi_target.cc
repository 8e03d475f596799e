#include "hw/scsi/scsi_target.h"

#include "absl/strings/str_cat.h"
#include "hw/scsi/big_endian.h"
#include "hw/scsi/inquiry.h"
#include "hw/scsi/scsi_reply.h"

namespace kvmini::hw::scsi {
namespace {

constexpr uint8_t kReportLunsWellKnownHigh = 0xc1;
constexpr uint8_t kReportLunsWellKnownLow = 0x01;

// REPORT LUNS SELECT REPORT values (SPC-4 6.33).
constexpr uint8_t kSelectLogicalUnits = 0x00;
constexpr uint8_t kSelectWellKnown = 0x01;
constexpr uint8_t kSelectAll = 0x02;

// Identity the target reports for LUNs that have no disk.
constexpr char kTargetVendor[] = "KVMINI";
constexpr char kTargetProduct[] = "KVMINI TARGET";
constexpr char kTargetRevision[] = "0.1";

// Single-level LUN structure, as REPORT LUNS lists it.
std::array<uint8_t, 8> SingleLevelLun(uint16_t lun) {
  std::array<uint8_t, 8> bytes{};
  if (lun < 256) {
    bytes[1] = static_cast<uint8_t>(lun);  // peripheral device addressing
  } else {
    bytes[0] = static_cast<uint8_t>(0x40 | (lun >> 8));  // flat space addressing
    bytes[1] = static_cast<uint8_t>(lun);
  }
  return bytes;
}

// INQUIRY to a LUN without a disk: standard data, or VPD page 0x00 listing
// only itself.
EmulatedReply AbsentInquiry(uint8_t peripheral, std::span<const uint8_t> cdb) {
  const bool vital_product_data = cdb[1] & 0x01;
  if ((cdb[1] & 0x02) || cdb[2] != 0) return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  if (vital_product_data) return EmulatedReply::Data({peripheral, 0x00, 0x00, 0x01, 0x00});
  return EmulatedReply::Data(
      StandardInquiryData(peripheral, kTargetVendor, kTargetProduct, kTargetRevision));
}

}  // namespace

std::optional<LunAddress> DecodeVirtioLun(std::span<const uint8_t, 8> bytes) {
  if (bytes[0] != 1) return std::nullopt;
  LunAddress address{.target = bytes[1]};
  const bool second_level = bytes[4] | bytes[5] | bytes[6] | bytes[7];
  const uint8_t method = bytes[2] >> 6;
  if (second_level) {
    address.kind = LunAddress::Kind::kUnsupported;
  } else if (bytes[2] == kReportLunsWellKnownHigh && bytes[3] == kReportLunsWellKnownLow) {
    address.kind = LunAddress::Kind::kReportLunsWellKnown;
  } else if (method == 0 && bytes[2] == 0) {  // peripheral, bus 0
    address.kind = LunAddress::Kind::kLogicalUnit;
    address.lun = bytes[3];
  } else if (method == 1) {  // flat space
    address.kind = LunAddress::Kind::kLogicalUnit;
    address.lun = static_cast<uint16_t>(((bytes[2] & 0x3f) << 8) | bytes[3]);
  } else {
    address.kind = LunAddress::Kind::kUnsupported;
  }
  return address;
}

std::array<uint8_t, 8> EncodeVirtioLun(uint8_t target, uint16_t lun) {
  std::array<uint8_t, 8> bytes{};
  bytes[0] = 1;
  bytes[1] = target;
  bytes[2] = static_cast<uint8_t>(0x40 | ((lun >> 8) & 0x3f));
  bytes[3] = static_cast<uint8_t>(lun);
  return bytes;
}

absl::Status ScsiTarget::AttachLun(uint16_t lun, ScsiDisk& disk) {
  if (lun > kMaxLun) {
    return absl::InvalidArgumentError(
        absl::StrCat("SCSI LUN ", lun, " is out of range (0 to ", kMaxLun, ")"));
  }
  if (!luns_.emplace(lun, &disk).second) {
    return absl::AlreadyExistsError(absl::StrCat("SCSI LUN ", lun, " is already in use"));
  }
  return absl::OkStatus();
}

void ScsiTarget::DetachLun(uint16_t lun) { luns_.erase(lun); }

ScsiDisk* ScsiTarget::Find(const LunAddress& address) const {
  if (address.kind != LunAddress::Kind::kLogicalUnit) return nullptr;
  const auto it = luns_.find(address.lun);
  return it == luns_.end() ? nullptr : it->second;
}

std::vector<uint16_t> ScsiTarget::luns() const {
  std::vector<uint16_t> numbers;
  for (const auto& [lun, disk] : luns_) numbers.push_back(lun);
  return numbers;
}

void ScsiTarget::Submit(const LunAddress& address, ScsiRequest request, ScsiCompletion done) {
  ScsiDisk* disk = Find(address);
  const bool report_luns = request.cdb_length > 0 && request.cdb[0] == opcode::kReportLuns;
  if (disk != nullptr && !report_luns) return disk->Submit(std::move(request), std::move(done));
  std::move(done)(AnswerForTarget(address, request));
}

ScsiResult ScsiTarget::AnswerForTarget(const LunAddress& address, const ScsiRequest& request) {
  const RequestBuffers buffers(request);
  const bool well_known = address.kind == LunAddress::Kind::kReportLunsWellKnown;
  const bool present = Find(address) != nullptr;
  const std::span<const uint8_t> cdb(request.cdb.data(), request.cdb_length);
  const std::optional<ParsedCdb> parsed = ParseCdb(cdb, 512);
  const uint8_t code = parsed ? parsed->opcode : 0xff;
  const bool target_command = code == opcode::kReportLuns || code == opcode::kInquiry ||
                              code == opcode::kRequestSense || code == opcode::kTestUnitReady;
  if (!target_command) {
    // SPC-4: LOGICAL UNIT NOT SUPPORTED for a missing LUN; a well-known LUN
    // exists but implements nothing else.
    return CheckConditionResult(request, buffers,
                                well_known ? sense::kInvalidOpcode : sense::kLunNotSupported);
  }
  if (IsOverrun(*parsed, buffers)) return OverrunResult(buffers);
  if (!ControlByteSupported(cdb, *parsed)) {
    return CheckConditionResult(request, buffers, sense::kInvalidFieldInCdb);
  }

  EmulatedReply reply;
  switch (code) {
    case opcode::kReportLuns:
      reply = ReportLuns(cdb, parsed->transfer_bytes);
      break;
    case opcode::kInquiry:
      reply = AbsentInquiry(well_known ? kWellKnownLogicalUnit : kNoLogicalUnitPeripheral, cdb);
      break;
    case opcode::kRequestSense: {
      // SPC-4 5.12: REQUEST SENSE to a missing LUN returns, as data, the
      // LOGICAL UNIT NOT SUPPORTED sense it would otherwise fail with.
      const SenseCode sense_code = well_known ? sense::kNoSense : sense::kLunNotSupported;
      if (cdb[1] & 0x01) {
        const auto bytes = DescriptorSense(sense_code);
        reply.data.assign(bytes.begin(), bytes.end());
      } else {
        const auto bytes = FixedSense(sense_code);
        reply.data.assign(bytes.begin(), bytes.end());
      }
      break;
    }
    case opcode::kTestUnitReady:
      if (!well_known && !present) reply = EmulatedReply::Fail(sense::kLunNotSupported);
      break;
  }
  if (reply.failure) return CheckConditionResult(request, buffers, *reply.failure);
  return DataInResult(request, buffers, reply.data, parsed->transfer_bytes);
}

EmulatedReply ScsiTarget::ReportLuns(std::span<const uint8_t> cdb,
                                     uint64_t allocation_length) const {
  const uint8_t select = cdb[2];
  // SPC-4: an allocation length under 16 is an invalid field.
  if (allocation_length < 16 || select > kSelectAll) {
    return EmulatedReply::Fail(sense::kInvalidFieldInCdb);
  }
  std::vector<uint8_t> data(8, 0);
  const auto append = [&data](const std::array<uint8_t, 8>& entry) {
    data.insert(data.end(), entry.begin(), entry.end());
  };
  if (select == kSelectLogicalUnits || select == kSelectAll) {
    for (const auto& [lun, disk] : luns_) append(SingleLevelLun(lun));
  }
  if (select == kSelectWellKnown || select == kSelectAll) {
    append({kReportLunsWellKnownHigh, kReportLunsWellKnownLow, 0, 0, 0, 0, 0, 0});
  }
  StoreBigEndian32(&data[0], static_cast<uint32_t>(data.size() - 8));
  return EmulatedReply::Data(std::move(data));
}

}  // namespace kvmini::hw::scsi

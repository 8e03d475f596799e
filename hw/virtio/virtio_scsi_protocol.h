// The virtio-scsi wire format (virtio 1.2, section 5.6): device ID, feature
// bits, the configuration layout, request/response layouts of the command
// and control queues, and their response codes. Multi-byte fields are
// little endian (x86 hosts: plain memcpy). The SCSI side (CDBs, sense
// data) is in hw/scsi/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvmini::hw::virtio::virtio_scsi {

inline constexpr uint32_t kDeviceId = 8;

// Feature bits (none is offered: no bidirectional commands, no hot-plug
// or parameter-change events, no protection information).
inline constexpr uint64_t kFeatureInOut = 1ull << 0;
inline constexpr uint64_t kFeatureHotplug = 1ull << 1;
inline constexpr uint64_t kFeatureChange = 1ull << 2;
inline constexpr uint64_t kFeatureT10Pi = 1ull << 3;

// Queue indices; request queues follow the event queue.
inline constexpr uint16_t kControlQueue = 0;
inline constexpr uint16_t kEventQueue = 1;
inline constexpr uint16_t kFirstRequestQueue = 2;

// Configuration space offsets (36 bytes).
namespace config {
inline constexpr size_t kNumQueues = 0;
inline constexpr size_t kSegMax = 4;
inline constexpr size_t kMaxSectors = 8;
inline constexpr size_t kCmdPerLun = 12;
inline constexpr size_t kEventInfoSize = 16;
inline constexpr size_t kSenseSize = 20;  // driver-writable
inline constexpr size_t kCdbSize = 24;    // driver-writable
inline constexpr size_t kMaxChannel = 28;  // u16
inline constexpr size_t kMaxTarget = 30;   // u16
inline constexpr size_t kMaxLun = 32;
inline constexpr size_t kSize = 36;
}  // namespace config

// Reset values of the driver-writable fields, and the largest values we
// accept (as QEMU does: sense_size below 64 KiB, cdb_size below 256).
inline constexpr uint32_t kDefaultSenseSize = 96;
inline constexpr uint32_t kDefaultCdbSize = 32;
inline constexpr uint32_t kSenseSizeLimit = 65535;
inline constexpr uint32_t kCdbSizeLimit = 255;
inline constexpr uint32_t kEventInfoSizeBytes = 16;

// Command request: lun[8] @0, id u64 @8, task_attr u8 @16, prio u8 @17,
// crn u8 @18, cdb[cdb_size] @19, then data-out.
inline constexpr size_t kCommandLun = 0;
inline constexpr size_t kCommandTag = 8;
inline constexpr size_t kCommandCdb = 19;
// Command response: sense_len u32 @0, residual u32 @4, status_qualifier u16
// @8, status u8 @10, response u8 @11, sense[sense_size] @12, then data-in.
inline constexpr size_t kResponseSenseLength = 0;
inline constexpr size_t kResponseResidual = 4;
inline constexpr size_t kResponseStatus = 10;
inline constexpr size_t kResponseCode = 11;
inline constexpr size_t kResponseSense = 12;

// Control queue request types.
inline constexpr uint32_t kControlTmf = 0;
inline constexpr uint32_t kControlAnQuery = 1;
inline constexpr uint32_t kControlAnSubscribe = 2;
// TMF request: type u32 @0, subtype u32 @4, lun[8] @8, id u64 @16 (24
// bytes); response: response u8.
inline constexpr size_t kTmfSubtype = 4;
inline constexpr size_t kTmfLun = 8;
inline constexpr size_t kTmfTag = 16;
inline constexpr size_t kTmfRequestSize = 24;
inline constexpr size_t kTmfResponseSize = 1;
// Asynchronous notification request: type u32 @0, lun[8] @4,
// event_requested u32 @12 (16 bytes); response: event_actual u32 @0,
// response u8 @4 (5 bytes, packed).
inline constexpr size_t kAnRequestSize = 16;
inline constexpr size_t kAnResponseEventActual = 0;
inline constexpr size_t kAnResponseCode = 4;
inline constexpr size_t kAnResponseSize = 5;

// TMF subtypes.
namespace tmf {
inline constexpr uint32_t kAbortTask = 0;
inline constexpr uint32_t kAbortTaskSet = 1;
inline constexpr uint32_t kClearAca = 2;
inline constexpr uint32_t kClearTaskSet = 3;
inline constexpr uint32_t kITNexusReset = 4;
inline constexpr uint32_t kLogicalUnitReset = 5;
inline constexpr uint32_t kQueryTask = 6;
inline constexpr uint32_t kQueryTaskSet = 7;
}  // namespace tmf

// Response codes (the `response` byte of every queue).
namespace response {
inline constexpr uint8_t kOk = 0;
inline constexpr uint8_t kOverrun = 1;
inline constexpr uint8_t kAborted = 2;
inline constexpr uint8_t kBadTarget = 3;
inline constexpr uint8_t kReset = 4;
inline constexpr uint8_t kBusy = 5;
inline constexpr uint8_t kTransportFailure = 6;
inline constexpr uint8_t kTargetFailure = 7;
inline constexpr uint8_t kNexusFailure = 8;
inline constexpr uint8_t kFailure = 9;
inline constexpr uint8_t kFunctionSucceeded = 10;
inline constexpr uint8_t kFunctionRejected = 11;
inline constexpr uint8_t kIncorrectLun = 12;
// TMF "function complete" is the same value as OK.
inline constexpr uint8_t kFunctionComplete = kOk;
}  // namespace response

}  // namespace kvmini::hw::virtio::virtio_scsi

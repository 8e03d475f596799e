// The disk and IOThread options of the kvmini command line: --iothread
// ID or id=ID[,poll-max-ns=N], --blk KEY=VALUE,... and --scsi
// KEY=VALUE,..., parsed and checked into DiskSpecs the machine builds its
// virtio disks from. Every mistake is an InvalidArgument error of one line
// naming the flag, the value and what is wrong (kvmini exits with status 2).
//
// Syntax of a disk option (the same keys for --blk and --scsi):
//   path=IMG[,id=ID][,iothread=ID][,readonly=on|off][,direct=on|off]
//           [,queues=N][,serial=STR][,aio=io_uring|threads]
// A comma inside a value is written twice (",,"), as in QEMU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "block/block_backend.h"
#include "util/aio_context.h"

namespace kvmini::vmm {

enum class DiskType { kBlk, kScsi };

struct DiskSpec {
  DiskType type = DiskType::kBlk;
  std::string id = {};        // unique among all disks; "blkN"/"scsiN" unless given
  std::string path = {};      // the raw image
  std::string iothread = {};  // empty: served by the main loop
  bool read_only = false;
  bool direct = false;
  // virtio-blk queues, or virtio-scsi request queues.
  uint16_t queues = 1;
  std::string serial = {};
  block::AioEngine engine = block::AioEngine::kAuto;
};

// "--blk" or "--scsi"; "virtio-blk" or "virtio-scsi".
absl::string_view DiskFlagName(DiskType type);
absl::string_view DiskTypeName(DiskType type);

// Longest serial each device type can report: virtio-blk's GET_ID answer
// (20 bytes) and SCSI VPD page 0x80 (36, the disk emulation's limit).
inline constexpr size_t kMaxBlkSerialBytes = 20;
inline constexpr size_t kMaxScsiSerialBytes = 36;
inline constexpr uint16_t kMaxDiskQueues = 64;
inline constexpr size_t kMaxIdBytes = 32;
// Each IOThread is a host thread with its own event loop; a disk's queues
// all run on one of them, so more than a few per disk slot is never
// useful, and thousands would exhaust the host's threads.
inline constexpr size_t kMaxIoThreads = 64;

// One --blk/--scsi value on its own: keys, values and ranges. The id is left
// empty when not given (ValidateDisks picks the default).
absl::StatusOr<DiskSpec> ParseDiskSpec(DiskType type, absl::string_view text);

// Whether `id` can name a disk or an IOThread: 1-32 characters of letters,
// digits, '-', '_' and '.', starting with a letter.
bool IsValidId(absl::string_view id);

struct IoThreadSpec {
  IoThreadSpec() = default;
  // Implicit, like the short form of --iothread: an id alone is a spec
  // with the default settings ({"io0", "io1"} is a list of them).
  IoThreadSpec(std::string id_in) : id(std::move(id_in)) {}        // NOLINT
  IoThreadSpec(const char* id_in) : id(id_in) {}                   // NOLINT
  bool operator==(const IoThreadSpec&) const = default;

  std::string id;
  // The cap of its loop's adaptive polling (util/aio_context.h); 0: off.
  int64_t poll_max_ns = util::AioContext::kDefaultPollMaxNs;
};
// Longest poll-max-ns accepted: spinning longer than this before sleeping
// is certainly a typo.
inline constexpr int64_t kMaxPollMaxNs = 1'000'000'000;

// One --iothread value: a bare ID, or id=ID[,poll-max-ns=N].
absl::StatusOr<IoThreadSpec> ParseIoThreadSpec(absl::string_view text);
// Every --iothread value parsed, then the ids checked together: each a
// valid id, no duplicates, at most kMaxIoThreads.
absl::StatusOr<std::vector<IoThreadSpec>> ValidateIoThreads(
    const std::vector<std::string>& iothreads);

// Everything about the disks together, in the order the guest will see
// them (every --blk in command-line order, then every --scsi): each value
// parses, ids are unique (defaults "blk0", "blk1", ... and "scsi0", ...
// by position among their flag), each iothread= names one of `iothreads`
// (ValidateIoThreads's result: their ids are not checked again), there
// are no more disks than virtio-mmio slots (`max_disks`), and each image
// can be opened with the access it needs.
absl::StatusOr<std::vector<DiskSpec>> ValidateDisks(const std::vector<std::string>& blk,
                                                    const std::vector<std::string>& scsi,
                                                    const std::vector<IoThreadSpec>& iothreads,
                                                    size_t max_disks);

}  // namespace kvmini::vmm

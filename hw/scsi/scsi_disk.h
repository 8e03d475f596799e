// ScsiDisk: one SCSI direct-access logical unit (SBC-3 disk) over a
// block::BlockBackend, as a virtio-scsi LUN sees it. It parses CDBs,
// answers INQUIRY/MODE SENSE/READ CAPACITY and friends from its profile,
// turns READ/WRITE/SYNCHRONIZE CACHE/UNMAP/WRITE SAME/VERIFY into backend
// operations, and reports CHECK CONDITION with fixed-format sense data for
// everything it refuses. It knows nothing about virtio.
//
// Threading: a disk is served by the thread of its backend's AioContext
// (the main loop or an IOThread). Call every method from that thread; the
// transport moves the backend with BlockBackend::SetAioContext() only when
// in_flight() is 0. Nothing here takes a lock or waits.
//
// Command notes users comparing with QEMU's scsi-hd may look for:
// - FUA on WRITE is a flush after the write; MODE SELECT may clear WCE in
//   the caching page, after which every write is followed by a flush.
// - VERIFY with BYTCHK 00b checks the range only (an image file has no
//   media to scan); 01b and 11b read the blocks and compare (MISCOMPARE
//   0E/1D/00 on a difference).
// - WRITE SAME of an all-zero block (or with NDOB) becomes a write-zeroes
//   that may deallocate when the UNMAP bit is set.
// - REPORT LUNS is answered by ScsiTarget, not by the disk.
// - After Reset() the next command other than INQUIRY and REQUEST SENSE
//   gets UNIT ATTENTION 06/29/00, as from a real LUN reset.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "block/block_backend.h"
#include "hw/scsi/cdb.h"
#include "hw/scsi/disk_profile.h"
#include "hw/scsi/scsi_reply.h"
#include "hw/scsi/scsi_request.h"

namespace kvmini::hw::scsi {

struct ScsiDiskOptions {
  // Logical block size: 512, 1024, 2048 or 4096; 0 picks 512, or the
  // backend's alignment when larger (an O_DIRECT image on a 4K-sector
  // device), since the backend refuses writes smaller than its alignment.
  uint32_t block_size = 0;
  // 0: the logical block size. Otherwise a power of two multiple of it.
  uint32_t physical_block_size = 0;
  std::string vendor = "KVMINI";
  std::string product = "KVMINI DISK";
  std::string revision = "0.1";
  // Printable ASCII, at most 36 characters; empty: no VPD page 0x80.
  std::string serial = {};
  // Identifies the disk in VPD page 0x83 when there is no serial (e.g. the
  // --scsi id=); printable ASCII, at most 64 characters.
  std::string device_name = "disk";
  // Advertise and perform UNMAP (thin provisioning). Ignored when the
  // backend is read-only.
  bool unmap = true;
  bool rotational = false;
  // WCE in the caching mode page at creation and after Reset().
  bool write_cache = true;
  // Largest READ/WRITE/VERIFY the disk accepts (VPD 0xB0), a multiple of
  // the block size.
  uint32_t max_transfer_bytes = 8u << 20;
  // Largest UNMAP descriptor and WRITE SAME range.
  uint64_t max_unmap_bytes = 1ull << 30;
};

class ScsiDisk {
 public:
  // Errors name the image and the offending option (block size not
  // supported, image smaller than one block, identity strings too long or
  // not printable).
  static absl::StatusOr<std::unique_ptr<ScsiDisk>> Create(block::BlockBackend& backend,
                                                          const ScsiDiskOptions& options);
  // No request may be in flight (checked): drain first.
  ~ScsiDisk();
  ScsiDisk(const ScsiDisk&) = delete;
  ScsiDisk& operator=(const ScsiDisk&) = delete;

  // Runs one command. `done` runs exactly once: inside this call for
  // commands answered without I/O (and for every refusal), otherwise from
  // the completion of the last backend operation the command needed.
  void Submit(ScsiRequest request, ScsiCompletion done);

  // Task management. Commands still waiting for the backend cannot be
  // recalled from it; they are marked aborted, start no further operation,
  // and complete with ScsiResult::Response::kAborted once their operations
  // finish. Each `done` runs after the completions of the requests it
  // affected (inside the call when there are none).
  //
  // ABORT TASK: every in-flight request carrying `tag`; `found` says
  // whether there was one.
  void AbortTask(uint64_t tag, absl::AnyInvocable<void(bool found) &&> done);
  // ABORT TASK SET, CLEAR TASK SET, I_T NEXUS RESET: every request.
  void AbortAllTasks(absl::AnyInvocable<void() &&> done);
  // LOGICAL UNIT RESET: aborts every request, restores the mode pages to
  // their defaults and raises a power-on/reset unit attention.
  void Reset(absl::AnyInvocable<void() &&> done);
  // QUERY TASK / QUERY TASK SET.
  bool HasTask(uint64_t tag) const;
  // Requests submitted and not yet completed. Readable from any thread; it
  // drops after the completion ran, with an AioWaitKick(), so the main loop
  // can wait for it with AioWaitWhileUnlocked().
  size_t in_flight() const { return in_flight_.load(std::memory_order_acquire); }

  const DiskProfile& profile() const { return profile_; }
  bool write_cache_enabled() const { return write_cache_; }
  block::BlockBackend& backend() const { return backend_; }

 private:
  struct Task;
  struct AbortWaiter;

  ScsiDisk(block::BlockBackend& backend, DiskProfile profile, bool write_cache);

  // Commands answered from the profile and mode state (scsi_disk.cc).
  ScsiResult RunEmulated(const ScsiRequest& request, const RequestBuffers& buffers,
                         const ParsedCdb& parsed);
  ScsiResult RequestSense(const ScsiRequest& request, const RequestBuffers& buffers,
                          const ParsedCdb& parsed);
  ScsiResult ModeSelect(const ScsiRequest& request, const RequestBuffers& buffers,
                        const ParsedCdb& parsed);

  // Commands that reach the backend (disk_block_commands.cc). Each either
  // refuses at once through `done` or hands the request to a Task.
  void RunBlockCommand(ScsiRequest request, const RequestBuffers& buffers, const ParsedCdb& parsed,
                       ScsiCompletion done);
  std::optional<SenseCode> CheckReadWrite(std::span<const uint8_t> cdb, const ParsedCdb& parsed,
                                          const BlockRange& range) const;
  std::optional<SenseCode> CheckVerify(std::span<const uint8_t> cdb, const ParsedCdb& parsed,
                                       const BlockRange& range) const;
  std::optional<SenseCode> CheckWriteSame(std::span<const uint8_t> cdb, const ParsedCdb& parsed,
                                          const BlockRange& range) const;
  void StartReadWrite(Task& task, const BlockRange& range, bool fua);
  void StartVerify(Task& task, const BlockRange& range);
  void StartWriteSame(Task& task, const BlockRange& range, bool no_data_out, bool may_unmap);
  void WriteSameChunk(Task& task);
  void StartUnmap(Task& task, std::vector<BlockRange> ranges);
  // With FUA, or with the write cache disabled, the task's next step is a
  // flush.
  void FlushIfWriteThrough(Task& task, bool fua);

  // Task life cycle (disk_tasks.cc).
  Task& NewTask(ScsiRequest request, const RequestBuffers& buffers, const ParsedCdb& parsed,
                ScsiCompletion done);
  // Runs the task's first step (inline: no type erasure on the hot path),
  // then completes it if the step left nothing in flight.
  template <typename Step>
  void Launch(Task& task, Step&& first_step);
  // Returns the completion to hand to one backend operation of `task`.
  block::BlockBackend::Completion TrackOperation(Task& task);
  void OnOperationDone(Task& task, int status);
  void Advance(Task& task);
  void Finish(Task& task, const ScsiResult& result);
  // Marks `matching` tasks aborted; `done` runs once they have completed.
  template <typename Predicate>
  void AbortMatching(Predicate matching, absl::AnyInvocable<void(bool found) &&> done);

  block::BlockBackend& backend_;
  const DiskProfile profile_;
  const bool default_write_cache_;
  bool write_cache_;
  std::optional<SenseCode> unit_attention_;
  // In-flight tasks, an intrusive list so abort can find them by tag.
  Task* first_task_ = nullptr;
  std::atomic<size_t> in_flight_{0};
};

}  // namespace kvmini::hw::scsi

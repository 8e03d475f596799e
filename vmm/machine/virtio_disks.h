// VirtioDisks: a machine's IOThreads and virtio disks, built from the
// command line's DiskSpecs: per disk a BlockBackend on its image, the
// device (virtio-blk, or a virtio-scsi controller with the disk at target 0,
// LUN 0) and the virtio-mmio transport around it. AttachTo() maps each at
// the next virtio-mmio slot with the next GSI and registers its ioeventfds
// and irqfd; the slots come back in order for the DSDT.
//
// It also keeps what the control socket changes about each disk (which
// IOThread it uses, whether the operator wants its dataplane running), so
// that `cont` can restore the dataplanes as they were.
//
// Threads: create, use and destroy it in the main loop thread. Destroy it
// after the vCPUs have stopped: the transports go first (their queues are
// stopped while the IOThreads still run), then the IOThreads.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "block/block_backend.h"
#include "hw/memory/guest_memory.h"
#include "hw/virtio/mmio_transport.h"
#include "hw/virtio/virtio_blk.h"
#include "hw/virtio/virtio_scsi.h"
#include "util/aio_context.h"
#include "util/iothread.h"
#include "vmm/machine/disk_options.h"
#include "vmm/machine/machine.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm {

// What query-devices reports about a disk's requests.
struct DiskCounters {
  uint64_t completed = 0;
  uint64_t in_flight = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t errors = 0;
};

class VirtioDisks {
 public:
  struct Disk {
    DiskSpec spec;
    std::unique_ptr<hw::virtio::MmioTransport> transport;
    hw::virtio::VirtioBlk* blk = nullptr;  // exactly one of blk and scsi is set
    hw::virtio::VirtioScsi* scsi = nullptr;
    block::BlockBackend* backend = nullptr;
    // The IOThread the disk uses now ("" = none); starts as spec.iothread.
    std::string iothread;
    // The operator's last dataplane-start (true) or dataplane-stop (false).
    bool dataplane_wanted = true;

    DiskCounters counters() const;
  };

  // Starts the IOThreads, opens every image and creates the devices. A
  // problem with an image or a disk option is an InvalidArgument error
  // naming the disk (usage error); anything else is reported as is.
  static absl::StatusOr<std::unique_ptr<VirtioDisks>> Create(
      const hw::GuestMemory& memory, const std::vector<IoThreadSpec>& iothreads,
      const std::vector<DiskSpec>& specs);
  ~VirtioDisks();
  VirtioDisks(const VirtioDisks&) = delete;
  VirtioDisks& operator=(const VirtioDisks&) = delete;

  // Maps every disk on `machine` (slot i for disk i) and wires its
  // notifications; returns the windows in DSDT order. Before Machine::Run.
  absl::StatusOr<std::vector<x86::MmioDeviceWindow>> AttachTo(Machine& machine);

  std::vector<Disk>& disks() { return disks_; }
  Disk* FindDisk(absl::string_view id);
  util::IOThread* FindIoThread(absl::string_view id);
  // "vda, sda" / "io0, io1": for error messages that list what exists.
  std::string DiskIds() const;
  std::string IoThreadIds() const;

  // The main loop and every IOThread's loop: where a disk may be served.
  std::vector<util::AioContext*> EventLoops() const;
  // The I/O engines the disks asked for (aio=), each once.
  std::vector<block::AioEngine> Engines() const;

  // Seccomp (vmm/sandbox/README.md, steps 2 and 3): starts every I/O engine
  // a disk may need in any event loop it may move to (the main thread could
  // not once filtered), then installs the IOThread filter on each IOThread.
  // Before the main thread's filter; does nothing when seccomp is off.
  absl::Status EnterSandbox();

 private:
  VirtioDisks() = default;
  absl::Status AddDisk(const hw::GuestMemory& memory, const DiskSpec& spec);

  // Declared first, destroyed last: the disks' queues may be on them.
  std::vector<std::unique_ptr<util::IOThread>> iothreads_;
  std::vector<Disk> disks_;
};

}  // namespace kvmini::vmm

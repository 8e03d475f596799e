#include "vmm/machine/virtio_disks.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "util/aio_wait.h"
#include "util/check.h"
#include "vmm/sandbox/block_engines.h"
#include "vmm/sandbox/seccomp.h"

namespace kvmini::vmm {
namespace {

absl::Status DiskError(const DiskSpec& spec, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat(DiskFlagName(spec.type), " id=", spec.id, " (", spec.path, "): ", what));
}

}  // namespace

DiskCounters VirtioDisks::Disk::counters() const {
  if (blk != nullptr) {
    hw::virtio::VirtioBlkStats stats = blk->stats();
    return {stats.completed, stats.in_flight, stats.bytes_read, stats.bytes_written, stats.errors};
  }
  hw::virtio::VirtioScsiStats stats = scsi->stats();
  return {stats.completed, stats.in_flight, stats.bytes_read, stats.bytes_written, stats.errors};
}

absl::StatusOr<std::unique_ptr<VirtioDisks>> VirtioDisks::Create(
    const hw::GuestMemory& memory, const std::vector<IoThreadSpec>& iothreads,
    const std::vector<DiskSpec>& specs) {
  util::AioContext* main = util::AioContext::Main();
  KVMINI_CHECK(main != nullptr && main->InHomeThread(),
               "VirtioDisks are created in the main loop thread");
  std::unique_ptr<VirtioDisks> disks(new VirtioDisks());
  for (const IoThreadSpec& iothread : iothreads) {
    absl::StatusOr<std::unique_ptr<util::IOThread>> thread = util::IOThread::Create(iothread.id);
    if (!thread.ok()) {
      return absl::Status(thread.status().code(), absl::StrCat("--iothread ", iothread.id, ": ",
                                                               thread.status().message()));
    }
    (*thread)->context().SetPollMaxNs(iothread.poll_max_ns);
    disks->iothreads_.push_back(std::move(*thread));
  }
  for (const DiskSpec& spec : specs) {
    if (absl::Status status = disks->AddDisk(memory, spec); !status.ok()) return status;
  }
  return disks;
}

absl::Status VirtioDisks::AddDisk(const hw::GuestMemory& memory, const DiskSpec& spec) {
  util::AioContext* iothread_context = nullptr;
  if (!spec.iothread.empty()) {
    util::IOThread* thread = FindIoThread(spec.iothread);
    if (thread == nullptr)
      return DiskError(spec, absl::StrCat("no iothread '", spec.iothread, "'"));
    iothread_context = &thread->context();
  }
  block::BlockOptions block_options;
  block_options.read_only = spec.read_only;
  block_options.direct = spec.direct;
  block_options.engine = spec.engine;
  absl::StatusOr<std::unique_ptr<block::BlockBackend>> backend =
      block::BlockBackend::Open(spec.path, block_options, *util::AioContext::Main());
  if (!backend.ok()) return DiskError(spec, backend.status().message());
  block::BlockBackend* backend_pointer = backend->get();

  Disk disk;
  disk.spec = spec;
  disk.iothread = spec.iothread;
  disk.backend = backend_pointer;
  std::unique_ptr<hw::virtio::VirtioDevice> device;
  if (spec.type == DiskType::kBlk) {
    absl::StatusOr<std::unique_ptr<hw::virtio::VirtioBlk>> blk = hw::virtio::VirtioBlk::Create(
        std::move(*backend), {.id = spec.id, .serial = spec.serial, .num_queues = spec.queues});
    if (!blk.ok()) return DiskError(spec, blk.status().message());
    disk.blk = blk->get();
    device = std::move(*blk);
  } else {
    hw::virtio::VirtioScsiOptions options;
    options.id = spec.id;
    options.num_request_queues = spec.queues;
    options.disk.serial = spec.serial;
    options.disk.device_name = spec.id;
    absl::StatusOr<std::unique_ptr<hw::virtio::VirtioScsi>> scsi =
        hw::virtio::VirtioScsi::Create(std::move(*backend), std::move(options));
    if (!scsi.ok()) return DiskError(spec, scsi.status().message());
    disk.scsi = scsi->get();
    device = std::move(*scsi);
  }
  absl::StatusOr<std::unique_ptr<hw::virtio::MmioTransport>> transport =
      hw::virtio::MmioTransport::Create(memory, std::move(device), {.iothread = iothread_context});
  if (!transport.ok()) return DiskError(spec, transport.status().message());
  disk.transport = std::move(*transport);
  disks_.push_back(std::move(disk));
  return absl::OkStatus();
}

VirtioDisks::~VirtioDisks() {
  // Each transport stops its queues with the IOThreads still running; only
  // then may the IOThreads go.
  disks_.clear();
  for (auto& thread : iothreads_) thread->Stop();
  iothreads_.clear();
}

absl::StatusOr<std::vector<x86::MmioDeviceWindow>> VirtioDisks::AttachTo(Machine& machine) {
  std::vector<x86::MmioDeviceWindow> windows;
  for (uint32_t index = 0; index < disks_.size(); ++index) {
    Disk& disk = disks_[index];
    absl::StatusOr<x86::MmioDeviceWindow> slot = x86::VirtioMmioSlot(index);
    if (!slot.ok()) return slot.status();
    std::string name = absl::StrCat(DiskTypeName(disk.spec.type), " ", disk.spec.id);
    // The whole slot: registers past the device's config space read as 0.
    if (absl::Status status =
            machine.AddMmioDevice(slot->base, slot->size, disk.transport.get(), name);
        !status.ok()) {
      return status;
    }
    for (const hw::virtio::MmioTransport::QueueNotifier& notifier :
         disk.transport->queue_notifiers()) {
      if (absl::Status status = machine.RegisterIoEventFd(slot->base + notifier.offset, 4,
                                                          notifier.datamatch, notifier.fd);
          !status.ok()) {
        return absl::Status(status.code(), absl::StrCat(name, ": queue ", notifier.datamatch,
                                                        " notify: ", status.message()));
      }
    }
    if (absl::Status status = machine.RegisterIrqFd(slot->gsi, disk.transport->interrupt_fd());
        !status.ok()) {
      return absl::Status(
          status.code(), absl::StrCat(name, ": interrupt GSI ", slot->gsi, ": ", status.message()));
    }
    windows.push_back(*slot);
  }
  return windows;
}

VirtioDisks::Disk* VirtioDisks::FindDisk(absl::string_view id) {
  for (Disk& disk : disks_) {
    if (disk.spec.id == id) return &disk;
  }
  return nullptr;
}

util::IOThread* VirtioDisks::FindIoThread(absl::string_view id) {
  for (auto& thread : iothreads_) {
    if (thread->id() == id) return thread.get();
  }
  return nullptr;
}

std::string VirtioDisks::DiskIds() const {
  if (disks_.empty()) return "none";
  return absl::StrJoin(disks_, ", ",
                       [](std::string* out, const Disk& disk) { out->append(disk.spec.id); });
}

std::string VirtioDisks::IoThreadIds() const {
  if (iothreads_.empty()) return "none";
  return absl::StrJoin(iothreads_, ", ",
                       [](std::string* out, const auto& thread) { out->append(thread->id()); });
}

std::vector<util::AioContext*> VirtioDisks::EventLoops() const {
  std::vector<util::AioContext*> loops = {util::AioContext::Main()};
  for (const auto& thread : iothreads_) loops.push_back(&thread->context());
  return loops;
}

std::vector<block::AioEngine> VirtioDisks::Engines() const {
  std::vector<block::AioEngine> engines;
  for (const Disk& disk : disks_) {
    if (std::find(engines.begin(), engines.end(), disk.spec.engine) == engines.end()) {
      engines.push_back(disk.spec.engine);
    }
  }
  return engines;
}

}  // namespace kvmini::vmm

namespace kvmini::vmm {

absl::Status VirtioDisks::EnterSandbox() {
  if (!sandbox::SeccompEnabled()) return absl::OkStatus();
  std::vector<util::AioContext*> loops = EventLoops();
  std::vector<block::AioEngine> engines = Engines();
  if (absl::Status status = sandbox::StartBlockEngines(loops, engines); !status.ok()) {
    return status;
  }
  for (auto& thread : iothreads_) {
    absl::Status status;
    util::AioWaitBhOneshot(thread->context(), [&status] {
      status = sandbox::InstallSeccompFilter(sandbox::ThreadKind::kIoThread);
    });
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("iothread ", thread->id(), ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvmini::vmm

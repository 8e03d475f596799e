#include "vmm/control/vm_commands.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "util/aio_context.h"
#include "util/log.h"

namespace kvmini::vmm {
namespace {

using nlohmann::json;

// While a paused machine's disks drain, how often to look again.
constexpr absl::Duration kIdleCheckInterval = absl::Microseconds(200);

int64_t Microseconds(absl::Duration duration) { return absl::ToInt64Microseconds(duration); }

// Joins asynchronous steps: `then` runs once every Part() has been called
// and Seal() too (so parts that finish at once cannot run it early).
class Join {
 public:
  explicit Join(absl::AnyInvocable<void() &&> then)
      : state_(std::make_shared<State>(std::move(then))) {}
  absl::AnyInvocable<void() &&> Part() {
    ++state_->pending;
    return [state = state_]() mutable { state->Arrive(); };
  }
  void Seal() { state_->Arrive(); }

 private:
  struct State {
    explicit State(absl::AnyInvocable<void() &&> then) : then(std::move(then)) {}
    void Arrive() {
      if (--pending == 0) std::move(then)();
    }
    size_t pending = 1;
    absl::AnyInvocable<void() &&> then;
  };
  std::shared_ptr<State> state_;
};

}  // namespace

void MachineRunControl::PowerOff(std::string reason) {
  machine_.RequestStop({MachineExit::Cause::kPowerOff, 0, std::move(reason)});
}

template <typename Function>
auto VmCommands::IfAlive(Function function) {
  return [alive = std::weak_ptr<bool>(alive_),
          function = std::move(function)](auto&&... arguments) mutable {
    if (!alive.expired()) std::move(function)(std::forward<decltype(arguments)>(arguments)...);
  };
}

void VmCommands::RegisterWith(ControlServer& server) {
  server.AddCommand("query-status",
                    [this](const json&) -> absl::StatusOr<json> { return QueryStatus(); });
  server.AddCommand("query-devices",
                    [this](const json&) -> absl::StatusOr<json> { return QueryDevices(); });
  server.AddAsyncCommand("stop", [this](const json&, Reply reply) { Stop(std::move(reply)); });
  server.AddAsyncCommand("cont", [this](const json&, Reply reply) { Cont(std::move(reply)); });
  server.AddAsyncCommand("quit", [this](const json&, Reply reply) { Quit(std::move(reply)); });
  server.AddAsyncCommand("dataplane-stop", [this](const json& arguments, Reply reply) {
    DataplaneStop(arguments, std::move(reply));
  });
  server.AddAsyncCommand("dataplane-start", [this](const json& arguments, Reply reply) {
    DataplaneStart(arguments, std::move(reply));
  });
  server.AddAsyncCommand("device-set-iothread", [this](const json& arguments, Reply reply) {
    SetIoThread(arguments, std::move(reply));
  });
}

json VmCommands::QueryStatus() const {
  return {{"status", paused_ ? "paused" : "running"},
          {"running", !paused_},
          {"vcpus", run_.vcpu_count()},
          {"uptime_s", absl::ToDoubleSeconds(run_.uptime())}};
}

json VmCommands::QueryDevices() const {
  json devices = json::array();
  for (const VirtioDisks::Disk& disk : disks_.disks()) {
    hw::virtio::MmioTransport::DataplaneStatus dataplane = disk.transport->dataplane_status();
    DiskCounters counters = disk.counters();
    devices.push_back({
        {"id", disk.spec.id},
        {"type", DiskTypeName(disk.spec.type)},
        {"path", disk.spec.path},
        {"read_only", disk.spec.read_only},
        {"iothread", disk.iothread.empty() ? json(nullptr) : json(disk.iothread)},
        {"dataplane_running", dataplane.running},
        {"dataplane_wanted", disk.dataplane_wanted},
        {"requests_completed", counters.completed},
        {"requests_in_flight", counters.in_flight},
        {"bytes_read", counters.bytes_read},
        {"bytes_written", counters.bytes_written},
        {"errors", counters.errors},
        {"last_stop_us", Microseconds(dataplane.last_stop)},
        {"last_start_us", Microseconds(dataplane.last_start)},
    });
  }
  return {{"devices", std::move(devices)}};
}

void VmCommands::Enqueue(Operation operation) {
  operations_.push_back(std::move(operation));
  if (!operation_running_) RunNext();
}

void VmCommands::RunNext() {
  if (operations_.empty()) return;
  operation_running_ = true;
  Operation next = std::move(operations_.front());
  operations_.pop_front();
  std::move(next)(IfAlive([this] {
    operation_running_ = false;
    RunNext();
  }));
}

void VmCommands::Stop(Reply reply) {
  Enqueue([this, reply = std::move(reply)](Done done) mutable {
    if (paused_) {
      std::move(reply)(json{{"status", "paused"}});
      std::move(done)();
      return;
    }
    const absl::Time start = absl::Now();
    Pause(IfAlive([start, reply = std::move(reply),
                   done = std::move(done)](absl::Status status) mutable {
      if (status.ok()) {
        std::move(reply)(
            json{{"status", "paused"}, {"quiesce_us", Microseconds(absl::Now() - start)}});
      } else {
        // Paused all the same: the vCPUs are parked and nothing is in flight.
        std::move(reply)(status);
      }
      std::move(done)();
    }));
  });
}

void VmCommands::Cont(Reply reply) {
  Enqueue([this, reply = std::move(reply)](Done done) mutable {
    if (!paused_) {
      std::move(reply)(json{{"status", "running"}});
      std::move(done)();
      return;
    }
    // From here on, dataplane-start goes straight to the device again.
    paused_ = false;
    const absl::Time start = absl::Now();
    Join restarted(
        IfAlive([this, start, reply = std::move(reply), done = std::move(done)]() mutable {
          run_.ResumeVcpus();
          std::move(reply)(
              json{{"status", "running"}, {"resume_us", Microseconds(absl::Now() - start)}});
          std::move(done)();
        }));
    for (VirtioDisks::Disk& disk : disks_.disks()) {
      if (disk.dataplane_wanted) disk.transport->StartDataplane(restarted.Part());
    }
    restarted.Seal();
  });
}

void VmCommands::Quit(Reply reply) {
  Enqueue([this, reply = std::move(reply)](Done done) mutable {
    auto finish = IfAlive(
        [this, reply = std::move(reply), done = std::move(done)](absl::Status status) mutable {
          if (status.ok()) {
            std::move(reply)(json{{"status", "powering off"}});
          } else {
            KVMINI_LOG(Error) << "quit: " << status.message();
            std::move(reply)(status);
          }
          run_.PowerOff("quit on the control socket: disks quiesced, powering off");
          std::move(done)();
        });
    if (paused_) {
      std::move(finish)(absl::OkStatus());  // stop has quiesced everything already
      return;
    }
    Pause(std::move(finish));
  });
}

void VmCommands::Pause(StatusDone done) {
  // Set first: a dataplane-start arriving from now on is only recorded.
  paused_ = true;
  run_.PauseVcpus(
      IfAlive([this, done = std::move(done)]() mutable { QuiesceDisks(std::move(done)); }));
}

void VmCommands::QuiesceDisks(StatusDone done) {
  // The vCPUs are parked, so no request can be added: each disk's stop
  // processes what is in its rings and drains it; requests the main loop
  // picks up afterwards are waited for; then the images are flushed.
  Join stopped(IfAlive([this, done = std::move(done)]() mutable {
    WhenDisksIdle(
        IfAlive([this, done = std::move(done)]() mutable { FlushDisks(std::move(done)); }));
  }));
  for (VirtioDisks::Disk& disk : disks_.disks()) disk.transport->StopDataplane(stopped.Part());
  stopped.Seal();
}

void VmCommands::WhenDisksIdle(Done then) {
  bool idle = true;
  for (const VirtioDisks::Disk& disk : disks_.disks()) {
    if (disk.transport->dataplane_status().in_flight != 0 || disk.backend->in_flight() != 0) {
      idle = false;
    }
  }
  if (idle) {
    std::move(then)();
    return;
  }
  util::AioContext::Main()->AddTimer(
      absl::Now() + kIdleCheckInterval,
      IfAlive([this, then = std::move(then)]() mutable { WhenDisksIdle(std::move(then)); }));
}

void VmCommands::FlushDisks(StatusDone done) {
  auto first_error = std::make_shared<absl::Status>();
  Join flushed([first_error, done = std::move(done)]() mutable { std::move(done)(*first_error); });
  for (VirtioDisks::Disk& disk : disks_.disks()) {
    if (disk.spec.read_only) continue;
    if (!disk.backend->context().InHomeThread()) {
      // Cannot happen while paused (every dataplane is stopped); say so if it does.
      first_error->Update(absl::InternalError(
          absl::StrCat("disk ", disk.spec.id, ": not flushed, its image is not on the main loop")));
      continue;
    }
    disk.backend->Flush([first_error, id = disk.spec.id, path = disk.spec.path,
                         part = flushed.Part()](int status) mutable {
      if (status < 0) {
        first_error->Update(absl::InternalError(
            absl::StrCat("disk ", id, ": flushing ", path, " failed: ", std::strerror(-status))));
      }
      std::move(part)();
    });
  }
  flushed.Seal();
}

absl::StatusOr<VirtioDisks::Disk*> VmCommands::DiskArgument(const json& arguments) {
  auto device = arguments.find("device");
  if (device == arguments.end() || !device->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "argument 'device' (a disk id: ", disks_.DiskIds(), ") is missing or not a string"));
  }
  VirtioDisks::Disk* disk = disks_.FindDisk(device->get<std::string>());
  if (disk == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("no disk '", device->get<std::string>(), "' (disks: ", disks_.DiskIds(), ")"));
  }
  return disk;
}

json VmCommands::DataplaneAnswer(const VirtioDisks::Disk& disk) const {
  hw::virtio::MmioTransport::DataplaneStatus status = disk.transport->dataplane_status();
  return {{"device", disk.spec.id},
          {"iothread", disk.iothread.empty() ? json(nullptr) : json(disk.iothread)},
          {"dataplane_running", status.running},
          {"dataplane_wanted", disk.dataplane_wanted},
          {"last_stop_us", Microseconds(status.last_stop)},
          {"last_start_us", Microseconds(status.last_start)}};
}

void VmCommands::DataplaneStop(const json& arguments, Reply reply) {
  absl::StatusOr<VirtioDisks::Disk*> disk = DiskArgument(arguments);
  if (!disk.ok()) return std::move(reply)(disk.status());
  (*disk)->dataplane_wanted = false;
  (*disk)->transport->StopDataplane(
      IfAlive([this, disk = *disk, reply = std::move(reply)]() mutable {
        std::move(reply)(DataplaneAnswer(*disk));
      }));
}

void VmCommands::DataplaneStart(const json& arguments, Reply reply) {
  absl::StatusOr<VirtioDisks::Disk*> disk = DiskArgument(arguments);
  if (!disk.ok()) return std::move(reply)(disk.status());
  if ((*disk)->iothread.empty()) {
    return std::move(reply)(absl::FailedPreconditionError(
        absl::StrCat("disk '", (*disk)->spec.id,
                     "' has no iothread to run a dataplane on; give it one with "
                     "device-set-iothread")));
  }
  (*disk)->dataplane_wanted = true;
  if (paused_) {
    // cont starts it, with the others.
    json answer = DataplaneAnswer(**disk);
    answer["deferred_until_cont"] = true;
    return std::move(reply)(answer);
  }
  (*disk)->transport->StartDataplane(
      IfAlive([this, disk = *disk, reply = std::move(reply)]() mutable {
        std::move(reply)(DataplaneAnswer(*disk));
      }));
}

void VmCommands::SetIoThread(const json& arguments, Reply reply) {
  absl::StatusOr<VirtioDisks::Disk*> disk = DiskArgument(arguments);
  if (!disk.ok()) return std::move(reply)(disk.status());
  auto iothread = arguments.find("iothread");
  if (iothread == arguments.end() || !(iothread->is_string() || iothread->is_null())) {
    return std::move(reply)(absl::InvalidArgumentError(
        absl::StrCat("argument 'iothread' (an iothread id: ", disks_.IoThreadIds(),
                     "; or null for none) is missing or not a string")));
  }
  std::string id = iothread->is_null() ? "" : iothread->get<std::string>();
  util::AioContext* context = nullptr;
  if (!id.empty()) {
    util::IOThread* thread = disks_.FindIoThread(id);
    if (thread == nullptr) {
      return std::move(reply)(absl::InvalidArgumentError(
          absl::StrCat("no iothread '", id, "' (iothreads: ", disks_.IoThreadIds(), ")")));
    }
    context = &thread->context();
  }
  (*disk)->iothread = id;
  // While paused the device's dataplane is stopped: this only records the
  // IOThread, and cont starts the disk there.
  (*disk)->transport->MoveDataplane(
      context, IfAlive([this, disk = *disk, reply = std::move(reply)]() mutable {
        std::move(reply)(DataplaneAnswer(*disk));
      }));
}

}  // namespace kvmini::vmm

// VmCommands: the control socket's commands for a running machine and its
// disks (issue 8):
//   query-status                     running or paused, vCPUs, uptime
//   stop / cont                      pause: vCPUs parked outside KVM_RUN, then
//                                    every disk quiesced (drained, flushed);
//                                    resume vCPUs and dataplanes as they were
//   quit                             stop, then power off (kvmini exits 0)
//   query-devices                    per disk: id, type, IOThread, dataplane,
//                                    request and byte counters, stop/start times
//   dataplane-stop {device}          the disk's queues go to the main loop
//   dataplane-start {device}         and back to its IOThread
//   device-set-iothread {device, iothread}   moves the disk (null: none)
//
// Every command that changes something is asynchronous (see
// ControlServer::AddAsyncCommand): nothing here waits, because a command
// can run nested inside a device operation's wait, and waiting there for
// the vCPUs or for that device's next operation would never end. stop,
// cont and quit run one after another (a FIFO); the dataplane commands go
// through each device's own FIFO (MmioTransport).
//
// Threads: main loop thread only. Destroy it before the disks and the
// machine; continuations still pending then are dropped.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "vmm/control/control_server.h"
#include "vmm/machine/machine.h"
#include "vmm/machine/virtio_disks.h"

namespace kvmini::vmm {

// What the commands need from the machine, so they can be tested without one.
class RunControl {
 public:
  virtual ~RunControl() = default;
  virtual uint32_t vcpu_count() const = 0;
  virtual absl::Duration uptime() const = 0;
  // Parks every vCPU outside KVM_RUN; `parked` runs in the main loop after.
  virtual void PauseVcpus(absl::AnyInvocable<void() &&> parked) = 0;
  virtual void ResumeVcpus() = 0;
  // Ends the run as a guest power-off would (exit status 0).
  virtual void PowerOff(std::string reason) = 0;
};

class MachineRunControl final : public RunControl {
 public:
  explicit MachineRunControl(Machine& machine) : machine_(machine) {}
  uint32_t vcpu_count() const override { return machine_.vcpu_count(); }
  absl::Duration uptime() const override { return machine_.uptime(); }
  void PauseVcpus(absl::AnyInvocable<void() &&> parked) override {
    machine_.PauseVcpus(std::move(parked));
  }
  void ResumeVcpus() override { machine_.ResumeVcpus(); }
  void PowerOff(std::string reason) override;

 private:
  Machine& machine_;
};

class VmCommands {
 public:
  VmCommands(RunControl& run, VirtioDisks& disks) : run_(run), disks_(disks) {}
  VmCommands(const VmCommands&) = delete;
  VmCommands& operator=(const VmCommands&) = delete;

  void RegisterWith(ControlServer& server);
  bool paused() const { return paused_; }

 private:
  using Done = absl::AnyInvocable<void() &&>;
  using StatusDone = absl::AnyInvocable<void(absl::Status) &&>;
  using Reply = ControlServer::Reply;
  using Operation = absl::AnyInvocable<void(Done) &&>;

  nlohmann::json QueryStatus() const;
  nlohmann::json QueryDevices() const;
  void Stop(Reply reply);
  void Cont(Reply reply);
  void Quit(Reply reply);
  void DataplaneStop(const nlohmann::json& arguments, Reply reply);
  void DataplaneStart(const nlohmann::json& arguments, Reply reply);
  void SetIoThread(const nlohmann::json& arguments, Reply reply);

  // stop, cont and quit, one at a time.
  void Enqueue(Operation operation);
  void RunNext();
  // Pauses the vCPUs and quiesces the disks; `done` gets the first error.
  void Pause(StatusDone done);
  // Every disk's queues to the main loop, nothing in flight, images flushed.
  void QuiesceDisks(StatusDone done);
  void WhenDisksIdle(Done then);
  void FlushDisks(StatusDone done);

  absl::StatusOr<VirtioDisks::Disk*> DiskArgument(const nlohmann::json& arguments);
  nlohmann::json DataplaneAnswer(const VirtioDisks::Disk& disk) const;
  // Wraps a continuation so it does nothing once this object is gone.
  template <typename Function>
  auto IfAlive(Function function);

  RunControl& run_;
  VirtioDisks& disks_;
  bool paused_ = false;
  std::deque<Operation> operations_;
  bool operation_running_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace kvmini::vmm

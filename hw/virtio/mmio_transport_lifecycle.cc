// MmioTransport's life cycle: activation on DRIVER_OK, device reset and the
// dataplane operations, all in the main loop, one at a time per device.
//
// Why a queue of operations rather than a lock: an operation waits (for the
// IOThread, for requests to drain) by polling the main loop, and that poll
// may run another operation for the same device (a vCPU's reset posted as
// a bottom half, a control command). Running it then, in the middle of the
// first, would interleave two moves of the same queues; waiting for the
// first from inside the poll would deadlock. So it is queued and runs when
// the current one returns.
#include <future>
#include <memory>

#include "hw/virtio/mmio_transport.h"
#include "util/aio_wait.h"
#include "util/check.h"

namespace kvmini::hw::virtio {

MmioTransport::~MmioTransport() {
  KVMINI_CHECK(!operation_running_, "virtio transport destroyed inside one of its operations");
  dataplane_.SwitchTo(nullptr, /*process_leftovers=*/false);
}

void MmioTransport::Submit(Operation operation) {
  util::AioContext* main = util::AioContext::Main();
  KVMINI_CHECK(main != nullptr && main->InHomeThread(),
               "virtio life-cycle operations run in the main loop thread");
  pending_operations_.push_back(std::move(operation));
  if (operation_running_) return;  // the running loop below picks it up
  operation_running_ = true;
  while (!pending_operations_.empty()) {
    Operation next = std::move(pending_operations_.front());
    pending_operations_.pop_front();
    std::move(next)();
  }
  operation_running_ = false;
}

void MmioTransport::SubmitAndWait(Operation operation) {
  WaitFor([this, &operation](Done done) {
    Submit([operation = std::move(operation), done = std::move(done)]() mutable {
      std::move(operation)();
      std::move(done)();
    });
  });
}

void MmioTransport::RunFromVcpu(Operation operation) {
  util::AioContext* main = util::AioContext::Main();
  KVMINI_CHECK(main != nullptr, "virtio device used without a main loop");
  if (main->InHomeThread()) {
    // The device test harness drives registers from the main loop thread.
    SubmitAndWait(std::move(operation));
    return;
  }
  KVMINI_CHECK(util::LocksHeldByThisThread() == 0,
               "a vCPU waits for the main loop while holding a lock");
  // Shared: the promise must outlive set_value() even if this thread
  // wakes and returns while the main loop is still inside it.
  auto finished = std::make_shared<std::promise<void>>();
  std::future<void> wait = finished->get_future();
  main->ScheduleOneshot([this, finished, operation = std::move(operation)]() mutable {
    Submit([finished, operation = std::move(operation)]() mutable {
      std::move(operation)();
      finished->set_value();
    });
  });
  wait.wait();
}

util::AioContext* MmioTransport::DataplaneTarget() const {
  if (!active_) return nullptr;
  if (dataplane_wanted_ && iothread_ != nullptr) return iothread_;
  return util::AioContext::Main();
}

void MmioTransport::MoveQueues(bool process_leftovers) {
  util::AioContext* from = dataplane_.attached_context();
  util::AioContext* to = DataplaneTarget();
  if (from == to) return;
  dataplane_.SwitchTo(to, process_leftovers);
  util::AioContext* main = util::AioContext::Main();
  bool leaves_iothread = from != nullptr && from != main;
  bool reaches_iothread = to != nullptr && to != main;
  if (leaves_iothread) last_stop_ = dataplane_.last_switch_duration();
  if (reaches_iothread) last_start_ = dataplane_.last_switch_duration();
}

void MmioTransport::Activate(Activation activation) {
  if (active_) return;
  const bool event_idx = activation.features & feature::kRingEventIdx;
  const bool indirect = activation.features & feature::kRingIndirectDesc;
  std::vector<Virtqueue*> queues;
  for (size_t i = 0; i < queues_.size(); ++i) {
    Virtqueue& queue = *queues_[i];
    const QueueRegisters& registers = activation.queues[i];
    queues.push_back(&queue);
    if (!registers.ready) continue;
    if (registers.size > device_->queue_max_size()) {
      queue.Break(absl::StrCat("queue size ", registers.size, " is above QueueNumMax ",
                               device_->queue_max_size()));
      continue;
    }
    // A bad ring breaks the queue (logged, DEVICE_NEEDS_RESET); the
    // device's other queues still work.
    queue
        .Configure({registers.size, registers.descriptor_table, registers.avail_ring,
                    registers.used_ring},
                   event_idx, indirect)
        .IgnoreError();
  }
  device_->Activate(activation.features, queues);
  active_ = true;
  MoveQueues(/*process_leftovers=*/true);
}

void MmioTransport::Reset() {
  active_ = false;
  // Stops processing and drains: every request in flight completes (and
  // may still write guest memory) before this returns; none starts after.
  MoveQueues(/*process_leftovers=*/false);
  device_->Reset();
  for (auto& queue : queues_) queue->Disable();
  for (const util::EventNotifier& notifier : notifiers_) notifier.TestAndClear();
  {
    util::MutexLock lock(&mutex_);
    device_features_select_ = 0;
    driver_features_select_ = 0;
    driver_features_ = 0;
    queue_select_ = 0;
    for (QueueRegisters& registers : queue_registers_) registers = QueueRegisters{};
    status_ = 0;
  }
  interrupt_status_.store(0, std::memory_order_seq_cst);
  needs_reset_.store(false, std::memory_order_seq_cst);
}

void MmioTransport::ChangeDataplane(absl::AnyInvocable<void()> change, Done done) {
  Submit([this, change = std::move(change), done = std::move(done)]() mutable {
    change();
    MoveQueues(/*process_leftovers=*/true);
    if (done) std::move(done)();
  });
}

void MmioTransport::StopDataplane(Done done) {
  ChangeDataplane([this] { dataplane_wanted_ = false; }, std::move(done));
}

void MmioTransport::StartDataplane(Done done) {
  ChangeDataplane([this] { dataplane_wanted_ = true; }, std::move(done));
}

void MmioTransport::MoveDataplane(util::AioContext* iothread, Done done) {
  ChangeDataplane([this, iothread] { iothread_ = iothread; }, std::move(done));
}

void MmioTransport::WaitFor(absl::FunctionRef<void(Done)> start) {
  KVMINI_CHECK(!operation_running_,
               "waiting for a virtio operation from inside another operation of the same device "
               "would deadlock");
  bool done = false;
  start([&done] { done = true; });
  util::AioWaitWhileUnlocked([&done] { return !done; });
}

void MmioTransport::StopDataplaneAndWait() {
  WaitFor([this](Done done) { StopDataplane(std::move(done)); });
}

void MmioTransport::StartDataplaneAndWait() {
  WaitFor([this](Done done) { StartDataplane(std::move(done)); });
}

void MmioTransport::MoveDataplaneAndWait(util::AioContext* iothread) {
  WaitFor([this, iothread](Done done) { MoveDataplane(iothread, std::move(done)); });
}

MmioTransport::DataplaneStatus MmioTransport::dataplane_status() const {
  util::AioContext* attached = dataplane_.attached_context();
  return {iothread_ != nullptr,
          attached != nullptr && attached != util::AioContext::Main(),
          dataplane_.in_flight(),
          last_stop_,
          last_start_};
}

}  // namespace kvmini::hw::virtio

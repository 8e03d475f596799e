// Dataplane: moves a virtio device's queue processing between event loops
// (the main loop, an IOThread, or nowhere while the device is reset). One
// implementation for virtio-blk and virtio-scsi.
//
// Each queue has a notify eventfd (registered with KVM as an ioeventfd by
// the machine, signalled directly by the MMIO path and by tests); the
// dataplane installs a handler for it in the context the queues belong to.
// Every move follows ARCHITECTURE.md:
//   1. AioWaitBhOneshot(old context): remove the handlers there (from the
//      home thread, so none is still running) and, unless the device is
//      being reset, process what is already in the rings;
//   2. drain: wait, polling the main loop, until every request in flight has
//      completed and been published to the used rings (the client's block
//      backends drained too);
//   3. move the client's block backends to the new context (main when the
//      queues go nowhere);
//   4. AioWaitBhOneshot(new context): install the handlers and process the
//      rings once, so a kick that raced with the move is never lost (the
//      eventfds stay set while no handler watches them).
//
// Threading: SwitchTo() from the main loop thread only, with no lock held
// (it waits). Calls must not overlap; MmioTransport serialises them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "hw/virtio/virtqueue.h"
#include "util/aio_context.h"
#include "util/event_notifier.h"

namespace kvmini::hw::virtio {

class Dataplane {
 public:
  // What the device does for the dataplane, from the main loop thread.
  class Client {
   public:
    virtual ~Client() = default;
    // Waits (AioWaitWhileUnlocked) until its backends have nothing in flight.
    virtual void DrainBackends() = 0;
    // Attaches its (drained) backends to `context`.
    virtual void MoveBackends(util::AioContext& context) = 0;
  };

  struct QueueBinding {
    const util::EventNotifier* notifier;
    Virtqueue* queue;
    // Processes the queue; runs in the context the queues are attached to.
    absl::AnyInvocable<void()> process;
    // The dataplane's own: the available index when `process` last ran,
    // what the loop's poll check compares with. Not "what was popped": a
    // queue whose buffers stay in the ring (virtio-scsi's event queue)
    // would otherwise look busy for ever and keep the loop spinning.
    uint16_t processed_avail_index = 0;
  };

  Dataplane(std::string name, Client& client) : name_(std::move(name)), client_(client) {}
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Main loop, while attached nowhere.
  void SetQueues(std::vector<QueueBinding> queues);

  // Moves queue processing to `target` (null: nowhere, backends on the main
  // loop). `process_leftovers`: step 1 above; false when resetting, so no
  // new request starts. Idempotent: moving to where it is does nothing.
  void SwitchTo(util::AioContext* target, bool process_leftovers);

  // Main loop thread: where the queues are processed now, or null.
  util::AioContext* attached_context() const { return attached_; }
  // Requests popped from the queues and not yet published. Any thread.
  uint64_t in_flight() const;
  // Duration of the last SwitchTo that moved something.
  absl::Duration last_switch_duration() const { return last_switch_duration_; }

 private:
  void Attach(util::AioContext& context);
  // Notes the available index, then processes the queue.
  static void Serve(QueueBinding& binding);
  void Detach(util::AioContext& context, bool process_leftovers);
  void Drain();

  const std::string name_;
  Client& client_;
  // Bindings live on the heap so the handlers' captures stay valid.
  std::vector<std::unique_ptr<QueueBinding>> queues_;
  util::AioContext* attached_ = nullptr;
  absl::Duration last_switch_duration_ = absl::ZeroDuration();
};

}  // namespace kvmini::hw::virtio

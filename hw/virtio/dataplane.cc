#include "hw/virtio/dataplane.h"

#include "util/aio_wait.h"
#include "util/check.h"
#include "util/log.h"

namespace kvmini::hw::virtio {

Dataplane::~Dataplane() {
  KVMINI_CHECK(attached_ == nullptr, "dataplane destroyed while its queues are attached");
}

void Dataplane::SetQueues(std::vector<QueueBinding> queues) {
  KVMINI_CHECK(attached_ == nullptr, "dataplane queues replaced while attached");
  queues_.clear();
  for (QueueBinding& binding : queues) {
    queues_.push_back(std::make_unique<QueueBinding>(std::move(binding)));
  }
}

uint64_t Dataplane::in_flight() const {
  uint64_t total = 0;
  for (const auto& binding : queues_) total += binding->queue->in_flight();
  return total;
}

void Dataplane::SwitchTo(util::AioContext* target, bool process_leftovers) {
  util::AioContext* main = util::AioContext::Main();
  KVMINI_CHECK(main != nullptr && main->InHomeThread(),
               "Dataplane::SwitchTo must run in the main loop thread");
  if (target == attached_) return;
  absl::Time start = absl::Now();
  if (attached_ != nullptr) Detach(*attached_, process_leftovers);
  attached_ = nullptr;
  Drain();
  client_.MoveBackends(target != nullptr ? *target : *main);
  if (target != nullptr) Attach(*target);
  attached_ = target;
  last_switch_duration_ = absl::Now() - start;
}

void Dataplane::Detach(util::AioContext& context, bool process_leftovers) {
  util::AioWaitBhOneshot(context, [this, &context, process_leftovers] {
    // In the home thread: once removed here, no handler can still be running.
    for (const auto& binding : queues_) context.RemoveFdHandler(binding->notifier->fd());
    if (!process_leftovers) return;
    // A kick that arrived after the last handler run: serve it here, the
    // requests then drain like any other.
    for (const auto& binding : queues_) {
      binding->notifier->TestAndClear();
      binding->process();
    }
  });
}

void Dataplane::Attach(util::AioContext& context) {
  util::AioWaitBhOneshot(context, [this, &context] {
    for (const auto& binding : queues_) {
      QueueBinding* raw = binding.get();
      // The poll check lets a busy driver's requests be seen before its kick
      // wakes the loop. The kick's eventfd then stays set and its handler
      // later finds the ring served: harmless. Kick suppression is not
      // touched (processing re-arms avail_event as always), so a driver
      // never waits on a kick we would not hear.
      absl::Status status = context.SetFdHandler(
          raw->notifier->fd(),
          [raw] {
            raw->notifier->TestAndClear();
            Serve(*raw);
          },
          nullptr,
          {.has_work =
               [raw] {
                 std::optional<uint16_t> index = raw->queue->DriverAvailableIndex();
                 return index.has_value() && *index != raw->processed_avail_index;
               },
           .on_work = [raw] { Serve(*raw); }});
      if (!status.ok()) {
        KVMINI_LOG(Error) << name_ << ": cannot watch the notify eventfd of queue "
                          << raw->queue->index() << ": " << status
                          << "; that queue is served again only after the next dataplane move";
      }
    }
    // Kicks raised while no handler watched the eventfds are still pending
    // on them; requests made available without a kick (the driver relied on
    // an earlier one) are found by looking at the rings once.
    for (const auto& binding : queues_) Serve(*binding);
  });
}

void Dataplane::Serve(QueueBinding& binding) {
  std::optional<uint16_t> index = binding.queue->DriverAvailableIndex();
  if (index.has_value()) binding.processed_avail_index = *index;
  binding.process();
}

void Dataplane::Drain() {
  util::AioWaitWhileUnlocked([this] { return in_flight() > 0; });
  client_.DrainBackends();
}

}  // namespace kvmini::hw::virtio

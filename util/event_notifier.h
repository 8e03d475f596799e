// EventNotifier: an eventfd used to wake an event loop or to carry a
// virtqueue kick / interrupt between threads and KVM (ioeventfd, irqfd).
#pragma once

#include "absl/status/statusor.h"

namespace kvmini::util {

class EventNotifier {
 public:
  // Creates a non-blocking, close-on-exec eventfd.
  static absl::StatusOr<EventNotifier> Create();

  EventNotifier(EventNotifier&& other) noexcept;
  EventNotifier& operator=(EventNotifier&& other) noexcept;
  EventNotifier(const EventNotifier&) = delete;
  EventNotifier& operator=(const EventNotifier&) = delete;
  ~EventNotifier();

  int fd() const { return fd_; }
  // Makes the fd readable; safe from any thread.
  void Set() const;
  // Returns whether it was set, and clears it.
  bool TestAndClear() const;

 private:
  explicit EventNotifier(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace kvmini::util

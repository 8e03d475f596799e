#include "util/event_notifier.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace kvmini::util {

absl::StatusOr<EventNotifier> EventNotifier::Create() {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, "eventfd(EFD_NONBLOCK|EFD_CLOEXEC)");
  }
  return EventNotifier(fd);
}

EventNotifier::EventNotifier(EventNotifier&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

EventNotifier& EventNotifier::operator=(EventNotifier&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

EventNotifier::~EventNotifier() {
  if (fd_ >= 0) close(fd_);
}

void EventNotifier::Set() const {
  uint64_t one = 1;
  // EAGAIN only happens when the counter would overflow, which means it is
  // already set: nothing is lost.
  while (write(fd_, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

bool EventNotifier::TestAndClear() const {
  uint64_t value = 0;
  ssize_t n;
  do {
    n = read(fd_, &value, sizeof(value));
  } while (n < 0 && errno == EINTR);
  return n == sizeof(value) && value != 0;
}

}  // namespace kvmini::util

#include "util/event_notifier.h"

#include <poll.h>

#include "gtest/gtest.h"

namespace kvmini::util {
namespace {

bool Readable(int fd) {
  pollfd entry{fd, POLLIN, 0};
  return poll(&entry, 1, 0) == 1 && (entry.revents & POLLIN);
}

TEST(EventNotifierTest, SetMakesReadableAndTestAndClearResets) {
  absl::StatusOr<EventNotifier> notifier = EventNotifier::Create();
  ASSERT_TRUE(notifier.ok()) << notifier.status();
  EXPECT_FALSE(Readable(notifier->fd()));
  EXPECT_FALSE(notifier->TestAndClear());
  notifier->Set();
  notifier->Set();
  EXPECT_TRUE(Readable(notifier->fd()));
  EXPECT_TRUE(notifier->TestAndClear());
  EXPECT_FALSE(Readable(notifier->fd()));
  EXPECT_FALSE(notifier->TestAndClear());
}

TEST(EventNotifierTest, MoveTransfersTheFd) {
  absl::StatusOr<EventNotifier> first = EventNotifier::Create();
  ASSERT_TRUE(first.ok());
  int fd = first->fd();
  EventNotifier second = std::move(*first);
  EXPECT_EQ(second.fd(), fd);
  second.Set();
  EXPECT_TRUE(second.TestAndClear());
}

}  // namespace
}  // namespace kvmini::util

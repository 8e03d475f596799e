#include "tests/unit/vmm/sandbox/sandbox_test_support.h"

#include <pthread.h>

#include <thread>

#include "absl/strings/str_cat.h"
#include "util/aio_wait.h"

namespace kvmini::vmm::sandbox::testing {

absl::Status RunInFilteredThread(ThreadKind kind, const std::string& thread_name,
                                 absl::AnyInvocable<void() &&> body) {
  absl::Status status;
  std::thread thread([&] {
    pthread_setname_np(pthread_self(), thread_name.substr(0, 15).c_str());
    status = InstallSeccompFilter(kind);
    if (status.ok()) std::move(body)();
  });
  thread.join();
  return status;
}

absl::StatusOr<std::unique_ptr<util::IOThread>> StartFilteredIoThread(const std::string& name) {
  absl::StatusOr<std::unique_ptr<util::IOThread>> thread = util::IOThread::Create(name);
  if (!thread.ok()) return thread.status();
  absl::Status installed;
  util::AioWaitBhOneshot((*thread)->context(), [&installed] {
    installed = InstallSeccompFilter(ThreadKind::kIoThread);
  });
  if (!installed.ok()) return installed;
  return thread;
}

std::string ViolationPattern(absl::string_view thread_name, ThreadKind kind,
                             absl::string_view syscall_name) {
  return absl::StrCat("kvmini: seccomp: thread '", thread_name, "' \\(", ThreadKindName(kind),
                      "\\) made forbidden system call ", syscall_name, " \\([0-9]+\\)");
}

}  // namespace kvmini::vmm::sandbox::testing

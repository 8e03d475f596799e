// Compiled (not run) by util_lock_rule_compile_test. With HOLD_LOCK defined,
// a device stops its dataplane while holding the lock the IOThread's
// bottom half needs: the deadlock QEMU had. Clang must refuse to compile it.
#include "util/aio_wait.h"
#include "util/mutex.h"

namespace {

class Device {
 public:
  void StopDataplane(kvmini::util::AioContext& iothread_context) {
#ifdef HOLD_LOCK
    kvmini::util::MutexLock lock(&register_lock_);
#endif
    kvmini::util::AioWaitBhOneshot(
        iothread_context, [this] { DetachInIoThread(); }, register_lock_);
  }

 private:
  void DetachInIoThread() {
    kvmini::util::MutexLock lock(&register_lock_);
    attached_ = false;
  }

  kvmini::util::Mutex register_lock_;
  bool attached_ ABSL_GUARDED_BY(register_lock_) = true;
};

}  // namespace

void UseDevice(kvmini::util::AioContext& context) {
  Device device;
  device.StopDataplane(context);
}

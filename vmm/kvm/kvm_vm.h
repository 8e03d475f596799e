// KvmVm: one KVM virtual machine (the VM fd). Machine-wide set-up (TSS and
// identity-map pages, in-kernel irqchip and PIT), guest RAM slots, and the
// interrupt/notification plumbing devices use: KVM_IRQ_LINE, irqfds and
// ioeventfds. Every failure is a Status naming the ioctl and errno.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/kvm/scoped_fd.h"

namespace kvmini::vmm {

class KvmSystem;
class KvmVcpu;

class KvmVm {
 public:
  KvmVm(const KvmVm&) = delete;
  KvmVm& operator=(const KvmVm&) = delete;

  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return *system_; }

  // KVM_CHECK_EXTENSION on the VM fd (some answers are per VM).
  int CheckExtension(int capability) const;

  // Three pages below 4 GiB, clear of RAM and device windows.
  absl::Status SetTssAddress(uint64_t address);
  // One page; must happen before the first vCPU is created.
  absl::Status SetIdentityMapAddress(uint64_t address);
  // PIC pair, 24-pin IOAPIC, per-vCPU LAPICs. Before any vCPU.
  absl::Status CreateIrqchip();
  // PIT at 0x40-0x43 with the speaker port 0x61 answered inside KVM.
  absl::Status CreatePit2();

  absl::Status SetUserMemoryRegion(uint32_t slot, uint64_t guest_address, uint64_t size,
                                   void* host);
  // Registers each region of `memory` as slots 0, 1, ...
  absl::Status RegisterGuestMemory(const hw::GuestMemory& memory);

  // Drives a GSI from userspace (edge = high then low).
  absl::Status SetIrqLine(uint32_t gsi, bool high);

  // A write of `length` bytes to `address` (and, if set, only of value
  // `datamatch`) signals `fd` inside KVM instead of exiting to userspace.
  struct IoEventFd {
    uint64_t address = 0;
    uint32_t length = 0;  // 0 (any), 1, 2, 4 or 8
    std::optional<uint64_t> datamatch;
    bool port_io = false;
    int fd = -1;
  };
  absl::Status AssignIoEventFd(const IoEventFd& event);
  // Needs exactly the parameters it was assigned with.
  absl::Status DeassignIoEventFd(const IoEventFd& event);

  // Each write to `fd` raises `gsi` (edge). With `resample_fd`, the line is
  // held until the guest EOIs it, then `resample_fd` is signalled (level).
  absl::Status AssignIrqFd(uint32_t gsi, int fd, std::optional<int> resample_fd = std::nullopt);
  absl::Status DeassignIrqFd(uint32_t gsi, int fd);

  // Creates vCPU `id` (its APIC ID) and maps its kvm_run area.
  absl::StatusOr<std::unique_ptr<KvmVcpu>> CreateVcpu(uint32_t id);

 private:
  friend class KvmSystem;
  KvmVm(const KvmSystem* system, ScopedFd fd) : system_(system), fd_(std::move(fd)) {}
  absl::Status IoEventFdCall(const IoEventFd& event, bool assign);

  const KvmSystem* system_;
  ScopedFd fd_;
};

}  // namespace kvmini::vmm

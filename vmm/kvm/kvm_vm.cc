#include "vmm/kvm/kvm_vm.h"

#include <sys/ioctl.h>

#include <cerrno>

#include "absl/strings/str_format.h"
#include "vmm/kvm/kvm_error.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace kvmini::vmm {

int KvmVm::CheckExtension(int capability) const {
  int value = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return value < 0 ? 0 : value;
}

absl::Status KvmVm::SetTssAddress(uint64_t address) {
  if (ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(address)) < 0) {
    return KvmCallError("KVM_SET_TSS_ADDR", errno, absl::StrFormat("%#x", address));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetIdentityMapAddress(uint64_t address) {
  uint64_t value = address;
  if (ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &value) < 0) {
    return KvmCallError("KVM_SET_IDENTITY_MAP_ADDR", errno, absl::StrFormat("%#x", address));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::CreateIrqchip() {
  if (ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) return KvmCallError("KVM_CREATE_IRQCHIP", errno);
  return absl::OkStatus();
}

absl::Status KvmVm::CreatePit2() {
  kvm_pit_config config{};
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  if (ioctl(fd_.get(), KVM_CREATE_PIT2, &config) < 0) return KvmCallError("KVM_CREATE_PIT2", errno);
  return absl::OkStatus();
}

absl::Status KvmVm::SetUserMemoryRegion(uint32_t slot, uint64_t guest_address, uint64_t size,
                                        void* host) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.guest_phys_addr = guest_address;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    return KvmCallError("KVM_SET_USER_MEMORY_REGION", errno,
                        absl::StrFormat("slot %u [%#x, +%#x)", slot, guest_address, size));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::RegisterGuestMemory(const hw::GuestMemory& memory) {
  uint32_t slot = 0;
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    absl::Status status = SetUserMemoryRegion(slot++, region.guest_address, region.size,
                                              region.host);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status KvmVm::SetIrqLine(uint32_t gsi, bool high) {
  kvm_irq_level level{};
  level.irq = gsi;
  level.level = high ? 1 : 0;
  if (ioctl(fd_.get(), KVM_IRQ_LINE, &level) < 0) {
    return KvmCallError("KVM_IRQ_LINE", errno, absl::StrFormat("GSI %u", gsi));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::IoEventFdCall(const IoEventFd& event, bool assign) {
  kvm_ioeventfd request{};
  request.addr = event.address;
  request.len = event.length;
  request.fd = event.fd;
  if (event.datamatch) {
    request.datamatch = *event.datamatch;
    request.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
  }
  if (event.port_io) request.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (!assign) request.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (ioctl(fd_.get(), KVM_IOEVENTFD, &request) < 0) {
    return KvmCallError(
        assign ? "KVM_IOEVENTFD (assign)" : "KVM_IOEVENTFD (deassign)", errno,
        absl::StrFormat("%s %#x, %u bytes%s, fd %d", event.port_io ? "port" : "MMIO",
                        event.address, event.length,
                        event.datamatch ? absl::StrFormat(", datamatch %#x", *event.datamatch)
                                        : std::string(),
                        event.fd));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::AssignIoEventFd(const IoEventFd& event) { return IoEventFdCall(event, true); }
absl::Status KvmVm::DeassignIoEventFd(const IoEventFd& event) {
  return IoEventFdCall(event, false);
}

absl::Status KvmVm::AssignIrqFd(uint32_t gsi, int fd, std::optional<int> resample_fd) {
  kvm_irqfd request{};
  request.fd = static_cast<uint32_t>(fd);
  request.gsi = gsi;
  if (resample_fd) {
    request.flags |= KVM_IRQFD_FLAG_RESAMPLE;
    request.resamplefd = static_cast<uint32_t>(*resample_fd);
  }
  if (ioctl(fd_.get(), KVM_IRQFD, &request) < 0) {
    return KvmCallError("KVM_IRQFD (assign)", errno, absl::StrFormat("GSI %u, fd %d", gsi, fd));
  }
  return absl::OkStatus();
}

absl::Status KvmVm::DeassignIrqFd(uint32_t gsi, int fd) {
  kvm_irqfd request{};
  request.fd = static_cast<uint32_t>(fd);
  request.gsi = gsi;
  request.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (ioctl(fd_.get(), KVM_IRQFD, &request) < 0) {
    return KvmCallError("KVM_IRQFD (deassign)", errno, absl::StrFormat("GSI %u, fd %d", gsi, fd));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<KvmVcpu>> KvmVm::CreateVcpu(uint32_t id) {
  int vcpu_fd = ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (vcpu_fd < 0) return KvmCallError("KVM_CREATE_VCPU", errno, absl::StrFormat("vCPU %u", id));
  return KvmVcpu::Create(id, ScopedFd(vcpu_fd), system_->vcpu_mmap_size());
}

}  // namespace kvmini::vmm

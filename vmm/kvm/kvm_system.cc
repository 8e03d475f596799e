#include "vmm/kvm/kvm_system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "vmm/kvm/kvm_abi.h"
#include "vmm/kvm/kvm_error.h"
#include "vmm/kvm/kvm_vm.h"

namespace kvmini::vmm {
namespace {
constexpr int kExpectedApiVersion = 12;
// KVM_GET_SUPPORTED_CPUID grows to this many entries at most. The first
// try holds KVM's own limit (KVM_MAX_CPUID_ENTRIES, 256 since Linux 5.x):
// each E2BIG retry costs a whole query, about 0.25 ms at start-up.
constexpr uint32_t kFirstCpuidCapacity = 256;
constexpr uint32_t kMaxCpuidEntries = 1024;
}  // namespace

const std::vector<KvmSystem::Capability>& KvmSystem::RequiredCapabilities() {
  static const std::vector<Capability> capabilities = {
      {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
      {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
      {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
      {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
      {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
      {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
      {KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD"},
      {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
      {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
  };
  return capabilities;
}

absl::StatusOr<std::unique_ptr<KvmSystem>> KvmSystem::Open(const std::string& path) {
  int raw_fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (raw_fd < 0) {
    int error = errno;
    std::string hint = error == ENOENT ? " (is the kvm module loaded?)"
                       : (error == EACCES || error == EPERM)
                           ? " (are you in the kvm group, or root?)"
                           : "";
    return absl::Status(absl::ErrnoToStatusCode(error),
                        absl::StrCat("cannot open ", path, ": ", strerrordesc_np(error), hint));
  }
  std::unique_ptr<KvmSystem> system(new KvmSystem(ScopedFd(raw_fd)));
  int version = ioctl(raw_fd, KVM_GET_API_VERSION, 0);
  if (version < 0) return KvmCallError("KVM_GET_API_VERSION", errno, path);
  if (version != kExpectedApiVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, " speaks KVM API version ", version,
                                                      ", kvmini needs ", kExpectedApiVersion));
  }
  for (const Capability& capability : RequiredCapabilities()) {
    if (system->CheckExtension(capability.id) <= 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " lacks ", capability.name, ", which kvmini needs"));
    }
  }
  system->vcpu_mmap_size_ = ioctl(raw_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (system->vcpu_mmap_size_ <= 0) return KvmCallError("KVM_GET_VCPU_MMAP_SIZE", errno, path);
  int max_vcpus = system->CheckExtension(KVM_CAP_MAX_VCPUS);
  if (max_vcpus <= 0) max_vcpus = system->CheckExtension(KVM_CAP_NR_VCPUS);
  // api.rst: if neither answers, assume 4.
  system->max_vcpus_ = max_vcpus > 0 ? max_vcpus : 4;
  return system;
}

int KvmSystem::CheckExtension(int capability) const {
  int value = ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return value < 0 ? 0 : value;
}

absl::StatusOr<std::vector<kvm_cpuid_entry2>> KvmSystem::GetSupportedCpuid() const {
  static_assert(sizeof(kvm_abi::CpuidHeader) % alignof(kvm_cpuid_entry2) == 0);
  for (uint32_t capacity = kFirstCpuidCapacity; capacity <= kMaxCpuidEntries; capacity *= 2) {
    // uint64_t elements keep the entries (which hold only u32s) aligned.
    std::vector<uint64_t> buffer(
        (sizeof(kvm_abi::CpuidHeader) + capacity * sizeof(kvm_cpuid_entry2)) / sizeof(uint64_t) +
        1);
    auto* header = reinterpret_cast<kvm_abi::CpuidHeader*>(buffer.data());
    header->nent = capacity;
    if (ioctl(fd_.get(), kvm_abi::kGetSupportedCpuid, buffer.data()) == 0) {
      const auto* entries = reinterpret_cast<const kvm_cpuid_entry2*>(header + 1);
      return std::vector<kvm_cpuid_entry2>(entries, entries + header->nent);
    }
    if (errno != E2BIG) return KvmCallError("KVM_GET_SUPPORTED_CPUID", errno);
  }
  return absl::InternalError(absl::StrCat("KVM_GET_SUPPORTED_CPUID reports more than ",
                                          kMaxCpuidEntries, " entries"));
}

absl::StatusOr<std::unique_ptr<KvmVm>> KvmSystem::CreateVm() const {
  int vm_fd = ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (vm_fd < 0) return KvmCallError("KVM_CREATE_VM", errno);
  return std::unique_ptr<KvmVm>(new KvmVm(this, ScopedFd(vm_fd)));
}

}  // namespace kvmini::vmm

// KvmSystem: the /dev/kvm handle. Checks the API version and the
// capabilities kvmini relies on, answers the system-wide queries (vCPU
// mmap size, vCPU limit, supported CPUID) and creates VMs.
#pragma once

#include <linux/kvm.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/kvm/scoped_fd.h"

namespace kvmini::vmm {

class KvmVm;

class KvmSystem {
 public:
  static constexpr const char* kDefaultPath = "/dev/kvm";

  // Opens `path`, checks KVM_GET_API_VERSION == 12 and every capability in
  // RequiredCapabilities(); the error names the first one missing.
  static absl::StatusOr<std::unique_ptr<KvmSystem>> Open(const std::string& path = kDefaultPath);

  struct Capability {
    int id;
    const char* name;
  };
  static const std::vector<Capability>& RequiredCapabilities();

  // KVM_CHECK_EXTENSION on the system fd: 0 if absent, else its value.
  int CheckExtension(int capability) const;
  int fd() const { return fd_.get(); }
  // Size of the per-vCPU kvm_run mapping.
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  // Most vCPUs a VM may have (KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS).
  int max_vcpus() const { return max_vcpus_; }

  // KVM_GET_SUPPORTED_CPUID, growing the buffer on E2BIG.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;

  absl::StatusOr<std::unique_ptr<KvmVm>> CreateVm() const;

 private:
  explicit KvmSystem(ScopedFd fd) : fd_(std::move(fd)) {}
  ScopedFd fd_;
  int vcpu_mmap_size_ = 0;
  int max_vcpus_ = 0;
};

}  // namespace kvmini::vmm

#include "vmm/kvm/kvm_error.h"

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace kvmini::vmm {

absl::Status KvmCallError(absl::string_view call, int error_number, absl::string_view detail) {
  std::string message = absl::StrCat(call);
  if (!detail.empty()) absl::StrAppend(&message, " (", detail, ")");
  absl::StrAppend(&message, " failed: ", strerrordesc_np(error_number), " (errno ", error_number,
                  ")");
  if (error_number == EACCES || error_number == EPERM) {
    absl::StrAppend(&message, "; check the permissions of /dev/kvm");
  }
  return absl::Status(absl::ErrnoToStatusCode(error_number), message);
}

}  // namespace kvmini::vmm

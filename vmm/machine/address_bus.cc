#include "vmm/machine/address_bus.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "util/log.h"

namespace kvmini::vmm {

absl::Status AddressBus::Add(uint64_t base, uint64_t size, hw::BusDevice* device,
                             std::string name) {
  if (frozen_) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "cannot add %s window %s at %#x: the machine is already running", kind_, name, base));
  }
  if (size == 0 || base + size < base || device == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid %s window %s [%#x, +%#x)", kind_, name, base, size));
  }
  auto next = windows_.lower_bound(base);
  if (next != windows_.end() && next->first < base + size) {
    return absl::AlreadyExistsError(absl::StrFormat(
        "%s window %s [%#x, +%#x) overlaps %s at %#x", kind_, name, base, size,
        next->second.name, next->first));
  }
  if (next != windows_.begin()) {
    auto previous = std::prev(next);
    if (previous->first + previous->second.size > base) {
      return absl::AlreadyExistsError(absl::StrFormat(
          "%s window %s [%#x, +%#x) overlaps %s at %#x", kind_, name, base, size,
          previous->second.name, previous->first));
    }
  }
  windows_.emplace(base, Window{size, device, std::move(name)});
  return absl::OkStatus();
}

const std::pair<const uint64_t, AddressBus::Window>* AddressBus::Find(uint64_t address,
                                                                     uint64_t length) const {
  auto after = windows_.upper_bound(address);
  if (after == windows_.begin()) return nullptr;
  const auto& candidate = *std::prev(after);
  uint64_t offset = address - candidate.first;
  if (offset >= candidate.second.size || length > candidate.second.size - offset) return nullptr;
  return &candidate;
}

bool AddressBus::Read(uint64_t address, std::span<uint8_t> data) {
  if (const auto* window = Find(address, data.size())) {
    window->second.device->Read(address - window->first, data);
    return true;
  }
  std::fill(data.begin(), data.end(), 0xff);
  NoteUnclaimed(address, data.size(), false, 0);
  return false;
}

bool AddressBus::Write(uint64_t address, std::span<const uint8_t> data) {
  if (const auto* window = Find(address, data.size())) {
    window->second.device->Write(address - window->first, data);
    return true;
  }
  uint64_t value = 0;
  std::memcpy(&value, data.data(), std::min(data.size(), sizeof(value)));
  NoteUnclaimed(address, data.size(), true, value);
  return false;
}

void AddressBus::NoteUnclaimed(uint64_t address, size_t length, bool is_write, uint64_t value) {
  {
    util::MutexLock lock(&unclaimed_mutex_);
    if (unclaimed_.count(address) != 0) return;
    if (unclaimed_.size() >= kMaxRememberedUnclaimed) {
      if (said_stop_logging_) return;
      said_stop_logging_ = true;
      KVMINI_LOG(Warning) << "guest touched over " << kMaxRememberedUnclaimed << " unclaimed "
                          << kind_ << " addresses; not logging further ones";
      return;
    }
    unclaimed_.insert(address);
  }
  if (is_write) {
    KVMINI_LOG(Info) << absl::StrFormat(
        "guest wrote %#x (%u bytes) to unclaimed %s address %#x; ignored (logged once)", value,
        length, kind_, address);
  } else {
    KVMINI_LOG(Info) << absl::StrFormat(
        "guest read %u bytes from unclaimed %s address %#x; answered all-ones (logged once)",
        length, kind_, address);
  }
}

size_t AddressBus::unclaimed_address_count() const {
  util::MutexLock lock(&unclaimed_mutex_);
  return unclaimed_.size();
}

}  // namespace kvmini::vmm

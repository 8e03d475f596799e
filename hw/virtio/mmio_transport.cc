// The virtio-mmio register file. Life-cycle operations are in
// mmio_transport_lifecycle.cc.
#include "hw/virtio/mmio_transport.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvmini::hw::virtio {
namespace {
uint64_t LittleEndianValue(std::span<const uint8_t> data) {
  uint64_t value = 0;
  std::memcpy(&value, data.data(), std::min(data.size(), sizeof(value)));
  return value;
}

void SetHalf(uint64_t& value, bool high, uint32_t half) {
  if (high) {
    value = (value & 0xffffffffull) | (uint64_t{half} << 32);
  } else {
    value = (value & ~0xffffffffull) | half;
  }
}
}  // namespace

absl::StatusOr<std::unique_ptr<MmioTransport>> MmioTransport::Create(
    const GuestMemory& memory, std::unique_ptr<VirtioDevice> device, Options options) {
  const uint16_t max_size = device->queue_max_size();
  if (device->num_queues() == 0 || max_size == 0 || (max_size & (max_size - 1)) != 0 ||
      max_size > kMaxQueueSize) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %u queues of at most %u entries: need at least one queue and a power-of-two size",
        device->name(), device->num_queues(), max_size));
  }
  std::vector<util::EventNotifier> notifiers;
  for (uint16_t i = 0; i < device->num_queues(); ++i) {
    absl::StatusOr<util::EventNotifier> notifier = util::EventNotifier::Create();
    if (!notifier.ok()) {
      return absl::Status(notifier.status().code(),
                          absl::StrCat(device->name(), ": queue notifier: ",
                                       notifier.status().message()));
    }
    notifiers.push_back(std::move(*notifier));
  }
  absl::StatusOr<util::EventNotifier> interrupt = util::EventNotifier::Create();
  if (!interrupt.ok()) {
    return absl::Status(interrupt.status().code(),
                        absl::StrCat(device->name(), ": interrupt: ", interrupt.status().message()));
  }
  return std::unique_ptr<MmioTransport>(new MmioTransport(
      memory, std::move(device), options, std::move(notifiers), std::move(*interrupt)));
}

MmioTransport::MmioTransport(const GuestMemory& memory, std::unique_ptr<VirtioDevice> device,
                             Options options, std::vector<util::EventNotifier> notifiers,
                             util::EventNotifier interrupt)
    : memory_(memory),
      device_(std::move(device)),
      notifiers_(std::move(notifiers)),
      interrupt_(std::move(interrupt)),
      queue_registers_(device_->num_queues()),
      dataplane_(device_->name(), *device_),
      iothread_(options.iothread) {
  std::vector<Dataplane::QueueBinding> bindings;
  for (uint16_t i = 0; i < device_->num_queues(); ++i) {
    queues_.push_back(std::make_unique<Virtqueue>(memory_, i, device_->name()));
    Virtqueue* queue = queues_.back().get();
    queue->SetBrokenHandler([this](std::string_view) { OnQueueBroken(); });
    queue->SetUsedNotifier([this] { RaiseInterrupt(kInterruptUsedBuffer); });
    bindings.push_back({&notifiers_[i], queue, [this, queue] { device_->ProcessQueue(*queue); }});
  }
  dataplane_.SetQueues(std::move(bindings));
}

std::vector<MmioTransport::QueueNotifier> MmioTransport::queue_notifiers() const {
  std::vector<QueueNotifier> result;
  for (uint32_t i = 0; i < notifiers_.size(); ++i) {
    result.push_back({mmio::kQueueNotify, i, notifiers_[i].fd()});
  }
  return result;
}

uint64_t MmioTransport::offered_features() const {
  return device_->device_features() | feature::kVersion1 | feature::kRingIndirectDesc |
         feature::kRingEventIdx;
}

template <typename... Args>
void MmioTransport::LogGuestError(GuestError kind, const Args&... args) {
  util::RateLimiter& limiter = guest_error_log_limiters_[static_cast<size_t>(kind)];
  if (!limiter.Allow()) return;
  std::string message = absl::StrCat(device_->name(), ": ", args...);
  if (uint64_t suppressed = limiter.TakeSuppressedCount(); suppressed != 0) {
    absl::StrAppend(&message, " (", suppressed, " similar messages suppressed before this one)");
  }
  KVMINI_LOG(Warning) << message;
}

void MmioTransport::RaiseInterrupt(uint32_t cause) {
  // The bit first: the guest's handler reads InterruptStatus after the pulse.
  interrupt_status_.fetch_or(cause, std::memory_order_seq_cst);
  interrupt_.Set();
}

void MmioTransport::OnQueueBroken() {
  needs_reset_.store(true, std::memory_order_seq_cst);
  RaiseInterrupt(kInterruptConfigChange);
}

void MmioTransport::NotifyQueue(uint64_t value) {
  if (value >= notifiers_.size()) {
    LogGuestError(GuestError::kNotify, "QueueNotify for queue ", value, ", the device has ",
                  notifiers_.size());
    return;
  }
  notifiers_[value].Set();
}

void MmioTransport::Read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= mmio::kConfig) {
    device_->ReadConfig(offset - mmio::kConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    LogGuestError(GuestError::kRegisterAccess, data.size(), "-byte read at register offset ",
                  absl::Hex(offset), ": registers are 32-bit; read as 0");
    return;
  }
  uint32_t value = ReadRegister(offset);
  std::memcpy(data.data(), &value, 4);
}

uint32_t MmioTransport::ReadRegister(uint64_t offset) {
  switch (offset) {
    case mmio::kMagicValue:
      return mmio::kMagic;
    case mmio::kVersion:
      return mmio::kVersion2;
    case mmio::kDeviceId:
      return device_->device_id();
    case mmio::kVendorId:
      return mmio::kVendor;
    case mmio::kInterruptStatus:
      return interrupt_status_.load(std::memory_order_seq_cst);
    case mmio::kConfigGeneration:
      return device_->config_generation();
    case mmio::kShmLenLow:
    case mmio::kShmLenHigh:
    case mmio::kShmBaseLow:
    case mmio::kShmBaseHigh:
      return 0xffffffff;  // no shared memory region
    default:
      break;
  }
  util::MutexLock lock(&mutex_);
  switch (offset) {
    case mmio::kDeviceFeatures: {
      if (device_features_select_ > 1) return 0;
      return static_cast<uint32_t>(offered_features() >> (32 * device_features_select_));
    }
    case mmio::kQueueNumMax:
      return SelectedQueue() != nullptr ? device_->queue_max_size() : 0;
    case mmio::kQueueReady: {
      QueueRegisters* queue = SelectedQueue();
      return queue != nullptr && queue->ready ? 1 : 0;
    }
    case mmio::kStatus:
      return status_ | (needs_reset_.load() ? status::kDeviceNeedsReset : 0);
    default:
      return 0;  // write-only or reserved
  }
}

MmioTransport::QueueRegisters* MmioTransport::SelectedQueue() {
  return queue_select_ < queue_registers_.size() ? &queue_registers_[queue_select_] : nullptr;
}

void MmioTransport::Write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= mmio::kConfig) {
    device_->WriteConfig(offset - mmio::kConfig, data);
    return;
  }
  if (offset == mmio::kQueueNotify) {
    // Any size: KVM's ioeventfd catches only the exact 4-byte form.
    NotifyQueue(LittleEndianValue(data));
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    LogGuestError(GuestError::kRegisterAccess, data.size(), "-byte write at register offset ",
                  absl::Hex(offset), ": registers are 32-bit; ignored");
    return;
  }
  Operation operation = WriteRegister(offset, static_cast<uint32_t>(LittleEndianValue(data)));
  // The register lock is released: now the vCPU may wait for the main loop.
  if (operation) RunFromVcpu(std::move(operation));
}

MmioTransport::Operation MmioTransport::WriteRegister(uint64_t offset, uint32_t value) {
  if (offset == mmio::kInterruptAck) {
    interrupt_status_.fetch_and(~value, std::memory_order_seq_cst);
    return nullptr;
  }
  util::MutexLock lock(&mutex_);
  QueueRegisters* queue = nullptr;
  switch (offset) {
    case mmio::kDeviceFeaturesSel:
      device_features_select_ = value;
      return nullptr;
    case mmio::kDriverFeaturesSel:
      driver_features_select_ = value;
      return nullptr;
    case mmio::kDriverFeatures:
      if (status_ & status::kFeaturesOk) {
        LogGuestError(GuestError::kFeatures, "DriverFeatures written after FEATURES_OK; ignored");
      } else if (driver_features_select_ <= 1) {
        SetHalf(driver_features_, driver_features_select_ == 1, value);
      }
      return nullptr;
    case mmio::kQueueSel:
      queue_select_ = value;
      return nullptr;
    case mmio::kStatus:
      return WriteStatus(static_cast<uint8_t>(value));
    case mmio::kLegacyGuestPageSize:
    case mmio::kLegacyQueueAlign:
    case mmio::kLegacyQueuePfn:
      LogGuestError(GuestError::kRegisterAccess, "legacy (version 1) virtio-mmio register ",
                    absl::Hex(offset),
                    " written: this device is version 2 only; a legacy driver cannot use it");
      return nullptr;
    case mmio::kShmSel:
    case mmio::kQueueReset:  // VIRTIO_F_RING_RESET is not offered
      return nullptr;
    case mmio::kQueueNum:
    case mmio::kQueueReady:
    case mmio::kQueueDescLow:
    case mmio::kQueueDescHigh:
    case mmio::kQueueDriverLow:
    case mmio::kQueueDriverHigh:
    case mmio::kQueueDeviceLow:
    case mmio::kQueueDeviceHigh:
      queue = SelectedQueue();
      break;
    default:
      LogGuestError(GuestError::kRegisterAccess, "write to unknown register offset ",
                    absl::Hex(offset), "; ignored");
      return nullptr;
  }
  if (queue == nullptr) {
    LogGuestError(GuestError::kQueueSetup, "queue register ", absl::Hex(offset),
                  " written for absent queue ", queue_select_, "; ignored");
    return nullptr;
  }
  if (status_ & status::kDriverOk) {
    LogGuestError(GuestError::kQueueSetup, "queue ", queue_select_,
                  " reconfigured after DRIVER_OK; ignored");
    return nullptr;
  }
  switch (offset) {
    case mmio::kQueueNum:
      queue->size = value;
      break;
    case mmio::kQueueReady:
      queue->ready = value & 1;
      break;
    case mmio::kQueueDescLow:
    case mmio::kQueueDescHigh:
      SetHalf(queue->descriptor_table, offset == mmio::kQueueDescHigh, value);
      break;
    case mmio::kQueueDriverLow:
    case mmio::kQueueDriverHigh:
      SetHalf(queue->avail_ring, offset == mmio::kQueueDriverHigh, value);
      break;
    default:
      SetHalf(queue->used_ring, offset == mmio::kQueueDeviceHigh, value);
      break;
  }
  return nullptr;
}

MmioTransport::Operation MmioTransport::WriteStatus(uint8_t value) {
  if (value == 0) return [this] { Reset(); };
  const uint8_t old = status_;
  if (old & ~value) {
    LogGuestError(GuestError::kStatus, "status ", absl::Hex(old), " -> ", absl::Hex(value),
                  " clears bits without a reset; ignored");
    return nullptr;
  }
  const uint8_t added = value & ~old;
  if (added & status::kFeaturesOk) {
    const uint64_t unknown = driver_features_ & ~offered_features();
    if (!(value & status::kDriver)) {
      LogGuestError(GuestError::kFeatures, "FEATURES_OK set before DRIVER; refused");
      value &= ~status::kFeaturesOk;
    } else if (!(driver_features_ & feature::kVersion1)) {
      LogGuestError(GuestError::kFeatures,
                    "the driver did not accept VIRTIO_F_VERSION_1: a legacy-only driver "
                    "cannot use this virtio-mmio version 2 device; FEATURES_OK refused");
      value &= ~status::kFeaturesOk;
    } else if (unknown != 0) {
      LogGuestError(GuestError::kFeatures,
                    "the driver accepted features the device does not offer (", absl::Hex(unknown),
                    "); FEATURES_OK refused");
      value &= ~status::kFeaturesOk;
    }
  }
  Operation operation;
  if (added & status::kDriverOk) {
    if (!(value & status::kFeaturesOk)) {
      LogGuestError(GuestError::kStatus, "DRIVER_OK set without FEATURES_OK; ignored");
      value &= ~status::kDriverOk;
    } else {
      Activation activation{driver_features_, queue_registers_};
      operation = [this, activation = std::move(activation)]() mutable {
        Activate(std::move(activation));
      };
    }
  }
  status_ = value;
  return operation;
}

}  // namespace kvmini::hw::virtio

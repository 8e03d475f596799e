// Numbers from the virtio 1.2 specification that the transport, the split
// virtqueue and the devices share: virtio-mmio register offsets, device
// status bits, transport feature bits and ring layout flags.
#pragma once

#include <cstdint>

namespace kvmini::hw::virtio {

// virtio-mmio version 2 register offsets (spec 4.2.2).
namespace mmio {
inline constexpr uint64_t kMagicValue = 0x000;
inline constexpr uint64_t kVersion = 0x004;
inline constexpr uint64_t kDeviceId = 0x008;
inline constexpr uint64_t kVendorId = 0x00c;
inline constexpr uint64_t kDeviceFeatures = 0x010;
inline constexpr uint64_t kDeviceFeaturesSel = 0x014;
inline constexpr uint64_t kDriverFeatures = 0x020;
inline constexpr uint64_t kDriverFeaturesSel = 0x024;
inline constexpr uint64_t kLegacyGuestPageSize = 0x028;  // version 1 only
inline constexpr uint64_t kQueueSel = 0x030;
inline constexpr uint64_t kQueueNumMax = 0x034;
inline constexpr uint64_t kQueueNum = 0x038;
inline constexpr uint64_t kLegacyQueueAlign = 0x03c;  // version 1 only
inline constexpr uint64_t kLegacyQueuePfn = 0x040;    // version 1 only
inline constexpr uint64_t kQueueReady = 0x044;
inline constexpr uint64_t kQueueNotify = 0x050;
inline constexpr uint64_t kInterruptStatus = 0x060;
inline constexpr uint64_t kInterruptAck = 0x064;
inline constexpr uint64_t kStatus = 0x070;
inline constexpr uint64_t kQueueDescLow = 0x080;
inline constexpr uint64_t kQueueDescHigh = 0x084;
inline constexpr uint64_t kQueueDriverLow = 0x090;
inline constexpr uint64_t kQueueDriverHigh = 0x094;
inline constexpr uint64_t kQueueDeviceLow = 0x0a0;
inline constexpr uint64_t kQueueDeviceHigh = 0x0a4;
inline constexpr uint64_t kShmSel = 0x0ac;
inline constexpr uint64_t kShmLenLow = 0x0b0;
inline constexpr uint64_t kShmLenHigh = 0x0b4;
inline constexpr uint64_t kShmBaseLow = 0x0b8;
inline constexpr uint64_t kShmBaseHigh = 0x0bc;
inline constexpr uint64_t kQueueReset = 0x0c0;
inline constexpr uint64_t kConfigGeneration = 0x0fc;
inline constexpr uint64_t kConfig = 0x100;
// Size of the register window the machine maps for one device.
inline constexpr uint64_t kWindowSize = 0x200;

inline constexpr uint32_t kMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kVersion2 = 2;
inline constexpr uint32_t kVendor = 0x494e4b4b;  // "KKNI" (kvmini), any value is allowed
}  // namespace mmio

// Device status bits (spec 2.1).
namespace status {
inline constexpr uint8_t kAcknowledge = 1;
inline constexpr uint8_t kDriver = 2;
inline constexpr uint8_t kDriverOk = 4;
inline constexpr uint8_t kFeaturesOk = 8;
inline constexpr uint8_t kDeviceNeedsReset = 0x40;
inline constexpr uint8_t kFailed = 0x80;
}  // namespace status

// InterruptStatus bits.
inline constexpr uint32_t kInterruptUsedBuffer = 1;
inline constexpr uint32_t kInterruptConfigChange = 2;

// Transport feature bits (spec 6).
namespace feature {
inline constexpr uint64_t kRingIndirectDesc = 1ull << 28;
inline constexpr uint64_t kRingEventIdx = 1ull << 29;
inline constexpr uint64_t kVersion1 = 1ull << 32;
}  // namespace feature

// Split ring layout (spec 2.7).
inline constexpr uint16_t kDescriptorFlagNext = 1;
inline constexpr uint16_t kDescriptorFlagWrite = 2;
inline constexpr uint16_t kDescriptorFlagIndirect = 4;
inline constexpr uint16_t kAvailFlagNoInterrupt = 1;
inline constexpr uint32_t kMaxQueueSize = 32768;
inline constexpr uint64_t kDescriptorSize = 16;

struct Descriptor {
  uint64_t address;
  uint32_t length;
  uint16_t flags;
  uint16_t next;
};
static_assert(sizeof(Descriptor) == kDescriptorSize);

struct UsedElement {
  uint32_t id;
  uint32_t length;
};
static_assert(sizeof(UsedElement) == 8);

}  // namespace kvmini::hw::virtio

// VirtioDevice: what a device type (block, SCSI) adds to the generic
// virtio-mmio transport: its ID, feature bits, config space and the
// processing of its queues. The transport owns the register file, the
// virtqueues, the interrupt and the dataplane; it calls these hooks.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "hw/virtio/dataplane.h"
#include "hw/virtio/virtqueue.h"

namespace kvmini::hw::virtio {

class VirtioDevice : public Dataplane::Client {
 public:
  ~VirtioDevice() override = default;

  virtual uint32_t device_id() const = 0;
  // Short name for logs and errors, e.g. "virtio-blk vda".
  virtual const std::string& name() const = 0;
  // Device-type feature bits offered (bits 0-23); the transport adds
  // VERSION_1, INDIRECT_DESC and EVENT_IDX.
  virtual uint64_t device_features() const = 0;
  virtual uint16_t num_queues() const = 0;
  // QueueNumMax: a power of two.
  virtual uint16_t queue_max_size() const = 0;

  // Config space accesses from vCPU threads, possibly concurrent. Accesses
  // beyond the config space read zeroes and are ignored.
  virtual void ReadConfig(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void WriteConfig(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual uint32_t config_generation() const { return 0; }

  // Main loop, queues attached nowhere: the driver set DRIVER_OK with these
  // negotiated features. `queues` has num_queues() entries; the ones the
  // driver did not set up are not configured().
  virtual void Activate(uint64_t negotiated_features, std::span<Virtqueue* const> queues) = 0;
  // In the thread of the context the queues are attached to: serve what
  // the driver made available, then publish (Virtqueue::Publish).
  virtual void ProcessQueue(Virtqueue& queue) = 0;
  // Main loop, queues attached nowhere, nothing in flight: forget
  // everything the driver set up.
  virtual void Reset() = 0;
};

}  // namespace kvmini::hw::virtio

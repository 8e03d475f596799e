// AddressBus: maps guest port-I/O or MMIO addresses to device register
// windows (hw::BusDevice). The machine keeps one for ports and one for
// MMIO; vCPU threads look accesses up in it on every exit.
//
// Accesses nobody claims are answered, never fatal: reads return all-ones
// (what a floating ISA/PCI bus returns, and what makes Linux's probes of
// absent COM2-4 ports and PCI config mechanisms conclude "nothing here"),
// writes are dropped, and each such address is logged once.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "hw/bus_device.h"
#include "util/mutex.h"

namespace kvmini::vmm {

class AddressBus {
 public:
  // `kind` names the bus in messages ("port", "MMIO").
  explicit AddressBus(std::string kind) : kind_(std::move(kind)) {}
  AddressBus(const AddressBus&) = delete;
  AddressBus& operator=(const AddressBus&) = delete;

  // Maps [base, base + size) to `device` (not owned; must outlive the bus's
  // use). Fails on an empty, wrapping or overlapping window, and after
  // Freeze().
  absl::Status Add(uint64_t base, uint64_t size, hw::BusDevice* device, std::string name);
  // After this the map is read without a lock by vCPU threads; call it
  // before the first vCPU runs.
  void Freeze() { frozen_ = true; }

  // An access is dispatched only if it lies entirely inside one window.
  // Returns whether a device handled it.
  bool Read(uint64_t address, std::span<uint8_t> data);
  bool Write(uint64_t address, std::span<const uint8_t> data);

  // Distinct unclaimed addresses seen so far (for tests and diagnostics).
  size_t unclaimed_address_count() const;

 private:
  struct Window {
    uint64_t size;
    hw::BusDevice* device;
    std::string name;
  };
  // The window holding [address, address + length), or null.
  const std::pair<const uint64_t, Window>* Find(uint64_t address, uint64_t length) const;
  void NoteUnclaimed(uint64_t address, size_t length, bool is_write, uint64_t value);

  const std::string kind_;
  bool frozen_ = false;
  std::map<uint64_t, Window> windows_;  // by base; immutable once frozen

  // Bounded so a guest sweeping the address space cannot grow it forever.
  static constexpr size_t kMaxRememberedUnclaimed = 4096;
  mutable util::Mutex unclaimed_mutex_;
  std::set<uint64_t> unclaimed_ ABSL_GUARDED_BY(unclaimed_mutex_);
  bool said_stop_logging_ ABSL_GUARDED_BY(unclaimed_mutex_) = false;
};

}  // namespace kvmini::vmm

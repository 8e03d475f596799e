// CmosRtc: the MC146818-style CMOS at ports 0x70 (index, bit 7 = NMI mask)
// and 0x71 (data). The FADT tells Linux there is no CMOS RTC, so no driver
// binds to it; anything that still reads it (a kernel without kvmclock,
// firmware-style probes) gets the host's UTC time in the format status
// register B asks for, a never-updating clock (UIP clear, valid RAM), and
// the rest of the 128 bytes as plain RAM.
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "hw/bus_device.h"
#include "util/mutex.h"

namespace kvmini::hw {

class CmosRtc final : public BusDevice {
 public:
  static constexpr uint16_t kBasePort = 0x70;
  static constexpr uint16_t kPortCount = 2;

  // `clock` returns the current time (tests pass a fixed one).
  explicit CmosRtc(absl::AnyInvocable<absl::Time()> clock = &absl::Now);

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t ReadRegister(uint8_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // A time field in the format status register B selects.
  uint8_t Encode(int value) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  absl::AnyInvocable<absl::Time()> clock_;
  util::Mutex mutex_;
  uint8_t index_ ABSL_GUARDED_BY(mutex_) = 0;
  std::array<uint8_t, 128> ram_ ABSL_GUARDED_BY(mutex_){};
};

}  // namespace kvmini::hw

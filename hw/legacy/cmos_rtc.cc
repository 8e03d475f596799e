#include "hw/legacy/cmos_rtc.h"

#include <ctime>

namespace kvmini::hw {
namespace {

constexpr uint8_t kIndexMask = 0x7F;  // bit 7 of the index port masks NMIs

constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kDayOfWeek = 0x06;
constexpr uint8_t kDayOfMonth = 0x07;
constexpr uint8_t kMonth = 0x08;
constexpr uint8_t kYear = 0x09;
constexpr uint8_t kStatusA = 0x0A;
constexpr uint8_t kStatusB = 0x0B;
constexpr uint8_t kStatusC = 0x0C;
constexpr uint8_t kStatusD = 0x0D;
constexpr uint8_t kCentury = 0x32;

// Status A: 32.768 kHz time base, 1024 Hz rate; update-in-progress clear.
constexpr uint8_t kStatusADefault = 0x26;
// Status B: 24-hour mode, BCD.
constexpr uint8_t kStatusB24Hour = 0x02;
constexpr uint8_t kStatusBBinary = 0x04;
// Status D: valid RAM and time (battery good).
constexpr uint8_t kStatusDValid = 0x80;
constexpr uint8_t kHourPm = 0x80;

}  // namespace

CmosRtc::CmosRtc(absl::AnyInvocable<absl::Time()> clock) : clock_(std::move(clock)) {
  ram_[kStatusA] = kStatusADefault;
  ram_[kStatusB] = kStatusB24Hour;
  ram_[kStatusD] = kStatusDValid;
}

uint8_t CmosRtc::Encode(int value) const {
  if (ram_[kStatusB] & kStatusBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

uint8_t CmosRtc::ReadRegister(uint8_t index) {
  if (index > kYear && index != kCentury) {
    // Status C is read-to-clear interrupt flags; there are none.
    return index == kStatusC ? 0 : ram_[index];
  }
  if ((index & 1) != 0 && index < kDayOfWeek) return ram_[index];  // alarm registers
  std::time_t seconds = absl::ToTimeT(clock_());
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  switch (index) {
    case kSeconds:
      return Encode(utc.tm_sec);
    case kMinutes:
      return Encode(utc.tm_min);
    case kHours: {
      if (ram_[kStatusB] & kStatusB24Hour) return Encode(utc.tm_hour);
      int hour12 = utc.tm_hour % 12 == 0 ? 12 : utc.tm_hour % 12;
      return static_cast<uint8_t>(Encode(hour12) | (utc.tm_hour >= 12 ? kHourPm : 0));
    }
    case kDayOfWeek:
      return Encode(utc.tm_wday + 1);
    case kDayOfMonth:
      return Encode(utc.tm_mday);
    case kMonth:
      return Encode(utc.tm_mon + 1);
    case kYear:
      return Encode((utc.tm_year + 1900) % 100);
    case kCentury:
      return Encode((utc.tm_year + 1900) / 100);
    default:
      return ram_[index];
  }
}

void CmosRtc::Read(uint64_t offset, std::span<uint8_t> data) {
  util::MutexLock lock(&mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    // The index port reads back as all-ones on most chipsets.
    data[i] = offset + i == 1 ? ReadRegister(index_) : 0xFF;
  }
}

void CmosRtc::Write(uint64_t offset, std::span<const uint8_t> data) {
  util::MutexLock lock(&mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i == 0) {
      index_ = data[i] & kIndexMask;
    } else if (offset + i == 1) {
      // Time registers always show the host clock; setting them is
      // accepted and forgotten. Status C/D are read-only.
      if (index_ == kStatusC || index_ == kStatusD) continue;
      // Update-in-progress (status A bit 7) is the clock's to set, not the guest's.
      ram_[index_] = index_ == kStatusA ? (data[i] & 0x7F) : data[i];
    }
  }
}

}  // namespace kvmini::hw

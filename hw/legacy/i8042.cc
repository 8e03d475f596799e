#include "hw/legacy/i8042.h"

namespace kvmini::hw {
namespace {

constexpr uint64_t kDataOffset = 0;
constexpr uint64_t kCommandOffset = 4;

constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusLastWasCommand = 0x08;

constexpr uint8_t kCommandReadCommandByte = 0x20;
constexpr uint8_t kCommandWriteCommandByte = 0x60;
constexpr uint8_t kCommandSelfTest = 0xAA;
constexpr uint8_t kCommandTestKeyboardPort = 0xAB;
constexpr uint8_t kCommandTestAuxPort = 0xA9;
constexpr uint8_t kCommandReadOutputPort = 0xD0;
constexpr uint8_t kCommandWriteOutputPort = 0xD1;
constexpr uint8_t kCommandPulseFirst = 0xF0;  // 0xF0-0xFF pulse output lines

constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kPortTestPassed = 0x00;
// Output port: bit 0 is the CPU reset line (active low), bit 1 A20.
constexpr uint8_t kOutputPortDefault = 0x03;
constexpr uint8_t kOutputPortReset = 0x01;
// What a keyboard that is not there answers (the controller's time-out).
constexpr uint8_t kNoDevice = 0xFE;

}  // namespace

void I8042::Read(uint64_t offset, std::span<uint8_t> data) {
  util::MutexLock lock(&mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    uint8_t value = 0xFF;
    if (offset + i == kDataOffset) {
      if (!output_.empty()) {
        value = output_.front();
        output_.pop_front();
      } else {
        value = 0;
      }
    } else if (offset + i == kCommandOffset) {
      value = kStatusSystemFlag | (output_.empty() ? 0 : kStatusOutputFull) |
              (pending_command_ != 0 ? kStatusLastWasCommand : 0);
    }
    data[i] = value;
  }
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  bool reset = false;
  {
    util::MutexLock lock(&mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
      if (offset + i == kDataOffset) DataWrite(data[i]);
      if (offset + i == kCommandOffset) Command(data[i]);
    }
    reset = reset_requested_;
    reset_requested_ = false;
  }
  if (reset) power_->Reset("i8042 reset line");
}

void I8042::Command(uint8_t command) {
  pending_command_ = 0;
  switch (command) {
    case kCommandReadCommandByte:
      output_.push_back(command_byte_);
      return;
    case kCommandWriteCommandByte:
    case kCommandWriteOutputPort:
      pending_command_ = command;
      return;
    case kCommandSelfTest:
      output_.push_back(kSelfTestPassed);
      return;
    case kCommandTestKeyboardPort:
    case kCommandTestAuxPort:
      output_.push_back(kPortTestPassed);
      return;
    case kCommandReadOutputPort:
      output_.push_back(kOutputPortDefault);
      return;
    default:
      // 0xF0-0xFF pulse the output lines whose bit is 0 in the low nibble;
      // bit 0 is the reset line (0xFE is the classic reset command).
      if (command >= kCommandPulseFirst && (command & kOutputPortReset) == 0) {
        reset_requested_ = true;
      }
      // Enable/disable port commands and anything else: accepted silently.
      return;
  }
}

void I8042::DataWrite(uint8_t value) {
  uint8_t command = pending_command_;
  pending_command_ = 0;
  switch (command) {
    case kCommandWriteCommandByte:
      command_byte_ = value;
      return;
    case kCommandWriteOutputPort:
      if ((value & kOutputPortReset) == 0) reset_requested_ = true;
      return;
    default:
      // A byte for the keyboard, which is not there.
      output_.push_back(kNoDevice);
      return;
  }
}

}  // namespace kvmini::hw

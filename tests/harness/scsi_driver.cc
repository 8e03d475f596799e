#include "tests/harness/scsi_driver.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "util/check.h"

namespace kvmini::test {

namespace vs = hw::virtio::virtio_scsi;
namespace mmio = hw::virtio::mmio;

namespace {
constexpr uint32_t kControlRequestBytes = 32;
constexpr uint32_t kControlResponseBytes = 8;
constexpr uint16_t kControlFrames = 16;
}  // namespace

uint16_t ScsiDriver::queue_index(uint16_t request_queue) const {
  return static_cast<uint16_t>(vs::kFirstRequestQueue + request_queue);
}

uint32_t ScsiDriver::ReadConfig32(uint64_t offset) {
  return driver_.Read32(mmio::kConfig + offset);
}

void ScsiDriver::WriteConfig32(uint64_t offset, uint32_t value) {
  driver_.Write32(mmio::kConfig + offset, value);
}

absl::Status ScsiDriver::Start(uint64_t wanted, uint16_t request_queues, uint16_t size,
                               uint32_t cdb_size, uint32_t sense_size) {
  if (19 + cdb_size > kMaxHeader || 12 + sense_size > kMaxResponse) {
    return absl::InvalidArgumentError("cdb_size or sense_size too large for the driver's frames");
  }
  absl::Status negotiated = driver_.Negotiate(wanted | hw::virtio::feature::kVersion1);
  if (!negotiated.ok()) return negotiated;
  WriteConfig32(vs::config::kCdbSize, cdb_size);
  WriteConfig32(vs::config::kSenseSize, sense_size);
  cdb_size_ = cdb_size;
  sense_size_ = sense_size;

  for (uint16_t q : {vs::kControlQueue, vs::kEventQueue}) {
    absl::StatusOr<DriverQueue*> queue = driver_.SetupQueue(q, size);
    if (!queue.ok()) return queue.status();
  }
  control_frames_.clear();
  free_control_frames_.clear();
  control_pending_.assign(size, -1);
  control_answers_.clear();
  for (uint32_t i = 0; i < kControlFrames; ++i) {
    control_frames_.push_back({allocator_.Allocate(kControlRequestBytes, 16),
                               allocator_.Allocate(kControlResponseBytes, 16)});
    free_control_frames_.push_back(kControlFrames - 1 - i);
  }

  frames_.assign(request_queues, {});
  free_frames_.assign(request_queues, {});
  pending_.assign(request_queues, std::vector<int>(size, -1));
  for (uint16_t q = 0; q < request_queues; ++q) {
    absl::StatusOr<DriverQueue*> queue = driver_.SetupQueue(queue_index(q), size);
    if (!queue.ok()) return queue.status();
    for (uint32_t i = 0; i < size; ++i) {
      Frame frame;
      frame.header = allocator_.Allocate(kMaxHeader, 64);
      frame.response = allocator_.Allocate(kMaxResponse, 64);
      frame.data = allocator_.Allocate(max_data_, 4096);
      frames_[q].push_back(frame);
      free_frames_[q].push_back(size - 1 - i);
    }
  }
  driver_.DriverOk();
  return absl::OkStatus();
}

absl::StatusOr<uint16_t> ScsiDriver::Post(uint16_t request_queue, const ScsiCommand& command) {
  if (request_queue >= frames_.size()) return absl::InvalidArgumentError("no such request queue");
  if (free_frames_[request_queue].empty()) {
    return absl::ResourceExhaustedError("no free request frame");
  }
  const uint32_t header_length = command.header_length.value_or(19 + cdb_size_);
  const uint32_t response_length = command.response_length.value_or(12 + sense_size_);
  const uint32_t data_length = std::max<uint32_t>(command.data_in_length,
                                                  static_cast<uint32_t>(command.data_out.size()));
  if (header_length > kMaxHeader || response_length > kMaxResponse || data_length > max_data_) {
    return absl::InvalidArgumentError("command too large for a frame");
  }
  const uint32_t frame_index = free_frames_[request_queue].back();
  Frame& frame = frames_[request_queue][frame_index];
  frame.data_in_length = command.data_in_length;
  frame.response_length = response_length;

  // On the stack: benchmarks post from here at full rate.
  std::array<uint8_t, kMaxHeader> header{};
  std::copy(command.lun.begin(), command.lun.end(), header.begin() + vs::kCommandLun);
  std::memcpy(header.data() + vs::kCommandTag, &command.tag, sizeof(command.tag));
  const size_t cdb_room = std::min<size_t>(cdb_size_, kMaxHeader - vs::kCommandCdb);
  std::copy_n(command.cdb.begin(), std::min(command.cdb.size(), cdb_room),
              header.begin() + vs::kCommandCdb);
  KVMINI_CHECK(memory_.Write(frame.header, std::span(header).first(vs::kCommandCdb + cdb_room))
                   .ok(),
               "writing a request header");
  // Poisoned, so a test sees which bytes the device wrote.
  static const std::array<uint8_t, kMaxResponse> kPoison = [] {
    std::array<uint8_t, kMaxResponse> bytes;
    bytes.fill(0xee);
    return bytes;
  }();
  KVMINI_CHECK(memory_.Write(frame.response, std::span(kPoison).first(response_length)).ok(),
               "poisoning a response");
  if (!command.data_out.empty()) {
    KVMINI_CHECK(memory_.Write(frame.data, command.data_out).ok(), "writing data-out");
  }

  std::vector<DriverQueue::Buffer> buffers;
  if (header_length > 0) buffers.push_back({frame.header, header_length, false});
  const auto add_data = [&](uint32_t length, bool writable) {
    const uint32_t segment = command.segment_size != 0 ? command.segment_size : length;
    for (uint32_t done = 0; done < length; done += segment) {
      buffers.push_back({frame.data + done, std::min(segment, length - done), writable});
    }
  };
  add_data(static_cast<uint32_t>(command.data_out.size()), false);
  if (response_length > 0) buffers.push_back({frame.response, response_length, true});
  add_data(command.data_in_length, true);
  std::optional<uint16_t> head =
      driver_.queue(queue_index(request_queue)).Post(buffers, command.indirect);
  if (!head) return absl::ResourceExhaustedError("virtqueue full");
  free_frames_[request_queue].pop_back();
  pending_[request_queue][*head] = static_cast<int>(frame_index);
  return *head;
}

std::vector<std::pair<uint16_t, ScsiResponse>> ScsiDriver::Collect(uint16_t request_queue) {
  std::vector<std::pair<uint16_t, ScsiResponse>> results;
  for (const hw::virtio::UsedElement& element :
       driver_.queue(queue_index(request_queue)).TakeUsed()) {
    std::vector<int>& pending = pending_[request_queue];
    KVMINI_CHECK(element.id < pending.size() && pending[element.id] >= 0,
                 "device returned a head the driver did not post");
    const uint32_t frame_index = pending[element.id];
    pending[element.id] = -1;
    const Frame& frame = frames_[request_queue][frame_index];
    std::array<uint8_t, kMaxResponse> buffer;
    const std::span<uint8_t> bytes =
        std::span(buffer).first(std::max<uint32_t>(frame.response_length, 12));
    KVMINI_CHECK(memory_.Read(frame.response, bytes).ok(), "reading a response");
    ScsiResponse response;
    std::memcpy(&response.sense_length, bytes.data() + vs::kResponseSenseLength, 4);
    std::memcpy(&response.residual, bytes.data() + vs::kResponseResidual, 4);
    response.status = bytes[vs::kResponseStatus];
    response.response = bytes[vs::kResponseCode];
    const size_t room = bytes.size() - vs::kResponseSense;
    const size_t sense = std::min<size_t>(response.sense_length, room);
    response.sense.assign(bytes.begin() + vs::kResponseSense,
                          bytes.begin() + vs::kResponseSense + sense);
    response.used_length = element.length;
    if (copy_in_data_ && frame.data_in_length > 0) {
      response.data_in.resize(frame.data_in_length);
      KVMINI_CHECK(memory_.Read(frame.data, response.data_in).ok(), "reading data-in");
    }
    free_frames_[request_queue].push_back(frame_index);
    results.emplace_back(static_cast<uint16_t>(element.id), std::move(response));
  }
  return results;
}

size_t ScsiDriver::in_flight(uint16_t request_queue) const {
  return frames_[request_queue].size() - free_frames_[request_queue].size();
}

void ScsiDriver::Kick(uint16_t request_queue) { driver_.Kick(queue_index(request_queue)); }

absl::StatusOr<ScsiResponse> ScsiDriver::Run(const ScsiCommand& command, uint16_t request_queue,
                                             absl::Duration timeout) {
  absl::StatusOr<uint16_t> head = Post(request_queue, command);
  if (!head.ok()) return head.status();
  Kick(request_queue);
  std::optional<ScsiResponse> answer;
  const bool finished = driver_.WaitUntil(
      [&] {
        for (auto& [done_head, response] : Collect(request_queue)) {
          if (done_head == *head) answer = std::move(response);
        }
        return answer.has_value();
      },
      timeout);
  if (!finished) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "command with opcode %#x on request queue %u got no answer",
        command.cdb.empty() ? 0 : command.cdb[0], request_queue));
  }
  return std::move(*answer);
}

absl::StatusOr<uint16_t> ScsiDriver::PostControl(std::span<const uint8_t> request,
                                                 uint32_t response_size, bool notification) {
  if (free_control_frames_.empty()) return absl::ResourceExhaustedError("no free control frame");
  const uint32_t frame_index = free_control_frames_.back();
  ControlFrame& frame = control_frames_[frame_index];
  frame.notification = notification;
  KVMINI_CHECK(memory_.Write(frame.request, request).ok(), "writing a control request");
  KVMINI_CHECK(memory_.WriteObject<uint64_t>(frame.response, ~0ull).ok(), "clearing a response");
  const DriverQueue::Buffer buffers[] = {
      {frame.request, static_cast<uint32_t>(request.size()), false},
      {frame.response, response_size, true}};
  std::optional<uint16_t> head = driver_.queue(vs::kControlQueue).Post(buffers, false);
  if (!head) return absl::ResourceExhaustedError("control queue full");
  free_control_frames_.pop_back();
  control_pending_[*head] = static_cast<int>(frame_index);
  return *head;
}

absl::StatusOr<uint16_t> ScsiDriver::PostTaskManagement(uint32_t subtype,
                                                        std::array<uint8_t, 8> lun,
                                                        uint64_t tag) {
  std::array<uint8_t, vs::kTmfRequestSize> request{};
  const uint32_t type = vs::kControlTmf;
  std::memcpy(request.data(), &type, 4);
  std::memcpy(request.data() + vs::kTmfSubtype, &subtype, 4);
  std::copy(lun.begin(), lun.end(), request.begin() + vs::kTmfLun);
  std::memcpy(request.data() + vs::kTmfTag, &tag, 8);
  return PostControl(request, vs::kTmfResponseSize, /*notification=*/false);
}

absl::StatusOr<uint16_t> ScsiDriver::PostNotification(uint32_t type, std::array<uint8_t, 8> lun,
                                                      uint32_t events) {
  std::array<uint8_t, vs::kAnRequestSize> request{};
  std::memcpy(request.data(), &type, 4);
  std::copy(lun.begin(), lun.end(), request.begin() + 4);
  std::memcpy(request.data() + 12, &events, 4);
  return PostControl(request, vs::kAnResponseSize, /*notification=*/true);
}

std::vector<std::pair<uint16_t, ControlResponse>> ScsiDriver::CollectControl() {
  std::vector<std::pair<uint16_t, ControlResponse>> results = std::move(control_answers_);
  control_answers_.clear();
  for (const hw::virtio::UsedElement& element : driver_.queue(vs::kControlQueue).TakeUsed()) {
    KVMINI_CHECK(element.id < control_pending_.size() && control_pending_[element.id] >= 0,
                 "device returned a control head the driver did not post");
    const uint32_t frame_index = control_pending_[element.id];
    control_pending_[element.id] = -1;
    const ControlFrame& frame = control_frames_[frame_index];
    std::array<uint8_t, kControlResponseBytes> bytes{};
    KVMINI_CHECK(memory_.Read(frame.response, bytes).ok(), "reading a control response");
    ControlResponse response;
    if (frame.notification) {
      std::memcpy(&response.event_actual, bytes.data() + vs::kAnResponseEventActual, 4);
      response.response = bytes[vs::kAnResponseCode];
    } else {
      response.response = bytes[0];
    }
    response.used_length = element.length;
    free_control_frames_.push_back(frame_index);
    results.emplace_back(static_cast<uint16_t>(element.id), response);
  }
  return results;
}

absl::StatusOr<ControlResponse> ScsiDriver::WaitControl(uint16_t head, absl::Duration timeout) {
  std::optional<ControlResponse> answer;
  const bool finished = driver_.WaitUntil(
      [&] {
        for (auto& [done_head, response] : CollectControl()) {
          if (done_head == head && !answer) {
            answer = response;
          } else {
            control_answers_.emplace_back(done_head, response);
          }
        }
        return answer.has_value();
      },
      timeout);
  if (!finished) {
    return absl::DeadlineExceededError(
        absl::StrFormat("control request at head %u got no answer", head));
  }
  return *answer;
}

absl::StatusOr<ControlResponse> ScsiDriver::RunTaskManagement(uint32_t subtype,
                                                              std::array<uint8_t, 8> lun,
                                                              uint64_t tag,
                                                              absl::Duration timeout) {
  absl::StatusOr<uint16_t> head = PostTaskManagement(subtype, lun, tag);
  if (!head.ok()) return head.status();
  driver_.Kick(vs::kControlQueue);
  return WaitControl(*head, timeout);
}

absl::StatusOr<ControlResponse> ScsiDriver::RunNotification(uint32_t type,
                                                            std::array<uint8_t, 8> lun,
                                                            uint32_t events) {
  absl::StatusOr<uint16_t> head = PostNotification(type, lun, events);
  if (!head.ok()) return head.status();
  driver_.Kick(vs::kControlQueue);
  return WaitControl(*head, absl::Seconds(10));
}

absl::Status ScsiDriver::PostEventBuffers(int count) {
  for (int i = 0; i < count; ++i) {
    const uint64_t buffer = allocator_.Allocate(vs::kEventInfoSizeBytes, 16);
    const DriverQueue::Buffer event{buffer, vs::kEventInfoSizeBytes, true};
    if (!driver_.queue(vs::kEventQueue).Post(std::span(&event, 1), false)) {
      return absl::ResourceExhaustedError("event queue full");
    }
  }
  driver_.Kick(vs::kEventQueue);
  return absl::OkStatus();
}

}  // namespace kvmini::test

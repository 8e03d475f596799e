#include "tests/harness/blk_driver.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "util/check.h"

namespace kvmini::test {

namespace blk = hw::virtio::blk;

absl::Status BlkDriver::Start(uint64_t wanted, uint16_t queues, uint16_t size) {
  absl::Status negotiated = driver_.Negotiate(wanted | hw::virtio::feature::kVersion1);
  if (!negotiated.ok()) return negotiated;
  frames_.assign(queues, {});
  free_frames_.assign(queues, {});
  pending_.assign(queues, std::vector<int>(size, -1));
  for (uint16_t q = 0; q < queues; ++q) {
    absl::StatusOr<DriverQueue*> queue = driver_.SetupQueue(q, size);
    if (!queue.ok()) return queue.status();
    for (uint32_t i = 0; i < size; ++i) {
      Frame frame;
      frame.header = allocator_.Allocate(16, 16);
      frame.status = allocator_.Allocate(1, 16);
      frame.data = allocator_.Allocate(max_data_, 4096);
      frames_[q].push_back(frame);
      free_frames_[q].push_back(size - 1 - i);
    }
  }
  driver_.DriverOk();
  return absl::OkStatus();
}

bool BlkDriver::event_idx() const {
  return driver_.negotiated() & hw::virtio::feature::kRingEventIdx;
}

absl::StatusOr<uint16_t> BlkDriver::Post(uint16_t queue, const BlkRequest& request) {
  if (free_frames_.at(queue).empty()) return absl::ResourceExhaustedError("no free request frame");
  const bool data_in = request.type == blk::kTypeIn || request.type == blk::kTypeGetId;
  const uint32_t length = data_in ? request.in_length : request.out_data.size();
  if (length > max_data_) return absl::InvalidArgumentError("request data too large for a frame");
  const uint32_t frame_index = free_frames_[queue].back();
  Frame& frame = frames_[queue][frame_index];
  frame.in_length = data_in ? length : 0;
  frame.type = request.type;

  blk::RequestHeader header{request.type, 0, request.sector};
  KVMINI_CHECK(memory_.WriteObject(frame.header, header).ok(), "writing a request header");
  KVMINI_CHECK(memory_.WriteObject<uint8_t>(frame.status, 0xff).ok(), "writing a status byte");
  if (!data_in && length > 0) {
    KVMINI_CHECK(memory_.Write(frame.data, request.out_data).ok(), "writing request data");
  }
  std::vector<DriverQueue::Buffer> buffers{{frame.header, 16, false}};
  const uint32_t segment = request.segment_size != 0 ? request.segment_size : std::max(length, 1u);
  for (uint32_t done = 0; done < length; done += segment) {
    buffers.push_back({frame.data + done, std::min(segment, length - done), data_in});
  }
  buffers.push_back({frame.status, 1, true});
  std::optional<uint16_t> head = driver_.queue(queue).Post(buffers, request.indirect);
  if (!head) return absl::ResourceExhaustedError("virtqueue full");
  free_frames_[queue].pop_back();
  pending_[queue][*head] = static_cast<int>(frame_index);
  return *head;
}

std::vector<std::pair<uint16_t, BlkResult>> BlkDriver::Collect(uint16_t queue) {
  std::vector<std::pair<uint16_t, BlkResult>> results;
  for (const hw::virtio::UsedElement& element : driver_.queue(queue).TakeUsed()) {
    KVMINI_CHECK(element.id < pending_[queue].size() && pending_[queue][element.id] >= 0,
                 "device returned a head the driver did not post");
    const uint32_t frame_index = pending_[queue][element.id];
    pending_[queue][element.id] = -1;
    const Frame& frame = frames_[queue][frame_index];
    BlkResult result;
    result.status = *memory_.ReadObject<uint8_t>(frame.status);
    result.used_length = element.length;
    if (copy_in_data_ && frame.in_length > 0) {
      result.in_data.resize(frame.in_length);
      KVMINI_CHECK(memory_.Read(frame.data, result.in_data).ok(), "reading request data");
    }
    free_frames_[queue].push_back(frame_index);
    results.emplace_back(static_cast<uint16_t>(element.id), std::move(result));
  }
  return results;
}

absl::StatusOr<BlkResult> BlkDriver::Run(uint16_t queue, const BlkRequest& request,
                                         VirtioDriver::KickVia via, absl::Duration timeout) {
  absl::StatusOr<uint16_t> head = Post(queue, request);
  if (!head.ok()) return head.status();
  driver_.Kick(queue, via);
  std::optional<BlkResult> answer;
  bool finished = driver_.WaitUntil(
      [&] {
        for (auto& [done_head, result] : Collect(queue)) {
          if (done_head == *head) answer = std::move(result);
        }
        return answer.has_value();
      },
      timeout);
  if (!finished) {
    return absl::DeadlineExceededError(
        absl::StrFormat("request type %u on queue %u got no answer", request.type, queue));
  }
  return std::move(*answer);
}

}  // namespace kvmini::test

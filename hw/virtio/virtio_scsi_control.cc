// VirtioScsi's control queue: task management functions and asynchronous
// notification requests.
//
// A TMF that affects commands is answered from the disk's callback, which
// runs after those commands' completions; before the answer is pushed,
// every request queue publishes what it has pushed, so the driver finds the
// commands completed (ABORTED or not) by the time it reads the TMF answer,
// as the specification promises and Linux's virtscsi_tmf relies on.
#include <array>

#include "absl/strings/str_format.h"
#include "hw/scsi/iovec_util.h"
#include "hw/virtio/virtio_scsi.h"
#include "hw/virtio/virtio_scsi_buffers.h"

namespace kvmini::hw::virtio {

using namespace virtio_scsi;

void VirtioScsi::HandleControl(Virtqueue& queue, const DescriptorChain& chain) {
  ControlRequest& control = controls_[chain.head];
  if (control.busy) {
    queue.Break(absl::StrFormat("descriptor %u made available again while its control request "
                                "is in flight",
                                chain.head));
    queue.DropPopped();
    return;
  }
  std::array<uint8_t, kTmfRequestSize> request{};
  const uint64_t readable = chain.defect.empty() ? chain.TotalLength(false) : 0;
  if (chain.defect.empty()) chain.CopyFromReadable(0, request);
  const std::optional<uint32_t> type =
      readable >= 4 ? std::optional(LoadLittleEndian<uint32_t>(request, 0)) : std::nullopt;
  const bool notification = type == kControlAnQuery || type == kControlAnSubscribe;
  // Where the response goes depends on the type; anything not a well-formed
  // AN request is answered in a TMF's one-byte layout.
  const uint32_t response_size = notification ? kAnResponseSize : kTmfResponseSize;
  if (!WritablePrefixInRam(chain, response_size)) {
    queue.Break(absl::StrFormat("control request at descriptor %u has no room in RAM for its "
                                "%u-byte response",
                                chain.head, response_size));
    queue.DropPopped();
    return;
  }
  control.busy = true;
  control.head = chain.head;
  control.response = chain.Iovecs(/*writable=*/true, 0, chain.TotalLength(true) - response_size);
  control.submitting = true;
  if (!chain.defect.empty() || !type) {
    LogGuestError("control request at descriptor ", chain.head, ": ",
                  chain.defect.empty() ? "shorter than its 4-byte type" : chain.defect);
    const uint8_t failure = response::kFailure;
    AnswerControl(control, std::span(&failure, 1));
  } else if (notification) {
    // No events to report: event_actual 0, as QEMU answers.
    std::array<uint8_t, kAnResponseSize> answer{};
    answer[kAnResponseCode] = readable >= kAnRequestSize ? response::kOk : response::kFailure;
    AnswerControl(control, answer);
  } else if (*type == kControlTmf && readable >= kTmfRequestSize) {
    StartTaskManagement(control, request);
  } else {
    LogGuestError("control request at descriptor ", chain.head, ": type ", *type, " with ",
                  readable, " bytes is unknown or too short");
    const uint8_t failure = response::kFailure;
    AnswerControl(control, std::span(&failure, 1));
  }
  control.submitting = false;
}

void VirtioScsi::StartTaskManagement(ControlRequest& control,
                                     std::span<const uint8_t, kTmfRequestSize> request) {
  const uint32_t subtype = LoadLittleEndian<uint32_t>(request, kTmfSubtype);
  const uint64_t tag = LoadLittleEndian<uint64_t>(request, kTmfTag);
  const auto answer = [this, &control](uint8_t code) {
    task_management_.fetch_add(1, std::memory_order_relaxed);
    AnswerControl(control, std::span(&code, 1));
  };
  const auto answer_when_done = [answer] { answer(response::kFunctionComplete); };

  const std::optional<scsi::LunAddress> address =
      scsi::DecodeVirtioLun(std::span<const uint8_t, 8>(request.data() + kTmfLun, 8));
  if (!address || address->target != 0) return answer(response::kBadTarget);
  // Commands the driver made available before sending the TMF belong to the
  // task set it manages, even if their queues' kicks are still pending.
  ServeRequestQueues();
  if (subtype == tmf::kITNexusReset) {
    // Every task of every LUN behind the target: the one disk.
    return disk_->AbortAllTasks(answer_when_done);
  }
  scsi::ScsiDisk* disk = target_.Find(*address);
  switch (subtype) {
    case tmf::kAbortTask:
    case tmf::kAbortTaskSet:
    case tmf::kClearTaskSet:
    case tmf::kLogicalUnitReset:
    case tmf::kQueryTask:
    case tmf::kQueryTaskSet:
      if (disk == nullptr) return answer(response::kIncorrectLun);
      break;
    default:  // CLEAR ACA (we never enter ACA) and subtypes we do not know
      return answer(response::kFunctionRejected);
  }
  switch (subtype) {
    case tmf::kAbortTask:
      // Not finding the task is FUNCTION COMPLETE too (SAM-5): it is gone.
      return disk->AbortTask(tag, [answer_when_done](bool) { answer_when_done(); });
    case tmf::kAbortTaskSet:
    case tmf::kClearTaskSet:
      return disk->AbortAllTasks(answer_when_done);
    case tmf::kLogicalUnitReset:
      return disk->Reset(answer_when_done);
    case tmf::kQueryTask:
      return answer(disk->HasTask(tag) ? response::kFunctionSucceeded
                                       : response::kFunctionComplete);
    case tmf::kQueryTaskSet:
      return answer(disk->in_flight() > 0 ? response::kFunctionSucceeded
                                          : response::kFunctionComplete);
  }
}

void VirtioScsi::AnswerControl(ControlRequest& control, std::span<const uint8_t> response) {
  scsi::CopyToIovecs(control.response, response);
  PublishRequestQueues();
  control.busy = false;
  Virtqueue& queue = *queues_[kControlQueue];
  const uint32_t written = static_cast<uint32_t>(response.size());
  if (control.submitting) {
    queue.Push(control.head, written);  // the pass publishes it
  } else {
    queue.PushAndPublishSoon(control.head, written);
  }
}

void VirtioScsi::ServeRequestQueues() {
  for (size_t i = kFirstRequestQueue; i < queues_.size(); ++i) ProcessQueue(*queues_[i]);
}

void VirtioScsi::PublishRequestQueues() {
  for (size_t i = kFirstRequestQueue; i < queues_.size(); ++i) queues_[i]->Publish();
}

}  // namespace kvmini::hw::virtio

#include "hw/scsi/testing/scsi_fuzz.h"

#include <algorithm>
#include <cerrno>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "hw/scsi/scsi_disk.h"
#include "hw/scsi/scsi_target.h"
#include "hw/scsi/testing/memory_block_backend.h"
#include "util/aio_context.h"
#include "util/check.h"

namespace kvmini::hw::scsi {
namespace {

constexpr uint8_t kGuardByte = 0xa5;
constexpr size_t kGuardLength = 16;
constexpr size_t kMaxBuffer = 8192;
constexpr size_t kMaxRequests = 64;

// Hands out input bytes; zeroes once the input is used up.
class InputReader {
 public:
  explicit InputReader(std::span<const uint8_t> input) : input_(input) {}
  bool empty() const { return at_ >= input_.size(); }
  uint8_t Byte() { return at_ < input_.size() ? input_[at_++] : 0; }
  uint16_t Word() {
    const uint8_t high = Byte();  // the operands of | are unsequenced
    return static_cast<uint16_t>(high << 8 | Byte());
  }
  std::vector<uint8_t> Bytes(size_t count) {
    const size_t available = std::min(count, input_.size() - std::min(at_, input_.size()));
    std::vector<uint8_t> bytes(count, 0);
    std::copy_n(input_.begin() + at_, available, bytes.begin());
    at_ += available;
    return bytes;
  }

 private:
  std::span<const uint8_t> input_;
  size_t at_ = 0;
};

// One request's buffers and what became of it. Data-in is one allocation
// cut into up to three iovecs, each followed by guard bytes.
struct Exchange {
  std::vector<uint8_t> data_out;
  std::vector<uint8_t> data_in;
  std::vector<iovec> data_in_iovecs;
  uint64_t data_in_capacity = 0;
  uint32_t sense_capacity = 0;
  int completions = 0;
  ScsiResult result;
};

util::AioContext& FuzzContext() {
  static util::AioContext* context = [] {
    auto created = util::AioContext::Create("scsi-fuzz");
    KVMINI_CHECK(created.ok(), "cannot create the fuzzing AioContext");
    return created->release();
  }();
  return *context;
}

void CutDataIn(Exchange& exchange, uint64_t capacity, uint8_t shape) {
  const size_t pieces = capacity == 0 ? 0 : 1 + shape % 3;
  exchange.data_in.assign(capacity + pieces * kGuardLength, kGuardByte);
  exchange.data_in_capacity = capacity;
  uint64_t left = capacity;
  uint8_t* at = exchange.data_in.data();
  for (size_t i = 0; i < pieces; ++i) {
    const uint64_t length = i + 1 == pieces ? left : left / 2;
    exchange.data_in_iovecs.push_back({at, length});
    at += length + kGuardLength;
    left -= length;
  }
}

void CheckGuards(const Exchange& exchange) {
  for (const iovec& piece : exchange.data_in_iovecs) {
    const auto* guard = static_cast<const uint8_t*>(piece.iov_base) + piece.iov_len;
    for (size_t i = 0; i < kGuardLength; ++i) {
      KVMINI_CHECK(guard[i] == kGuardByte, "data-in written past its buffer");
    }
  }
}

void CheckResult(const Exchange& exchange) {
  const ScsiResult& result = exchange.result;
  KVMINI_CHECK(exchange.completions == 1, "request not completed exactly once");
  KVMINI_CHECK(result.data_in_length <= exchange.data_in_capacity, "data-in beyond the buffer");
  KVMINI_CHECK(result.sense_length <= std::min<uint64_t>(exchange.sense_capacity, 18),
               "sense beyond the sense buffer");
  if (exchange.data_in_capacity > 0) {
    KVMINI_CHECK(result.residual == exchange.data_in_capacity - result.data_in_length,
                 "data-in residual does not add up");
  } else {
    KVMINI_CHECK(result.residual <= exchange.data_out.size(), "data-out residual too large");
  }
  if (result.response != ScsiResult::Response::kCompleted) {
    KVMINI_CHECK(result.data_in_length == 0 && result.sense_length == 0,
                 "an overrun or aborted request transferred data");
  }
  if (result.status == status::kCheckCondition) {
    KVMINI_CHECK(result.data_in_length == 0, "CHECK CONDITION with data");
    KVMINI_CHECK(result.sense_length == std::min<uint64_t>(exchange.sense_capacity, 18),
                 "CHECK CONDITION without its sense");
    KVMINI_CHECK(result.sense_length == 0 || result.sense[0] == 0x70, "sense not fixed format");
  } else {
    KVMINI_CHECK(result.sense_length == 0, "sense without CHECK CONDITION");
  }
  CheckGuards(exchange);
}

MemoryBlockBackend::Operation OperationToFail(uint8_t choice) {
  switch (choice % 5) {
    case 0:
      return MemoryBlockBackend::Operation::kRead;
    case 1:
      return MemoryBlockBackend::Operation::kWrite;
    case 2:
      return MemoryBlockBackend::Operation::kFlush;
    case 3:
      return MemoryBlockBackend::Operation::kDiscard;
    default:
      return MemoryBlockBackend::Operation::kWriteZeroes;
  }
}

}  // namespace

int ScsiFuzzOneInput(const uint8_t* data, size_t size) {
  InputReader input({data, size});
  util::AioContext& context = FuzzContext();
  const uint8_t setup = input.Byte();

  ScsiDiskOptions options;
  options.block_size = (setup & 0x01) ? 4096 : 512;
  options.unmap = !(setup & 0x04);
  if (setup & 0x08) options.serial = "FUZZ-SERIAL";
  options.write_cache = !(setup & 0x10);
  options.max_transfer_bytes = 16 * options.block_size;
  options.max_unmap_bytes = 32 * options.block_size;
  MemoryBlockBackend backend(context, 64 * options.block_size, setup & 0x02);
  for (size_t i = 0; i < backend.bytes().size(); ++i) backend.bytes()[i] = static_cast<uint8_t>(i);
  auto disk = ScsiDisk::Create(backend, options);
  KVMINI_CHECK(disk.ok(), "fuzzing disk options rejected");
  ScsiTarget target;
  KVMINI_CHECK(target.AttachLun(0, **disk).ok(), "cannot attach LUN 0");

  std::deque<Exchange> exchanges;
  int management_calls = 0;
  int management_done = 0;
  const auto management_finished = [&management_done](auto&&...) { ++management_done; };

  while (!input.empty() && exchanges.size() < kMaxRequests) {
    const uint8_t flags = input.Byte();
    std::array<uint8_t, 8> lun = EncodeVirtioLun(0, 0);
    if ((flags & 0x03) == 1) lun = EncodeVirtioLun(0, 1 + input.Byte());
    if ((flags & 0x03) == 2) lun = {1, 0, 0xc1, 0x01, 0, 0, 0, 0};
    if ((flags & 0x03) == 3) {
      const std::vector<uint8_t> raw = input.Bytes(8);
      std::copy(raw.begin(), raw.end(), lun.begin());
    }
    const std::vector<uint8_t> cdb = input.Bytes(input.Byte() % (ScsiRequest::kMaxCdbLength + 1));
    const size_t out_length = input.Word() % kMaxBuffer;
    const size_t in_capacity = (flags & 0x20) ? 0 : input.Word() % kMaxBuffer;
    Exchange& exchange = exchanges.emplace_back();
    exchange.data_out = input.Bytes(out_length);
    CutDataIn(exchange, in_capacity, input.Byte());
    exchange.sense_capacity = input.Byte();
    if (flags & 0x80)
      backend.FailNext(OperationToFail(input.Byte()), input.Byte() & 1 ? EIO : ENOSPC);

    const std::optional<LunAddress> address = DecodeVirtioLun(lun);
    if (!address || address->target != 0) {
      exchanges.pop_back();  // the transport answers BAD_TARGET itself
      continue;
    }
    ScsiRequest request;
    request.tag = exchanges.size() % 4;  // repeated tags exercise ABORT TASK
    request.SetCdb(cdb);
    request.sense_capacity = exchange.sense_capacity;
    request.data_in = exchange.data_in_iovecs;
    if (!exchange.data_out.empty()) {
      request.data_out.push_back({exchange.data_out.data(), exchange.data_out.size()});
    }
    target.Submit(*address, std::move(request), [&exchange](const ScsiResult& result) {
      ++exchange.completions;
      exchange.result = result;
    });
    if (flags & 0x04) {
      ++management_calls;
      (*disk)->AbortAllTasks(management_finished);
    }
    if (flags & 0x08) {
      ++management_calls;
      (*disk)->AbortTask(exchanges.size() % 4, management_finished);
    }
    if (flags & 0x10) {
      ++management_calls;
      (*disk)->Reset(management_finished);
    }
    if (flags & 0x40) {
      while (context.Poll(false)) {
      }
    }
  }
  while (context.Poll(false)) {
  }
  KVMINI_CHECK(backend.in_flight() == 0 && (*disk)->in_flight() == 0, "a request never completed");
  KVMINI_CHECK(management_done == management_calls, "task management not answered exactly once");
  for (const Exchange& exchange : exchanges) CheckResult(exchange);
  return 0;
}

}  // namespace kvmini::hw::scsi

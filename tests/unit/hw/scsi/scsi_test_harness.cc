#include "scsi_test_harness.h"

namespace kvmini::hw::scsi::testing {
namespace {

std::unique_ptr<util::AioContext> NewContext() {
  auto context = util::AioContext::Create("scsi-test");
  EXPECT_TRUE(context.ok()) << context.status();
  return std::move(*context);
}

}  // namespace

ScsiHarness::ScsiHarness(const ScsiDiskOptions& options, uint64_t size_bytes, bool read_only)
    : context_(NewContext()) {
  auto memory = std::make_unique<MemoryBlockBackend>(*context_, size_bytes, read_only);
  memory_ = memory.get();
  backend_ = std::move(memory);
  Attach(options);
}

ScsiHarness::ScsiHarness(std::unique_ptr<util::AioContext> context,
                         std::unique_ptr<block::BlockBackend> backend,
                         const ScsiDiskOptions& options)
    : context_(std::move(context)), backend_(std::move(backend)) {
  Attach(options);
}

void ScsiHarness::Attach(const ScsiDiskOptions& options) {
  auto disk = ScsiDisk::Create(*backend_, options);
  EXPECT_TRUE(disk.ok()) << disk.status();
  disk_ = std::move(*disk);
  EXPECT_TRUE(target_.AttachLun(0, *disk_).ok());
}

ScsiHarness::~ScsiHarness() {
  Settle();
  target_.DetachLun(0);
  disk_.reset();
  backend_.reset();
}

void ScsiHarness::Start(Exchange& exchange, std::vector<uint8_t> cdb, const RunOptions& options) {
  exchange.data_in.assign(options.data_in_capacity, 0xee);
  ScsiRequest request;
  request.tag = options.tag;
  request.SetCdb(cdb);
  request.sense_capacity = options.sense_capacity;
  if (!exchange.data_in.empty()) {
    request.data_in.push_back({exchange.data_in.data(), exchange.data_in.size()});
  }
  if (!options.data_out.empty()) {
    auto& buffer =
        data_out_buffers_.emplace_back(std::make_unique<std::vector<uint8_t>>(options.data_out));
    request.data_out.push_back({buffer->data(), buffer->size()});
  }
  const std::optional<LunAddress> address = DecodeVirtioLun(options.lun);
  ASSERT_TRUE(address.has_value());
  target_.Submit(*address, std::move(request), [&exchange](const ScsiResult& result) {
    ++exchange.completions;
    exchange.result = result;
  });
}

Exchange ScsiHarness::Run(std::vector<uint8_t> cdb, const RunOptions& options) {
  Exchange exchange;
  Start(exchange, std::move(cdb), options);
  Settle();
  EXPECT_EQ(exchange.completions, 1);
  return exchange;
}

void ScsiHarness::Settle() {
  const auto waiting = [this] {
    return backend_->in_flight() > (memory_ != nullptr ? memory_->held() : 0);
  };
  // Real backends complete from the kernel or a worker thread: block in
  // Poll until they do, with a timer so a lost completion fails, not hangs.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  const auto timer = context_->AddTimer(deadline, [] {});
  while (waiting() && absl::Now() < deadline) context_->Poll(true);
  context_->CancelTimer(timer);
  EXPECT_FALSE(waiting()) << "backend operations still in flight after 60 s";
  while (context_->Poll(false)) {
  }
}

}  // namespace kvmini::hw::scsi::testing

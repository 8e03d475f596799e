// Data integrity against a shadow model: thousands of random reads, writes,
// discards, write-zeroes and flushes at random offsets and sizes, up to 128
// in flight, on every engine, buffered and O_DIRECT. Every operation must
// complete exactly once, never inside the call that started it, and every
// byte read (and the file at the end) must match the model.
//
// Operations in flight never overlap a write-like one, so the model is
// exact: what a read returns is what the model held when it was issued.
#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "tests/unit/block/block_test_support.h"
#include "util/check.h"

namespace kvmini::block {
namespace {

constexpr size_t kImageSize = 16 << 20;
constexpr int kMemoryOperations = 6000;
// Fewer on disk: its discards, zeroing and flushes reach a slow device.
constexpr int kDiskOperations = 3000;
constexpr size_t kMaxInFlight = 128;

struct ModelConfig {
  const char* name;
  AioEngine engine;
  bool direct;
  bool nowait;
  bool in_memory;
};

enum class Op { kRead, kWrite, kDiscard, kWriteZeroes, kFlush };

struct Pending {
  Op op;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool may_unmap = false;
  // Owns the data buffer; `buffers` point into it.
  std::unique_ptr<uint8_t, decltype(&std::free)> memory{nullptr, &std::free};
  std::vector<iovec> buffers;
  bool mutates() const { return op != Op::kRead && op != Op::kFlush; }
  bool overlaps(const Pending& other) const {
    if (op == Op::kFlush || other.op == Op::kFlush) return false;
    return offset < other.offset + other.length && other.offset < offset + length;
  }
};

class ShadowModelTest : public testing::MainLoopTest,
                        public ::testing::WithParamInterface<ModelConfig> {};

// Splits `length` bytes of `memory` into 1-8 buffers. With `aligned`, every
// piece starts and ends on `alignment`; otherwise the cuts fall anywhere.
std::vector<iovec> SplitIntoBuffers(std::mt19937& random, uint8_t* memory, uint64_t length,
                                    bool aligned, uint32_t alignment) {
  std::vector<uint64_t> cuts = {0, length};
  int extra = static_cast<int>(random() % 8);
  uint64_t unit = aligned ? alignment : 1;
  for (int i = 0; i < extra && length / unit > 1; ++i) {
    cuts.push_back(random() % (length / unit) * unit);
  }
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<iovec> buffers;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    buffers.push_back(iovec{memory + cuts[i], cuts[i + 1] - cuts[i]});
  }
  return buffers;
}

TEST_P(ShadowModelTest, RandomOperationsMatchTheModel) {
  const ModelConfig& config = GetParam();
  testing::ScratchDir scratch(config.in_memory ? testing::MemoryDirectory()
                                               : testing::DiskDirectory());
  std::string path = scratch.File("model.img");
  std::vector<uint8_t> model = testing::MakeImage(path, kImageSize, 11);

  BlockOptions options;
  options.engine = config.engine;
  options.direct = config.direct;
  options.nowait = config.nowait;
  auto opened = BlockBackend::Open(path, options, main());
  ASSERT_TRUE(opened.ok()) << opened.status();
  BlockBackend& backend = **opened;
  // Sizes and offsets in multiples of the device block, as a guest sends.
  const uint32_t unit = config.direct ? backend.alignment() : 1;
  ASSERT_GE(unit, 1u);

  std::mt19937 random(20240601);
  const int operations = config.in_memory ? kMemoryOperations : kDiskOperations;
  std::vector<std::unique_ptr<Pending>> slots(operations);
  std::vector<int> completions(operations, 0);
  std::set<int> running;  // ids issued and not completed
  int mismatches = 0;
  int failures = 0;
  int reentrant = 0;
  bool issuing = false;

  auto random_extent = [&](uint64_t max_length, Pending& pending) {
    uint64_t units = std::max<uint64_t>(1, random() % (max_length / unit) + 1);
    pending.length = units * unit;
    pending.offset = random() % ((kImageSize - pending.length) / unit + 1) * unit;
  };

  for (int id = 0; id < operations; ++id) {
    auto pending = std::make_unique<Pending>();
    uint32_t pick = random() % 100;
    pending->op = pick < 40   ? Op::kRead
                  : pick < 75 ? Op::kWrite
                  : pick < 87 ? Op::kDiscard
                  : pick < 99 ? Op::kWriteZeroes
                              : Op::kFlush;
    if (pending->op == Op::kRead || pending->op == Op::kWrite) {
      random_extent(config.direct ? 128 << 10 : 64 << 10, *pending);
    } else if (pending->op != Op::kFlush) {
      random_extent(256 << 10, *pending);
      pending->may_unmap = random() % 2 == 0;
    }
    // Wait until it conflicts with nothing in flight (and there is room).
    auto conflicts = [&] {
      if (running.size() >= kMaxInFlight) return true;
      return std::any_of(running.begin(), running.end(), [&](int other) {
        const Pending& busy = *slots[other];
        return (busy.mutates() || pending->mutates()) && busy.overlaps(*pending);
      });
    };
    while (conflicts()) main().Poll(/*blocking=*/true);

    if (pending->op == Op::kRead || pending->op == Op::kWrite) {
      // With O_DIRECT a quarter of the buffers are misaligned (bounced).
      bool aligned = !config.direct || random() % 4 != 0;
      size_t skew = aligned ? 0 : 1 + random() % 7;
      void* memory = nullptr;
      KVMINI_CHECK(posix_memalign(&memory, 4096, pending->length + skew) == 0, "out of memory");
      pending->memory.reset(static_cast<uint8_t*>(memory));
      uint8_t* data = pending->memory.get() + skew;
      if (pending->op == Op::kWrite) {
        std::vector<uint8_t> bytes = testing::RandomBytes(random, pending->length);
        std::memcpy(data, bytes.data(), bytes.size());
      } else {
        std::memset(data, 0xee, pending->length);
      }
      pending->buffers = SplitIntoBuffers(random, data, pending->length, aligned, unit);
    }

    Pending& op = *pending;
    slots[id] = std::move(pending);
    running.insert(id);
    auto done = [&, id](int status) {
      if (issuing) ++reentrant;
      ++completions[id];
      running.erase(id);
      const Pending& finished = *slots[id];
      if (status != 0) {
        ++failures;
        ADD_FAILURE() << "operation " << id << " failed: " << status;
        return;
      }
      uint8_t* data = finished.buffers.empty()
                          ? nullptr
                          : static_cast<uint8_t*>(finished.buffers.front().iov_base);
      switch (finished.op) {
        case Op::kRead:
          if (!std::equal(data, data + finished.length, model.begin() + finished.offset)) {
            ++mismatches;
          }
          break;
        case Op::kWrite:
          std::copy(data, data + finished.length, model.begin() + finished.offset);
          break;
        case Op::kDiscard:
        case Op::kWriteZeroes:
          std::fill(model.begin() + finished.offset,
                    model.begin() + finished.offset + finished.length, 0);
          break;
        case Op::kFlush:
          break;
      }
      slots[id].reset();
    };
    issuing = true;
    switch (op.op) {
      case Op::kRead:
        backend.Read(op.offset, op.buffers, done);
        break;
      case Op::kWrite:
        backend.Write(op.offset, op.buffers, done);
        break;
      case Op::kDiscard:
        backend.Discard(op.offset, op.length, done);
        break;
      case Op::kWriteZeroes:
        backend.WriteZeroes(op.offset, op.length, op.may_unmap, done);
        break;
      case Op::kFlush:
        backend.Flush(done);
        break;
    }
    issuing = false;
    if (failures > 0) break;
  }
  backend.Drain();
  EXPECT_EQ(backend.in_flight(), 0u);
  EXPECT_TRUE(running.empty());
  EXPECT_EQ(reentrant, 0) << "completions ran inside the call that started them";
  EXPECT_EQ(mismatches, 0);
  for (int id = 0; id < operations; ++id) ASSERT_EQ(completions[id], 1) << "operation " << id;
  opened->reset();
  EXPECT_TRUE(testing::ReadWholeFile(path) == model) << "file differs from the model";
}

INSTANTIATE_TEST_SUITE_P(
    Engines, ShadowModelTest,
    ::testing::Values(
        ModelConfig{"IoUringNowaitMemory", AioEngine::kIoUring, false, true, true},
        ModelConfig{"IoUringNowaitDisk", AioEngine::kIoUring, false, true, false},
        ModelConfig{"IoUringDisk", AioEngine::kIoUring, false, false, false},
        ModelConfig{"IoUringDirect", AioEngine::kIoUring, true, true, false},
        ModelConfig{"ThreadsMemory", AioEngine::kThreads, false, false, true},
        ModelConfig{"ThreadsDirect", AioEngine::kThreads, true, false, false}),
    [](const ::testing::TestParamInfo<ModelConfig>& info) { return info.param.name; });

}  // namespace
}  // namespace kvmini::block

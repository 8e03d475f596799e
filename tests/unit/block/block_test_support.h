// Helpers shared by the block/ tests: scratch directories on the right kind
// of file system, image files with known content, a main loop per test, and
// running a loop until something has happened (or a deadline passed).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/time/time.h"
#include "block/block_backend.h"
#include "gtest/gtest.h"
#include "util/aio_context.h"

namespace kvmini::block::testing {

// A fresh directory, removed with its contents when this goes away.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& parent);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A directory on a disk file system, where O_DIRECT works: the working
// directory (ctest runs tests inside the build tree) unless
// KVMINI_BLOCK_TEST_DISK_DIR names another. Fails the test if it is tmpfs.
std::string DiskDirectory();
// /dev/shm: page-cache-only files, the RWF_NOWAIT fast path's best case.
inline std::string MemoryDirectory() { return "/dev/shm"; }

// Creates `path`, `size` bytes of pseudo-random content, and returns it.
std::vector<uint8_t> MakeImage(const std::string& path, size_t size, uint32_t seed);
std::vector<uint8_t> ReadWholeFile(const std::string& path);
std::vector<uint8_t> RandomBytes(std::mt19937& random, size_t size);

// Polls `context` from the calling thread until `done()` or the deadline;
// returns done().
bool PollUntil(util::AioContext& context, absl::FunctionRef<bool()> done,
               absl::Duration timeout = absl::Seconds(60));

// The outcome of one operation as its completion reported it.
struct Outcome {
  int calls = 0;
  int status = 1;  // not a possible status: 0 or -errno
};
BlockBackend::Completion Record(Outcome& outcome);

// Runs one operation to completion on a backend attached to `context`,
// polled from this thread; returns its status.
int ReadNow(BlockBackend& backend, util::AioContext& context, uint64_t offset, void* data,
            size_t length);
int WriteNow(BlockBackend& backend, util::AioContext& context, uint64_t offset,
             const void* data, size_t length);

// A test with the process's main loop, created for each test.
class MainLoopTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override { main_.reset(); }
  util::AioContext& main() { return *main_; }

 private:
  std::unique_ptr<util::AioContext> main_;
};

}  // namespace kvmini::block::testing

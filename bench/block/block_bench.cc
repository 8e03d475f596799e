// BlockBackend throughput and latency, in the shapes a guest disk sees:
//   randread  4 KiB at queue depth 1 and 32
//   randwrite 4 KiB at queue depth 32
//   seqread 128 KiB at queue depth 8
// on an image in /dev/shm (buffered, inline fast path on and off) and one on
// disk (O_DIRECT, so the device is really involved). Each case runs for a
// fixed time on the main loop; the JSON counters are iops, lat_mean_us,
// MiB_per_s and cpu_us_per_io (all threads of the process, io_uring's
// kernel workers included: the figure least disturbed by other load). bench/block/compare-fio.sh runs fio --ioengine=io_uring on the
// same files with the same parameters and prints the ratios.
//
// Flags besides Google Benchmark's: --shm_image=PATH --disk_image=PATH
// (created, filled with random bytes, if missing or too small),
// --image_mib=N (default 256), --seconds=S per case (default 1.5),
// --poll_max_ns=N: the main loop's adaptive polling cap (0: off; default
// AioContext's).
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "block/block_backend.h"
#include "util/aio_context.h"

namespace {

using kvmini::block::AioEngine;
using kvmini::block::BlockBackend;
using kvmini::block::BlockOptions;
using kvmini::util::AioContext;
using Clock = std::chrono::steady_clock;

struct Settings {
  std::string shm_image = "/dev/shm/kvmini-block-bench.img";
  std::string disk_image = "/var/tmp/kvmini-block-bench.img";
  uint64_t image_bytes = 256ull << 20;
  double seconds = 1.5;
};
Settings settings;
AioContext* main_context = nullptr;

struct Workload {
  const char* name;
  bool write;
  bool sequential;
  size_t block_bytes;
  int depth;
};

constexpr Workload kWorkloads[] = {
    {"randread_4k_qd1", false, false, 4096, 1},
    {"randread_4k_qd32", false, false, 4096, 32},
    {"randwrite_4k_qd32", true, false, 4096, 32},
    {"seqread_128k_qd8", false, true, 128 << 10, 8},
};

// Makes sure `path` exists with at least image_bytes of non-zero data (a
// sparse or zero file would make reads of holes look cheap).
bool PrepareImage(const std::string& path) {
  struct stat info {};
  if (stat(path.c_str(), &info) == 0 && static_cast<uint64_t>(info.st_size) >= settings.image_bytes) {
    return true;
  }
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::fprintf(stderr, "block_bench: cannot create %s: %s\n", path.c_str(), strerror(errno));
    return false;
  }
  std::mt19937_64 random(1);
  std::vector<uint64_t> chunk((1 << 20) / sizeof(uint64_t));
  for (uint64_t done = 0; done < settings.image_bytes; done += 1 << 20) {
    for (uint64_t& word : chunk) word = random();
    if (pwrite(fd, chunk.data(), 1 << 20, static_cast<off_t>(done)) != 1 << 20) {
      std::fprintf(stderr, "block_bench: writing %s: %s\n", path.c_str(), strerror(errno));
      close(fd);
      return false;
    }
  }
  fsync(fd);
  close(fd);
  return true;
}

double ProcessCpuSeconds() {
  rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& value) { return value.tv_sec + value.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Keeps `depth` operations in flight until the time is up; every
// completion issues the next one (as a guest with a full queue does).
class Runner {
 public:
  Runner(BlockBackend& backend, const Workload& workload)
      : backend_(backend), workload_(workload), slots_(workload.depth) {
    blocks_ = backend.size_bytes() / workload.block_bytes;
    for (Slot& slot : slots_) {
      void* memory = nullptr;
      if (posix_memalign(&memory, 4096, workload.block_bytes) != 0) std::abort();
      std::memset(memory, 0x5a, workload.block_bytes);
      slot.buffer.reset(static_cast<uint8_t*>(memory));
    }
  }

  void Run(double seconds) {
    cpu_start_ = ProcessCpuSeconds();
    start_ = Clock::now();
    deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(seconds));
    for (size_t i = 0; i < slots_.size(); ++i) Issue(i);
    while (outstanding_ > 0) main_context->Poll(/*blocking=*/true);
    end_ = Clock::now();
    cpu_end_ = ProcessCpuSeconds();
  }

  double cpu_us_per_io() const {
    return completed_ == 0 ? 0 : (cpu_end_ - cpu_start_) * 1e6 / completed_;
  }

  uint64_t completed() const { return completed_; }
  uint64_t errors() const { return errors_; }
  double elapsed_seconds() const { return std::chrono::duration<double>(end_ - start_).count(); }
  double mean_latency_us() const {
    return completed_ == 0 ? 0 : static_cast<double>(latency_ns_) / completed_ / 1000.0;
  }

 private:
  struct Slot {
    std::unique_ptr<uint8_t, decltype(&std::free)> buffer{nullptr, &std::free};
    Clock::time_point issued;
  };

  uint64_t NextOffset() {
    uint64_t block;
    if (workload_.sequential) {
      block = next_block_++ % blocks_;
    } else {
      block = random_() % blocks_;
    }
    return block * workload_.block_bytes;
  }

  void Issue(size_t index) {
    Slot& slot = slots_[index];
    ++outstanding_;
    slot.issued = Clock::now();
    std::vector<iovec> buffers = {iovec{slot.buffer.get(), workload_.block_bytes}};
    auto done = [this, index](int status) { Completed(index, status); };
    if (workload_.write) {
      backend_.Write(NextOffset(), std::move(buffers), done);
    } else {
      backend_.Read(NextOffset(), std::move(buffers), done);
    }
  }

  void Completed(size_t index, int status) {
    Clock::time_point now = Clock::now();
    --outstanding_;
    ++completed_;
    if (status != 0) ++errors_;
    latency_ns_ += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - slots_[index].issued).count());
    if (now < deadline_) Issue(index);
  }

  BlockBackend& backend_;
  const Workload& workload_;
  std::vector<Slot> slots_;
  uint64_t blocks_ = 1;
  uint64_t next_block_ = 0;
  std::mt19937_64 random_{42};
  int outstanding_ = 0;
  uint64_t completed_ = 0;
  uint64_t errors_ = 0;
  uint64_t latency_ns_ = 0;
  Clock::time_point start_, deadline_, end_;
  double cpu_start_ = 0, cpu_end_ = 0;
};

void RunCase(benchmark::State& state, const Workload& workload, const std::string& path,
             BlockOptions options) {
  if (!PrepareImage(path)) {
    state.SkipWithError("cannot prepare the image file");
    return;
  }
  auto backend = BlockBackend::Open(path, options, *main_context);
  if (!backend.ok()) {
    state.SkipWithError(std::string(backend.status().message()).c_str());
    return;
  }
  for (auto _ : state) {
    Runner runner(**backend, workload);
    runner.Run(settings.seconds);
    state.SetIterationTime(runner.elapsed_seconds());
    if (runner.errors() > 0) state.SkipWithError("I/O errors during the run");
    double iops = runner.completed() / runner.elapsed_seconds();
    state.counters["iops"] = iops;
    state.counters["lat_mean_us"] = runner.mean_latency_us();
    state.counters["MiB_per_s"] = iops * workload.block_bytes / (1 << 20);
    state.counters["depth"] = workload.depth;
    state.counters["cpu_us_per_io"] = runner.cpu_us_per_io();
  }
  (*backend)->Drain();
  state.SetLabel(std::string((*backend)->engine() == AioEngine::kIoUring ? "io_uring" : "threads") +
                 (options.direct ? " direct" : " buffered") +
                 (options.nowait && !options.direct ? " inline" : ""));
}

void RegisterCases() {
  for (const Workload& workload : kWorkloads) {
    for (bool nowait : {true, false}) {
      BlockOptions options;
      options.engine = AioEngine::kIoUring;
      options.nowait = nowait;
      std::string name = std::string(workload.name) + "/shm/nowait:" + (nowait ? "on" : "off");
      benchmark::RegisterBenchmark(name.c_str(), [&workload, options](benchmark::State& state) {
        RunCase(state, workload, settings.shm_image, options);
      })->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
    }
    // O_DIRECT: the inline fast path does not apply (no page cache).
    BlockOptions options;
    options.engine = AioEngine::kIoUring;
    options.direct = true;
    std::string name = std::string(workload.name) + "/disk/direct";
    benchmark::RegisterBenchmark(name.c_str(), [&workload, options](benchmark::State& state) {
      RunCase(state, workload, settings.disk_image, options);
    })->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
  }
}

bool ParseFlag(const char* argument, const char* name, std::string& value) {
  size_t length = std::strlen(name);
  if (std::strncmp(argument, name, length) != 0 || argument[length] != '=') return false;
  value = argument + length + 1;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  int64_t poll_max_ns = AioContext::kDefaultPollMaxNs;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    if (ParseFlag(argv[i], "--shm_image", value)) {
      settings.shm_image = value;
    } else if (ParseFlag(argv[i], "--disk_image", value)) {
      settings.disk_image = value;
    } else if (ParseFlag(argv[i], "--image_mib", value)) {
      settings.image_bytes = std::strtoull(value.c_str(), nullptr, 10) << 20;
    } else if (ParseFlag(argv[i], "--seconds", value)) {
      settings.seconds = std::strtod(value.c_str(), nullptr);
    } else if (ParseFlag(argv[i], "--poll_max_ns", value)) {
      poll_max_ns = std::strtoll(value.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "block_bench: unknown argument %s\n"
                   "flags: --shm_image=PATH --disk_image=PATH --image_mib=N --seconds=S "
                   "--poll_max_ns=N "
                   "and Google Benchmark's (--benchmark_filter, --benchmark_format=json)\n",
                   argv[i]);
      return 2;
    }
  }
  if (settings.image_bytes < (1 << 20) || settings.seconds <= 0 || poll_max_ns < 0) {
    std::fprintf(stderr,
                 "block_bench: --image_mib must be >= 1, --seconds > 0 and --poll_max_ns >= 0\n");
    return 2;
  }
  auto context = AioContext::CreateMain();
  if (!context.ok()) {
    std::fprintf(stderr, "block_bench: %s\n", std::string(context.status().message()).c_str());
    return 1;
  }
  main_context = context->get();
  main_context->SetPollMaxNs(poll_max_ns);
  RegisterCases();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

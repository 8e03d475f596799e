// device_bench: 4 KiB random reads through the whole virtio-blk device path
// (guest driver in its own "vCPU" thread -> notify eventfd -> virtqueue on
// an IOThread dataplane -> io_uring backend -> used ring -> interrupt
// eventfd), next to fio's io_uring engine on the same image in the same run.
// Prints QD1 latency and QD32 IOPS for both and the device/fio ratios
// (target: at least 0.90 at QD32). --json FILE also writes the figures.
//
//   device_bench [--seconds N] [--rounds N] [--image PATH] [--image-mib N]
//                [--json FILE] [--inline on|off]
// Rounds alternate fio and the device (QD1, then QD32); medians are shown.
// --inline off makes the backend send every read through io_uring instead
// of trying the page cache inline first (BlockOptions::nowait).
//
// The default image is a fresh file in /dev/shm, filled so that every read
// hits the page cache for both contenders.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "tests/harness/blk_testbed.h"
#include "util/aio_context.h"
#include "util/iothread.h"
#include "util/log.h"

namespace kvmini::bench {
namespace {

namespace blk = hw::virtio::blk;

struct Options {
  double seconds = 5;
  std::string image;
  uint64_t image_mib = 512;
  std::string json_path;
  bool inline_reads = true;  // BlockOptions::nowait
  int rounds = 3;
};

struct Figures {
  double iops = 0;
  double mean_latency_us = 0;
  double p99_latency_us = 0;
};

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "device_bench: %s\n", message.c_str());
  std::exit(1);
}

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) Fail(absl::StrCat("missing value after ", flag));
    std::string value = argv[++i];
    if (flag == "--seconds") {
      options.seconds = std::atof(value.c_str());
    } else if (flag == "--image") {
      options.image = value;
    } else if (flag == "--image-mib") {
      options.image_mib = std::strtoull(value.c_str(), nullptr, 10);
    } else if (flag == "--json") {
      options.json_path = value;
    } else if (flag == "--rounds") {
      options.rounds = std::atoi(value.c_str());
    } else if (flag == "--inline") {
      options.inline_reads = value == "on";
    } else {
      Fail(absl::StrCat("unknown option ", flag,
                        " (use --seconds, --rounds, --image, --image-mib, --json, --inline on|off)"));
    }
  }
  if (options.seconds <= 0 || options.image_mib < 16 || options.rounds < 1) {
    Fail("need --seconds > 0, --rounds >= 1, --image-mib >= 16");
  }
  return options;
}

void FillImage(const std::string& path, uint64_t bytes) {
  int fd = open(path.c_str(), O_WRONLY);
  if (fd < 0) Fail(absl::StrCat("cannot open ", path));
  std::vector<uint8_t> chunk(1 << 20);
  std::mt19937_64 random(1);
  for (auto& byte : chunk) byte = static_cast<uint8_t>(random());
  for (uint64_t offset = 0; offset < bytes; offset += chunk.size()) {
    if (pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(offset)) !=
        static_cast<ssize_t>(chunk.size())) {
      Fail(absl::StrCat("cannot fill ", path));
    }
  }
  close(fd);
}

// fio, io_uring engine, buffered like our backend, one job.
Figures RunFio(const std::string& image, int depth, double seconds) {
  std::string output = absl::StrCat(image, ".fio.json");
  std::string command = absl::StrFormat(
      "fio --name=bench --filename=%s --ioengine=io_uring --rw=randread --bs=4k "
      "--iodepth=%d --direct=0 --time_based --runtime=%.1f --ramp_time=0.5 --numjobs=1 "
      "--norandommap --randrepeat=0 --output-format=json --output=%s >/dev/null 2>&1",
      image, depth, seconds, output);
  if (std::system(command.c_str()) != 0) Fail(absl::StrCat("fio failed: ", command));
  std::ifstream in(output);
  nlohmann::json result = nlohmann::json::parse(in);
  unlink(output.c_str());
  const nlohmann::json& read = result["jobs"][0]["read"];
  Figures figures;
  figures.iops = read["iops"].get<double>();
  figures.mean_latency_us = read["clat_ns"]["mean"].get<double>() / 1000;
  figures.p99_latency_us = read["clat_ns"]["percentile"]["99.000000"].get<double>() / 1000;
  return figures;
}

// The guest side: keeps `depth` random 4 KiB reads in flight for `seconds`
// (after a short unmeasured warm-up), like Linux's virtio-blk driver with
// indirect descriptors.
Figures RunDriver(test::BlkDriver& driver, uint64_t image_bytes, int depth, double seconds) {
  std::mt19937_64 random(2);
  const uint64_t blocks = image_bytes / 4096;
  std::vector<absl::Time> started(1 << 16);  // by head
  auto post = [&] {
    test::BlkRequest request{.type = blk::kTypeIn, .sector = (random() % blocks) * 8,
                             .in_length = 4096, .indirect = true};
    absl::Time now = absl::Now();
    absl::StatusOr<uint16_t> head = driver.Post(0, request);
    if (!head.ok()) Fail(absl::StrCat("posting a request: ", head.status().ToString()));
    started[*head] = now;
  };
  std::vector<double> latencies;
  latencies.reserve(1 << 22);
  Figures figures;
  for (bool measuring : {false, true}) {
    const absl::Duration span = measuring ? absl::Seconds(seconds) : absl::Milliseconds(500);
    latencies.clear();
    for (int i = 0; i < depth; ++i) post();
    driver.driver().Kick(0);
    const absl::Time begin = absl::Now();
    const absl::Time end = begin + span;
    bool stopping = false;
    while (driver.in_flight(0) > 0) {
      driver.driver().WaitForInterrupt(absl::Milliseconds(100));
      const absl::Time now = absl::Now();
      stopping |= now >= end;
      bool posted = false;
      for (auto& [head, result] : driver.Collect(0)) {
        if (result.status != blk::kStatusOk) Fail("a read failed");
        latencies.push_back(absl::ToDoubleMicroseconds(now - started[head]));
      }
      // Refill after matching the batch (a new post may reuse its heads).
      while (!stopping && driver.in_flight(0) < static_cast<size_t>(depth)) {
        post();
        posted = true;
      }
      if (posted) driver.driver().Kick(0);
    }
    if (!measuring) continue;
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - begin);
    std::sort(latencies.begin(), latencies.end());
    double sum = 0;
    for (double latency : latencies) sum += latency;
    figures.iops = latencies.size() / elapsed;
    figures.mean_latency_us = latencies.empty() ? 0 : sum / latencies.size();
    figures.p99_latency_us = latencies.empty() ? 0 : latencies[latencies.size() * 99 / 100];
  }
  return figures;
}

// The device side, set up once: main loop in this thread, the disk's
// dataplane on an IOThread, the guest driver run from a vCPU-like thread.
class DeviceRig {
 public:
  DeviceRig(const std::string& image, uint64_t image_bytes, bool inline_reads)
      : image_bytes_(image_bytes) {
    auto main = util::AioContext::CreateMain();
    if (!main.ok()) Fail(main.status().ToString());
    main_ = std::move(*main);
    auto iothread = util::IOThread::Create("bench-io");
    if (!iothread.ok()) Fail(iothread.status().ToString());
    iothread_ = std::move(*iothread);
    test::BlkTestbedOptions options;
    options.image_path = image;
    options.block.nowait = inline_reads;
    options.iothread = &iothread_->context();
    options.max_request_data = 4096;
    options.ram_bytes = 64 << 20;
    auto testbed = test::BlkTestbed::Create(options);
    if (!testbed.ok()) Fail(testbed.status().ToString());
    testbed_ = std::move(*testbed);
    // What a Linux guest negotiates for a read workload.
    const uint64_t features = hw::virtio::feature::kRingIndirectDesc |
                              hw::virtio::feature::kRingEventIdx | blk::kFeatureSegMax |
                              blk::kFeatureFlush | blk::kFeatureBlockSize;
    absl::Status started = testbed_->blk_driver().Start(features, 1, 256);
    if (!started.ok()) Fail(started.ToString());
    testbed_->blk_driver().set_copy_in_data(false);
  }
  ~DeviceRig() {
    testbed_.reset();
    iothread_->Stop();
  }

  std::string engine() {
    return testbed_->blk().backend().engine() == block::AioEngine::kIoUring ? "io_uring"
                                                                           : "threads";
  }

  Figures Measure(int depth, double seconds) {
    Figures figures;
    std::atomic<bool> done{false};
    std::thread vcpu([&] {
      figures = RunDriver(testbed_->blk_driver(), image_bytes_, depth, seconds);
      done = true;
      main_->Notify();
    });
    while (!done) main_->Poll(/*blocking=*/true);
    vcpu.join();
    return figures;
  }

 private:
  const uint64_t image_bytes_;
  std::unique_ptr<util::AioContext> main_;
  std::unique_ptr<util::IOThread> iothread_;
  std::unique_ptr<test::BlkTestbed> testbed_;
};

// The run with the median IOPS of several.
Figures Median(std::vector<Figures> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const Figures& a, const Figures& b) { return a.iops < b.iops; });
  return runs[runs.size() / 2];
}

void Print(const char* what, const Figures& figures) {
  std::printf("  %-28s %10.0f IOPS   mean %7.2f us   p99 %7.2f us\n", what, figures.iops,
              figures.mean_latency_us, figures.p99_latency_us);
}

}  // namespace
}  // namespace kvmini::bench

int main(int argc, char** argv) {
  using namespace kvmini::bench;
  kvmini::util::SetMinimumLogLevel(kvmini::util::LogLevel::kWarning);
  Options options = ParseOptions(argc, argv);
  const uint64_t image_bytes = options.image_mib << 20;
  bool temporary = false;
  if (options.image.empty()) {
    auto path = kvmini::test::CreateTemporaryImage(image_bytes);
    if (!path.ok()) Fail(path.status().ToString());
    options.image = *path;
    temporary = true;
  }
  FillImage(options.image, image_bytes);

  std::printf("4 KiB random reads on %s (%lu MiB), %d rounds of %.1f s each, medians:\n",
              options.image.c_str(), options.image_mib, options.rounds, options.seconds);
  // Alternate the contenders, round after round, so that load from other
  // processes hits both alike; report each one's median round.
  std::vector<Figures> fio_qd1_runs, fio_qd32_runs, device_qd1_runs, device_qd32_runs;
  std::string engine;
  {
    DeviceRig rig(options.image, image_bytes, options.inline_reads);
    engine = rig.engine();
    for (int round = 0; round < options.rounds; ++round) {
      fio_qd1_runs.push_back(RunFio(options.image, 1, options.seconds));
      device_qd1_runs.push_back(rig.Measure(1, options.seconds));
      fio_qd32_runs.push_back(RunFio(options.image, 32, options.seconds));
      device_qd32_runs.push_back(rig.Measure(32, options.seconds));
    }
  }
  if (temporary) unlink(options.image.c_str());
  const Figures fio_qd1 = Median(fio_qd1_runs), fio_qd32 = Median(fio_qd32_runs);
  struct {
    Figures qd1, qd32;
  } device{Median(device_qd1_runs), Median(device_qd32_runs)};

  Print("fio io_uring QD1", fio_qd1);
  Print("virtio-blk device QD1", device.qd1);
  Print("fio io_uring QD32", fio_qd32);
  Print("virtio-blk device QD32", device.qd32);
  const double qd1_ratio = device.qd1.iops / fio_qd1.iops;
  const double qd32_ratio = device.qd32.iops / fio_qd32.iops;
  std::printf("backend engine: %s, inline page-cache reads %s\n", engine.c_str(),
              options.inline_reads ? "on" : "off");
  std::printf("ratio device/fio QD1 IOPS: %.2f\n", qd1_ratio);
  std::printf("ratio device/fio QD32 IOPS: %.2f (target >= 0.90: %s)\n", qd32_ratio,
              qd32_ratio >= 0.90 ? "met" : "NOT met");

  if (!options.json_path.empty()) {
    auto as_json = [](const Figures& figures) {
      return nlohmann::json{{"iops", figures.iops},
                            {"mean_latency_us", figures.mean_latency_us},
                            {"p99_latency_us", figures.p99_latency_us}};
    };
    nlohmann::json out{{"fio_qd1", as_json(fio_qd1)},
                       {"device_qd1", as_json(device.qd1)},
                       {"fio_qd32", as_json(fio_qd32)},
                       {"device_qd32", as_json(device.qd32)},
                       {"ratio_qd1", qd1_ratio},
                       {"ratio_qd32", qd32_ratio},
                       {"engine", engine}, {"rounds", options.rounds}};
    std::ofstream(options.json_path) << out.dump(2) << "\n";
  }
  return 0;
}

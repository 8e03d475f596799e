// device_bench: 4 KiB random reads through the whole path of a virtio disk
// (guest driver in its own "vCPU" thread -> notify eventfd -> virtqueue on
// an IOThread dataplane -> virtio-blk, or virtio-scsi and its SCSI disk ->
// io_uring backend -> used ring -> interrupt eventfd), next to fio's
// io_uring engine on the same image in the same run. Prints QD1 latency and
// QD32 IOPS for both and the device/fio ratios (target: at least 0.90 at
// QD32). --json FILE also writes the figures (medians and every round's IOPS).
//
//   device_bench [--device blk|scsi] [--seconds N] [--rounds N] [--image PATH]
//                [--image-mib N] [--json FILE] [--inline on|off]
//                [--poll on|off|both] [--poll-max-ns N] [--halt-poll-us N]
// Rounds alternate fio and the device (QD1, then QD32); medians are shown.
// --poll sets the adaptive polling of the IOThread and main loops (on: with
// --poll-max-ns as the cap, default AioContext's); "both" measures the
// device each round with polling on and then off, next to the same fio runs.
// --halt-poll-us N: the driver thread (the "vCPU") looks at the used ring
// for up to N us before sleeping on the interrupt, as KVM's halt polling
// does for a halted vCPU (default 0: it sleeps at once, as before).
// --inline off makes the backend send every read through io_uring instead
// of trying the page cache inline first (BlockOptions::nowait).
//
// The default image is a fresh file in /dev/shm, filled so that every read
// hits the page cache for both contenders.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/device/bench_support.h"
#include "hw/scsi/big_endian.h"
#include "hw/scsi/scsi_protocol.h"
#include "nlohmann/json.hpp"
#include "tests/harness/blk_testbed.h"
#include "tests/harness/scsi_testbed.h"
#include "util/aio_context.h"
#include "util/iothread.h"
#include "util/log.h"

namespace kvmini::bench {
namespace {

namespace blk = hw::virtio::blk;
namespace virtio_scsi = hw::virtio::virtio_scsi;

struct Options {
  std::string device = "blk";
  double seconds = 5;
  std::string image;
  uint64_t image_mib = 512;
  std::string json_path;
  bool inline_reads = true;  // BlockOptions::nowait
  int rounds = 3;
  std::string poll = "on";
  int64_t poll_max_ns = util::AioContext::kDefaultPollMaxNs;
  int64_t halt_poll_us = 0;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) Fail(absl::StrCat("missing value after ", flag));
    std::string value = argv[++i];
    if (flag == "--device") {
      options.device = value;
    } else if (flag == "--seconds") {
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
    } else if (flag == "--poll") {
      options.poll = value;
    } else if (flag == "--poll-max-ns") {
      options.poll_max_ns = std::strtoll(value.c_str(), nullptr, 10);
    } else if (flag == "--halt-poll-us") {
      options.halt_poll_us = std::strtoll(value.c_str(), nullptr, 10);
    } else {
      Fail(absl::StrCat("unknown option ", flag,
                        " (use --device, --seconds, --rounds, --image, --image-mib, --json, "
                        "--inline on|off, --poll on|off|both, --poll-max-ns, --halt-poll-us)"));
    }
  }
  if (options.seconds <= 0 || options.image_mib < 16 || options.rounds < 1) {
    Fail("need --seconds > 0, --rounds >= 1, --image-mib >= 16");
  }
  if (options.poll != "on" && options.poll != "off" && options.poll != "both") {
    Fail(absl::StrCat("--poll ", options.poll, ": use on, off or both"));
  }
  if (options.poll_max_ns < 0) Fail("--poll-max-ns must be >= 0");
  if (options.halt_poll_us < 0) Fail("--halt-poll-us must be >= 0");
  if (options.device != "blk" && options.device != "scsi") {
    Fail(absl::StrCat("--device ", options.device, ": use blk or scsi"));
  }
  return options;
}

// Reads through virtio-blk, as Linux's virtio_blk sends them (indirect).
class BlkReads {
 public:
  explicit BlkReads(test::BlkDriver& driver) : driver_(driver) {}
  uint16_t PostRead(uint64_t offset) {
    absl::StatusOr<uint16_t> head = driver_.Post(
        0, {.type = blk::kTypeIn, .sector = offset / 512, .in_length = 4096, .indirect = true});
    if (!head.ok()) Fail(absl::StrCat("posting a request: ", head.status().ToString()));
    return *head;
  }
  template <typename Callback>
  void Collect(Callback callback) {
    for (auto& [head, result] : driver_.Collect(0)) callback(head, result.status == blk::kStatusOk);
  }
  size_t in_flight() const { return driver_.in_flight(0); }
  void Kick() { driver_.driver().Kick(0); }
  bool WaitForInterrupt(absl::Duration timeout) { return driver_.driver().WaitForInterrupt(timeout); }

 private:
  test::BlkDriver& driver_;
};

// READ(10)s through virtio-scsi, as Linux's virtio_scsi sends them.
class ScsiReads {
 public:
  explicit ScsiReads(test::ScsiDriver& driver) : driver_(driver) {
    command_.cdb.assign(10, 0);
    command_.cdb[0] = hw::scsi::opcode::kRead10;
    hw::scsi::StoreBigEndian16(&command_.cdb[7], 4096 / 512);
    command_.data_in_length = 4096;
    command_.indirect = true;
  }
  uint16_t PostRead(uint64_t offset) {
    hw::scsi::StoreBigEndian32(&command_.cdb[2], static_cast<uint32_t>(offset / 512));
    ++command_.tag;
    absl::StatusOr<uint16_t> head = driver_.Post(0, command_);
    if (!head.ok()) Fail(absl::StrCat("posting a command: ", head.status().ToString()));
    return *head;
  }
  template <typename Callback>
  void Collect(Callback callback) {
    for (auto& [head, response] : driver_.Collect(0)) {
      callback(head, response.response == virtio_scsi::response::kOk &&
                         response.status == hw::scsi::status::kGood);
    }
  }
  size_t in_flight() const { return driver_.in_flight(0); }
  void Kick() { driver_.Kick(0); }
  bool WaitForInterrupt(absl::Duration timeout) { return driver_.driver().WaitForInterrupt(timeout); }

 private:
  test::ScsiDriver& driver_;
  test::ScsiCommand command_;
};

// The device side, set up once: main loop in this thread, the disk's
// dataplane on an IOThread, the guest driver run from a vCPU-like thread.
class DeviceRig {
 public:
  DeviceRig(const Options& options, uint64_t image_bytes)
      : image_bytes_(image_bytes), halt_poll_(absl::Microseconds(options.halt_poll_us)) {
    auto main = util::AioContext::CreateMain();
    if (!main.ok()) Fail(main.status().ToString());
    main_ = std::move(*main);
    auto iothread = util::IOThread::Create("bench-io");
    if (!iothread.ok()) Fail(iothread.status().ToString());
    iothread_ = std::move(*iothread);
    // What a Linux guest negotiates for a read workload.
    const uint64_t ring_features =
        hw::virtio::feature::kRingIndirectDesc | hw::virtio::feature::kRingEventIdx;
    if (options.device == "blk") {
      auto testbed = test::BlkTestbed::Create(TestbedOptions<test::BlkTestbedOptions>(options));
      if (!testbed.ok()) Fail(testbed.status().ToString());
      const uint64_t features =
          ring_features | blk::kFeatureSegMax | blk::kFeatureFlush | blk::kFeatureBlockSize;
      absl::Status started = (*testbed)->blk_driver().Start(features, 1, 256);
      if (!started.ok()) Fail(started.ToString());
      (*testbed)->blk_driver().set_copy_in_data(false);
      blk_reads_ = std::make_unique<BlkReads>((*testbed)->blk_driver());
      backend_ = &(*testbed)->blk().backend();
      testbed_ = std::move(*testbed);
    } else {
      auto testbed =
          test::ScsiTestbed::Create(TestbedOptions<test::ScsiTestbedOptions>(options));
      if (!testbed.ok()) Fail(testbed.status().ToString());
      absl::Status started = (*testbed)->scsi_driver().Start(ring_features, 1, 256);
      if (!started.ok()) Fail(started.ToString());
      (*testbed)->scsi_driver().set_copy_in_data(false);
      scsi_reads_ = std::make_unique<ScsiReads>((*testbed)->scsi_driver());
      backend_ = &(*testbed)->scsi().backend();
      testbed_ = std::move(*testbed);
    }
  }
  ~DeviceRig() {
    blk_reads_.reset();
    scsi_reads_.reset();
    testbed_.reset();
    iothread_->Stop();
  }

  // What both testbeds take: the image, the IOThread, room for 4 KiB reads.
  template <typename Result>
  Result TestbedOptions(const Options& options) {
    Result testbed;
    testbed.image_path = options.image;
    testbed.block.nowait = options.inline_reads;
    testbed.iothread = &iothread_->context();
    testbed.max_request_data = 4096;
    testbed.ram_bytes = 64 << 20;
    return testbed;
  }

  std::string engine() const {
    return backend_->engine() == block::AioEngine::kIoUring ? "io_uring" : "threads";
  }

  // Adaptive polling of both loops (the IOThread's serves the queue and the
  // backend; the main loop's only waits here). Takes effect at their next
  // Poll.
  void SetPollMaxNs(int64_t nanoseconds) {
    main_->SetPollMaxNs(nanoseconds);
    iothread_->context().SetPollMaxNs(nanoseconds);
  }

  Figures Measure(int depth, double seconds) {
    Figures figures;
    std::atomic<bool> done{false};
    std::thread vcpu([&] {
      figures = blk_reads_
                    ? RunClosedLoop(*blk_reads_, image_bytes_, depth, seconds, halt_poll_)
                    : RunClosedLoop(*scsi_reads_, image_bytes_, depth, seconds, halt_poll_);
      done = true;
      main_->Notify();
    });
    while (!done) main_->Poll(/*blocking=*/true);
    vcpu.join();
    return figures;
  }

 private:
  const uint64_t image_bytes_;
  const absl::Duration halt_poll_;
  std::unique_ptr<util::AioContext> main_;
  std::unique_ptr<util::IOThread> iothread_;
  std::unique_ptr<test::VirtioTestbed> testbed_;
  block::BlockBackend* backend_ = nullptr;
  std::unique_ptr<BlkReads> blk_reads_;
  std::unique_ptr<ScsiReads> scsi_reads_;
};

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

  std::printf("virtio-%s: 4 KiB random reads on %s (%lu MiB), %d rounds of %.1f s each, "
              "medians:\n",
              options.device.c_str(), options.image.c_str(), options.image_mib, options.rounds,
              options.seconds);
  // Alternate the contenders, round after round, so that load from other
  // processes hits both alike; report each one's median round.
  std::vector<Figures> fio_qd1_runs, fio_qd32_runs, device_qd1_runs, device_qd32_runs;
  // With --poll both: the device with polling off, measured right after.
  std::vector<Figures> unpolled_qd1_runs, unpolled_qd32_runs;
  const bool compare_polling = options.poll == "both";
  const int64_t poll_max_ns = options.poll == "off" ? 0 : options.poll_max_ns;
  std::string engine;
  {
    DeviceRig rig(options, image_bytes);
    engine = rig.engine();
    auto measure_device = [&](int depth, std::vector<Figures>& runs,
                              std::vector<Figures>& unpolled_runs) {
      rig.SetPollMaxNs(poll_max_ns);
      runs.push_back(rig.Measure(depth, options.seconds));
      if (!compare_polling) return;
      rig.SetPollMaxNs(0);
      unpolled_runs.push_back(rig.Measure(depth, options.seconds));
    };
    for (int round = 0; round < options.rounds; ++round) {
      fio_qd1_runs.push_back(RunFio(options.image, 1, options.seconds));
      measure_device(1, device_qd1_runs, unpolled_qd1_runs);
      fio_qd32_runs.push_back(RunFio(options.image, 32, options.seconds));
      measure_device(32, device_qd32_runs, unpolled_qd32_runs);
    }
  }
  if (temporary) unlink(options.image.c_str());
  const Figures fio_qd1 = Median(fio_qd1_runs), fio_qd32 = Median(fio_qd32_runs);
  const Figures device_qd1 = Median(device_qd1_runs), device_qd32 = Median(device_qd32_runs);

  const std::string device_name = absl::StrCat("virtio-", options.device, " device");
  Print("fio io_uring QD1", fio_qd1);
  Print(absl::StrCat(device_name, " QD1").c_str(), device_qd1);
  if (compare_polling) {
    Print(absl::StrCat("virtio-", options.device, " QD1, no polling").c_str(),
          Median(unpolled_qd1_runs));
  }
  Print("fio io_uring QD32", fio_qd32);
  Print(absl::StrCat(device_name, " QD32").c_str(), device_qd32);
  if (compare_polling) {
    Print(absl::StrCat("virtio-", options.device, " QD32, no polling").c_str(),
          Median(unpolled_qd32_runs));
  }
  const double qd1_ratio = device_qd1.iops / fio_qd1.iops;
  const double qd32_ratio = device_qd32.iops / fio_qd32.iops;
  std::printf("backend engine: %s, inline page-cache reads %s, poll-max-ns %lld, "
              "driver halt polling %lld us\n",
              engine.c_str(), options.inline_reads ? "on" : "off",
              static_cast<long long>(poll_max_ns), static_cast<long long>(options.halt_poll_us));
  if (compare_polling) {
    std::printf("ratio device/fio QD1 IOPS, polling off: %.2f\n",
                Median(unpolled_qd1_runs).iops / fio_qd1.iops);
    std::printf("ratio device/fio QD32 IOPS, polling off: %.2f\n",
                Median(unpolled_qd32_runs).iops / fio_qd32.iops);
  }
  std::printf("ratio device/fio QD1 IOPS: %.2f\n", qd1_ratio);
  std::printf("ratio device/fio QD32 IOPS: %.2f (target >= 0.90: %s)\n", qd32_ratio,
              qd32_ratio >= 0.90 ? "met" : "NOT met");

  if (!options.json_path.empty()) {
    auto as_json = [](const Figures& figures) {
      return nlohmann::json{{"iops", figures.iops},
                            {"mean_latency_us", figures.mean_latency_us},
                            {"p99_latency_us", figures.p99_latency_us}};
    };
    nlohmann::json out{{"device", options.device},
                       {"fio_qd1", as_json(fio_qd1)},
                       {"device_qd1", as_json(device_qd1)},
                       {"fio_qd32", as_json(fio_qd32)},
                       {"device_qd32", as_json(device_qd32)},
                       {"ratio_qd1", qd1_ratio},
                       {"ratio_qd32", qd32_ratio},
                       {"engine", engine}, {"rounds", options.rounds},
                       {"poll_max_ns", poll_max_ns}, {"halt_poll_us", options.halt_poll_us}};
    if (compare_polling) {
      out["device_qd1_poll_off"] = as_json(Median(unpolled_qd1_runs));
      out["device_qd32_poll_off"] = as_json(Median(unpolled_qd32_runs));
    }
    // Every round's IOPS too, for min/median/max (bench/run-all.sh).
    auto all_iops = [](const std::vector<Figures>& runs) {
      nlohmann::json values = nlohmann::json::array();
      for (const Figures& figures : runs) values.push_back(figures.iops);
      return values;
    };
    out["round_iops"] = {{"fio_qd1", all_iops(fio_qd1_runs)},
                         {"device_qd1", all_iops(device_qd1_runs)},
                         {"fio_qd32", all_iops(fio_qd32_runs)},
                         {"device_qd32", all_iops(device_qd32_runs)}};
    std::ofstream(options.json_path) << out.dump(2) << "\n";
  }
  return 0;
}

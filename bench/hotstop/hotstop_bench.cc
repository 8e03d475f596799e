// hotstop_bench (issue 8): how long a disk's dataplane stop and start take
// in the device harness (a plain host process, no KVM), idle and with a
// guest driver thread keeping requests in flight, for virtio-blk and
// virtio-scsi. Each round is stop (IOThread -> main loop) then start (back),
// timed as the operator sees them (the ...AndWait calls). Under load it also
// reports how much of each stop is waiting for I/O: the stop minus the time
// until the slowest request in flight at the stop finished in the backend
// (what is left is the dataplane's own cost: bottom halves, publishing,
// handler moves).
//
// Prints min/p50/p99/max per series and writes one file per series
// (<out>/<device>-<load>-<what>.dat: sorted microseconds and the
// cumulative fraction) for bench/hotstop/run.sh to plot.
//
//   hotstop_bench [--rounds N] [--depth N] [--device blk|scsi|both]
//                 [--inline on|off] [--out DIR]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/unit/hw/virtio/hotstop_load.h"
#include "tests/unit/hw/virtio/hotstop_testbed.h"
#include "util/iothread.h"

namespace kvmini::bench {
namespace {

using test::HotstopDevice;

struct Options {
  int rounds = 2000;
  int depth = 32;
  std::vector<HotstopDevice> devices = {HotstopDevice::kBlk, HotstopDevice::kScsi};
  bool nowait = true;
  std::string out = "bench/out/hotstop";
};

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr,
               "hotstop_bench: %s\nusage: hotstop_bench [--rounds N] [--depth N] "
               "[--device blk|scsi|both] [--inline on|off] [--out DIR]\n",
               problem.c_str());
  std::exit(2);
}

Options ParseArguments(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) Usage(absl::StrCat("missing the value of ", flag));
    const std::string value = argv[++i];
    if (flag == "--rounds" || flag == "--depth") {
      char* end = nullptr;
      const long number = std::strtol(value.c_str(), &end, 10);
      if (*end != '\0' || number < 1 || number > 1000000) {
        Usage(absl::StrCat(flag, " wants a number from 1 to 1000000, not '", value, "'"));
      }
      (flag == "--rounds" ? options.rounds : options.depth) = static_cast<int>(number);
    } else if (flag == "--device") {
      if (value == "blk")
        options.devices = {HotstopDevice::kBlk};
      else if (value == "scsi")
        options.devices = {HotstopDevice::kScsi};
      else if (value != "both")
        Usage(absl::StrCat("--device blk, scsi or both, not '", value, "'"));
    } else if (flag == "--inline") {
      if (value != "on" && value != "off") Usage("--inline on or off");
      options.nowait = value == "on";
    } else if (flag == "--out") {
      options.out = value;
    } else {
      Usage(absl::StrCat("unknown option ", flag));
    }
  }
  if (options.depth > 64) Usage("--depth is at most 64 (two queues of 256 entries)");
  return options;
}

struct Series {
  std::string name;
  std::vector<absl::Duration> samples;
};

void Report(const Options& options, const std::string& device, const std::string& load,
            const std::vector<Series>& series) {
  for (const Series& one : series) {
    std::printf("%-11s %-5s %-34s %s\n", device.c_str(), load.c_str(), one.name.c_str(),
                test::FormatSummary(test::Summarize(one.samples)).c_str());
    std::vector<absl::Duration> sorted = one.samples;
    std::sort(sorted.begin(), sorted.end());
    const std::string path =
        absl::StrCat(options.out, "/", device, "-", load, "-", one.name, ".dat");
    std::ofstream file(path);
    if (!file) {
      std::fprintf(stderr, "hotstop_bench: cannot write %s\n", path.c_str());
      std::exit(1);
    }
    file << "# " << device << ", " << load << ": " << one.name
         << " (microseconds, cumulative fraction)\n";
    for (size_t i = 0; i < sorted.size(); ++i) {
      file << absl::StrFormat("%.2f %.5f\n", absl::ToDoubleMicroseconds(sorted[i]),
                              double(i + 1) / double(sorted.size()));
    }
  }
}

// One device, one load: `rounds` stop+start pairs.
void Measure(const Options& options, HotstopDevice type, bool loaded, util::AioContext& main,
             util::AioContext& iothread) {
  constexpr uint64_t kImageBytes = 64 << 20;
  block::BlockOptions block;
  block.nowait = options.nowait;
  auto testbed = test::HotstopTestbed::Create({.device = type,
                                               .image_bytes = kImageBytes,
                                               .queues = 2,
                                               .queue_size = 256,
                                               .block = block,
                                               .iothread = &iothread});
  if (!testbed.ok()) {
    std::fprintf(stderr, "hotstop_bench: %s\n", testbed.status().ToString().c_str());
    std::exit(1);
  }
  hw::virtio::MmioTransport& transport = (*testbed)->transport();
  test::ShadowLoad load((*testbed)->port(), kImageBytes,
                        {.depth = options.depth, .max_sectors = 8});
  std::thread vcpu;
  if (loaded) {
    vcpu = std::thread([&] { load.Run(); });
    while (load.completed() < 1000) main.Poll(false);  // warmed up (the IOThread serves it)
  }

  Series stops{"stop", {}}, starts{"start", {}}, round_trips{"stop+start", {}};
  Series io_waits{"stop-waiting-for-io", {}}, overheads{"stop-minus-slowest-in-flight", {}};
  uint64_t device_in_flight = 0;
  for (int round = 0; round < options.rounds; ++round) {
    device_in_flight += transport.dataplane_status().in_flight;
    const absl::Time begin = absl::Now();
    transport.StopDataplaneAndWait();
    const absl::Time stopped = absl::Now();
    // Read before the start: once stopped, the main loop serves the queues
    // and its completions are not the stop's.
    const absl::Time last_completion = (*testbed)->backend().last_completion();
    transport.StartDataplaneAndWait();
    const absl::Time started = absl::Now();
    stops.samples.push_back(stopped - begin);
    starts.samples.push_back(started - stopped);
    round_trips.samples.push_back(started - begin);
    if (loaded) {
      // The last backend completion before the stop returned ended the
      // slowest I/O it waited for (none if it is older than the stop).
      const absl::Duration io_wait =
          last_completion > begin ? last_completion - begin : absl::ZeroDuration();
      io_waits.samples.push_back(io_wait);
      overheads.samples.push_back(stopped - begin - io_wait);
      // Let the IOThread take the load back before the next stop; sleep in
      // the main loop meanwhile (spinning would take a core from the
      // IOThread and the driver thread on a small machine).
      bool waited = false;
      main.AddTimer(absl::Now() + absl::Microseconds(300), [&waited] { waited = true; });
      while (!waited) main.Poll(/*blocking=*/true);
    }
  }
  if (loaded) {
    load.RequestStop();
    while (!load.finished()) main.Poll(false);
    vcpu.join();
    if (!load.first_problem().empty()) {
      std::fprintf(stderr, "hotstop_bench: the load failed: %s\n", load.first_problem().c_str());
      std::exit(1);
    }
  }
  const std::string device = type == HotstopDevice::kBlk ? "blk" : "scsi";
  const std::string load_name = loaded ? absl::StrCat("qd", options.depth) : std::string("idle");
  std::vector<Series> series = {stops, starts, round_trips};
  if (loaded) {
    series.push_back(io_waits);
    series.push_back(overheads);
    std::printf(
        "%-11s %-5s requests in the device when a stop began: %.1f on average "
        "(%d posted by the driver)\n",
        device.c_str(), load_name.c_str(), double(device_in_flight) / options.rounds,
        options.depth);
  }
  Report(options, device, load_name, series);
}

int Main(int argc, char** argv) {
  const Options options = ParseArguments(argc, argv);
  std::error_code error;
  std::filesystem::create_directories(options.out, error);
  if (error) Usage(absl::StrCat("cannot create ", options.out, ": ", error.message()));
  auto main = util::AioContext::CreateMain();
  auto iothread = util::IOThread::Create("iothread0");
  if (!main.ok() || !iothread.ok()) {
    std::fprintf(stderr, "hotstop_bench: cannot create the event loops\n");
    return 1;
  }
  std::string load_average;
  std::ifstream("/proc/loadavg") >> load_average;
  std::printf(
      "hotstop_bench: %d stop+start rounds per series, inline %s, %u CPUs, load "
      "average %s\n",
      options.rounds, options.nowait ? "on" : "off", std::thread::hardware_concurrency(),
      load_average.c_str());
  for (HotstopDevice device : options.devices) {
    Measure(options, device, /*loaded=*/false, **main, (*iothread)->context());
    Measure(options, device, /*loaded=*/true, **main, (*iothread)->context());
  }
  std::printf("data: %s/*.dat\n", options.out.c_str());
  return 0;
}

}  // namespace
}  // namespace kvmini::bench

int main(int argc, char** argv) { return kvmini::bench::Main(argc, argv); }

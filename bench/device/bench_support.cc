#include "bench/device/bench_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace kvmini::bench {

void Fail(const std::string& message) {
  std::fprintf(stderr, "device_bench: %s\n", message.c_str());
  std::exit(1);
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

Figures Median(std::vector<Figures> runs) {
  std::sort(runs.begin(), runs.end(),
            [](const Figures& a, const Figures& b) { return a.iops < b.iops; });
  return runs[runs.size() / 2];
}

void Print(const char* what, const Figures& figures) {
  std::printf("  %-28s %10.0f IOPS   mean %7.2f us   p99 %7.2f us\n", what, figures.iops,
              figures.mean_latency_us, figures.p99_latency_us);
}

}  // namespace kvmini::bench

// kvmini start-up cost on the local /dev/kvm: for a tiny bzImage (a few
// instructions that write the exit port at once), the time from the exec
// of kvmini to vCPU 0's first KVM_RUN, the time to process exit, and the
// peak RSS. With KVMINI_TRACE_STARTUP set, kvmini logs the CLOCK_MONOTONIC
// instant of each start-up phase ("startup: PHASE at CLOCK_MONOTONIC N ns");
// the bench reports each phase's median offset from the exec, so a miss can
// be traced to its phase. The peak RSS is kvmini's own VmHWM when it logs
// it ("startup: peak RSS VmHWM N kB"), else the spawn's ru_maxrss. The guest touches well under 100 KiB of its memory
// (zero page, page tables, ACPI tables, the kernel's first page), so peak RSS
// is almost all kvmini's own. Targets: under 5 ms to the first KVM_RUN,
// under 5 MiB RSS. It also times the bare KVM set-up calls (what the kernel
// alone costs: on a software KVM host they alone can exceed the target).
//
// Usage: vmm_startup_bench [--runs N] [--memory SIZE] [--cpus N] [--json FILE]
//                          [--kvmini PATH] [--baseline PATH]
// --json also writes every run's figures (bench/run-all.sh reads them).
// --kvmini measures another kvmini binary than the one built with the bench;
// --baseline alternates runs of a second binary with the first (an older
// build, say), so both see the same machine load, and reports both.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/vmm/machine/tiny_bzimage.h"

extern char** environ;

namespace {

int64_t MonotonicNanoseconds() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec * 1000000000ll + now.tv_nsec;
}

struct Sample {
  double to_first_run_ms;
  double to_exit_ms;
  long peak_rss_kib;
  bool rss_from_kvmini;  // its own VmHWM, not the spawn's ru_maxrss
  // Each traced phase's offset from the exec, in the order kvmini logged them.
  std::vector<std::pair<std::string, double>> phases_ms;
};

constexpr const char* kTracePrefix = "startup: ";
constexpr const char* kTraceInstant = " at CLOCK_MONOTONIC ";

// Every "startup: PHASE at CLOCK_MONOTONIC N ns" line of kvmini's stderr.
std::vector<std::pair<std::string, int64_t>> TracedPhases(const std::string& output) {
  std::vector<std::pair<std::string, int64_t>> phases;
  size_t line_start = 0;
  while (line_start < output.size()) {
    size_t line_end = output.find('\n', line_start);
    if (line_end == std::string::npos) line_end = output.size();
    const std::string line = output.substr(line_start, line_end - line_start);
    line_start = line_end + 1;
    const size_t prefix = line.find(kTracePrefix);
    const size_t instant = line.find(kTraceInstant);
    if (prefix == std::string::npos || instant == std::string::npos || instant < prefix) continue;
    const size_t name_start = prefix + strlen(kTracePrefix);
    phases.emplace_back(line.substr(name_start, instant - name_start),
                        strtoll(line.c_str() + instant + strlen(kTraceInstant), nullptr, 10));
  }
  return phases;
}

bool RunOnce(const std::string& binary, const std::string& kernel, const std::string& memory, const std::string& cpus,
             Sample& sample) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<std::string> arguments = {binary, "--kernel", kernel,  "--cmdline", "",
                                        "--serial",    "none",     "--memory", memory, "--cpus",
                                        cpus};
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  std::vector<std::string> environment_strings = {"KVMINI_TRACE_STARTUP=1"};
  for (char** variable = environ; *variable != nullptr; ++variable) {
    environment_strings.push_back(*variable);
  }
  std::vector<char*> environment;
  for (std::string& variable : environment_strings) environment.push_back(variable.data());
  environment.push_back(nullptr);

  pid_t pid;
  int64_t start = MonotonicNanoseconds();
  int spawn_error =
      posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environment.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (spawn_error != 0) {
    close(pipe_fds[0]);
    return false;
  }
  std::string output;
  char buffer[512];
  ssize_t count;
  while ((count = read(pipe_fds[0], buffer, sizeof(buffer))) > 0) output.append(buffer, count);
  close(pipe_fds[0]);
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  int64_t end = MonotonicNanoseconds();
  int64_t first_run = -1;
  sample.phases_ms.clear();
  for (const auto& [phase, instant] : TracedPhases(output)) {
    sample.phases_ms.emplace_back(phase, (instant - start) / 1e6);
    if (phase.find("first KVM_RUN") != std::string::npos && first_run < 0) first_run = instant;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || first_run < 0) {
    fprintf(stderr, "%s run failed (status %d): %s\n", binary.c_str(), status, output.c_str());
    return false;
  }
  sample.to_first_run_ms = (first_run - start) / 1e6;
  const char* own_peak = strstr(output.c_str(), "startup: peak RSS VmHWM ");
  sample.rss_from_kvmini = own_peak != nullptr;
  sample.to_exit_ms = (end - start) / 1e6;
  sample.peak_rss_kib =
      sample.rss_from_kvmini
          ? strtol(own_peak + strlen("startup: peak RSS VmHWM "), nullptr, 10)
          : usage.ru_maxrss;
  return true;
}

// The kernel's share: the KVM set-up calls kvmini makes before the first
// KVM_RUN, issued directly (no kvmini), timed from KVM_CREATE_VM to the
// vCPU's mapping. On hosts where these are slow (the software KVM of our
// test machines), they bound what start-up can reach. `memory_first` is
// kvmini's order (guest RAM registered before the irqchip); without it the
// slot comes after the irqchip, QEMU's order, which on our hosts waits
// several milliseconds (docs/ARCHITECTURE.md "Start-up order").
double KvmSetupFloorMs(size_t memory_bytes, bool memory_first) {
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm < 0) return -1;
  void* ram = mmap(nullptr, memory_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  kvm_userspace_memory_region region{};
  region.memory_size = memory_bytes;
  region.userspace_addr = reinterpret_cast<uint64_t>(ram);
  int64_t start = MonotonicNanoseconds();
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  ioctl(vm, KVM_SET_TSS_ADDR, 0xFFFBD000ul);
  uint64_t identity_map = 0xFFFBC000;
  ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity_map);
  if (memory_first) ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region);
  ioctl(vm, KVM_CREATE_IRQCHIP, 0);
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  ioctl(vm, KVM_CREATE_PIT2, &pit);
  if (!memory_first) ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region);
  int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  void* run = mmap(nullptr, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  int64_t end = MonotonicNanoseconds();
  munmap(run, mmap_size);
  close(vcpu);
  close(vm);
  munmap(ram, memory_bytes);
  close(kvm);
  return (end - start) / 1e6;
}

template <typename T>
T Median(std::vector<T> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

template <typename T>
T Minimum(const std::vector<T>& values) {
  return *std::min_element(values.begin(), values.end());
}

template <typename T>
T Maximum(const std::vector<T>& values) {
  return *std::max_element(values.begin(), values.end());
}

// One binary's samples, gathered across the alternating runs.
struct Series {
  std::string binary;
  std::vector<double> first_run, exit_time;
  std::vector<long> rss;
  bool rss_from_kvmini = true;  // every sample's
  std::vector<std::string> phase_order;  // first-seen order
  std::map<std::string, std::vector<double>> phases;

  void Add(const Sample& sample) {
    first_run.push_back(sample.to_first_run_ms);
    exit_time.push_back(sample.to_exit_ms);
    rss.push_back(sample.peak_rss_kib);
    rss_from_kvmini = rss_from_kvmini && sample.rss_from_kvmini;
    for (const auto& [phase, offset] : sample.phases_ms) {
      auto [entry, inserted] = phases.try_emplace(phase);
      if (inserted) phase_order.push_back(phase);
      entry->second.push_back(offset);
    }
  }

  void Print() const {
    printf("  exec -> first KVM_RUN: min %.2f ms, median %.2f ms, max %.2f ms (target < 5 ms)\n",
           Minimum(first_run), Median(first_run), Maximum(first_run));
    printf("  exec -> process exit:  min %.2f ms, median %.2f ms, max %.2f ms\n",
           Minimum(exit_time), Median(exit_time), Maximum(exit_time));
    printf("  peak RSS: min %.2f MiB, median %.2f MiB, max %.2f MiB (target < 5 MiB over the "
           "< 0.1 MiB of guest memory touched)\n",
           Minimum(rss) / 1024.0, Median(rss) / 1024.0, Maximum(rss) / 1024.0);
    if (rss_from_kvmini) {
      printf("    (kvmini's own VmHWM)\n");
    } else {
      // posix_spawn's child runs in the bench's memory until its exec, and
      // the kernel carries that peak over into the child's ru_maxrss.
      rusage own_usage{};
      getrusage(RUSAGE_SELF, &own_usage);
      printf("    (ru_maxrss, which cannot read below this bench's own peak: %.2f MiB)\n",
             own_usage.ru_maxrss / 1024.0);
    }
    if (phases.size() <= 1) return;  // a kvmini that traces only the first KVM_RUN
    printf("  phases, offset from exec (ms): min / median\n");
    for (const std::string& phase : phase_order) {
      const std::vector<double>& offsets = phases.at(phase);
      printf("    %-44s %7.2f / %7.2f%s\n", phase.c_str(), Minimum(offsets), Median(offsets),
             offsets.size() == first_run.size() ? "" : "  (not in every run)");
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  int runs = 30;
  std::string memory = "512M";
  std::string cpus = "1";
  std::string json_path;
  std::vector<Series> series(1);
  series[0].binary = KVMINI_BINARY;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--runs") == 0) runs = std::max(1, atoi(argv[i + 1]));
    if (strcmp(argv[i], "--memory") == 0) memory = argv[i + 1];
    if (strcmp(argv[i], "--cpus") == 0) cpus = argv[i + 1];
    if (strcmp(argv[i], "--json") == 0) json_path = argv[i + 1];
    if (strcmp(argv[i], "--kvmini") == 0) series[0].binary = argv[i + 1];
    if (strcmp(argv[i], "--baseline") == 0) {
      series.resize(2);
      series[1].binary = argv[i + 1];
    }
  }
  char kernel[] = "/tmp/kvmini-startup-bench-XXXXXX";
  int fd = mkstemp(kernel);
  if (fd < 0) return 1;
  close(fd);
  if (!kvmini::vmm::testing::WriteTinyBzImage(kernel, 0).ok()) {
    unlink(kernel);
    return 1;
  }

  for (const Series& each : series) {
    Sample warmup;
    RunOnce(each.binary, kernel, memory, cpus, warmup);  // page cache, loader caches
  }
  for (int i = 0; i < runs; ++i) {
    for (Series& each : series) {
      Sample sample;
      if (!RunOnce(each.binary, kernel, memory, cpus, sample)) {
        unlink(kernel);
        return 1;
      }
      each.Add(sample);
    }
  }
  unlink(kernel);
  std::vector<double> floor;
  std::vector<double> floor_memory_last;
  for (int i = 0; i < runs; ++i) {
    floor.push_back(KvmSetupFloorMs(512ull << 20, /*memory_first=*/true));
    floor_memory_last.push_back(KvmSetupFloorMs(512ull << 20, /*memory_first=*/false));
  }
  printf("kvmini start-up, tiny bzImage, --memory %s --cpus %s, %d runs%s\n", memory.c_str(),
         cpus.c_str(), runs, series.size() > 1 ? " of each binary, alternating" : "");
  printf("  bare KVM set-up calls in kvmini's order (no kvmini; a floor for exec -> first "
         "KVM_RUN on this host): min %.2f ms, median %.2f ms, max %.2f ms\n",
         Minimum(floor), Median(floor), Maximum(floor));
  printf("  the same with guest RAM registered after the irqchip (QEMU's order): "
         "min %.2f ms, median %.2f ms, max %.2f ms\n",
         Minimum(floor_memory_last), Median(floor_memory_last), Maximum(floor_memory_last));
  for (const Series& each : series) {
    printf("%s:\n", each.binary.c_str());
    each.Print();
  }
  if (!json_path.empty()) {
    // Plain arrays, one entry per run, so no JSON library is needed here.
    const Series& measured = series[0];
    std::ofstream out(json_path);
    auto write_array = [&out](const std::string& name, const auto& values, double scale,
                              bool last) {
      out << "  \"" << name << "\": [";
      for (size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i] * scale;
      out << "]" << (last ? "\n" : ",\n");
    };
    out << "{\n  \"memory\": \"" << memory << "\",\n  \"cpus\": " << atoi(cpus.c_str()) << ",\n";
    write_array("first_kvm_run_ms", measured.first_run, 1, false);
    write_array("kvm_setup_floor_ms", floor, 1, false);
    write_array("kvm_setup_memory_after_irqchip_ms", floor_memory_last, 1, false);
    write_array("exit_ms", measured.exit_time, 1, false);
    // Phase names are kvmini's own fixed strings: no JSON escaping needed.
    out << "  \"phase_order\": [";
    for (size_t i = 0; i < measured.phase_order.size(); ++i) {
      out << (i ? ", " : "") << "\"" << measured.phase_order[i] << "\"";
    }
    out << "],\n  \"phases_ms\": {\n";
    for (size_t i = 0; i < measured.phase_order.size(); ++i) {
      out << "  ";
      write_array(measured.phase_order[i], measured.phases.at(measured.phase_order[i]), 1,
                  i + 1 == measured.phase_order.size());
    }
    out << "  },\n";
    write_array("peak_rss_mib", measured.rss, 1 / 1024.0, true);
    out << "}\n";
    if (!out) {
      fprintf(stderr, "vmm_startup_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

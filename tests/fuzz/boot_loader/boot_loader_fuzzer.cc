// Fuzzes the kernel/initrd loader (vmm/x86 LoadLinux): the input is a
// hostile kernel file, a bzImage (setup header fields: sizes, versions,
// alignment, pref_address, init_size, initrd_addr_max, cmdline_size) or an
// ELF vmlinux (program headers, PT_NOTE with the PVH entry), loaded into a
// 16 or 64 MiB guest with an initrd and a command line of a size the first
// byte picks. Checks: errors name the kernel or initrd; a loaded bzImage
// has its protected-mode bytes at 1 MiB and its initrd inside low RAM,
// clear of the loaded kernel and of the area it decompresses into, as
// boot.h promises; a PVH kernel starts at its entry with EBX at the
// start-info structure, its segments hold their file bytes and zeroed
// tails, and its initrd lies above it in RAM.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hw/memory/guest_memory.h"
#include "tests/fuzz/common/fuzz_check.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/load_support.h"
#include "vmm/x86/memory_layout.h"
#include "vmm/x86/pvh_boot.h"

namespace {
namespace x86 = kvmini::vmm::x86;

const kvmini::hw::GuestMemory& Memory(bool large) {
  static kvmini::hw::GuestMemory* memories[2] = {};
  kvmini::hw::GuestMemory*& memory = memories[large];
  if (memory == nullptr) {
    auto ranges = x86::GuestRamRanges(large ? 64 * x86::kMiB : 16 * x86::kMiB);
    FUZZ_REQUIRE(ranges.ok());
    auto allocated = kvmini::hw::GuestMemory::Allocate(*ranges);
    FUZZ_REQUIRE(allocated.ok());
    memory = allocated->release();
  }
  return *memory;
}

std::span<const uint8_t> Initrd(uint8_t choice) {
  static constexpr uint64_t kSizes[] = {0, 1, 4095, 4096, (1 << 20) + 7, 15 << 20, 40 << 20, 512};
  static const std::vector<uint8_t>* bytes = new std::vector<uint8_t>(40 << 20, 0x5A);
  return std::span<const uint8_t>(*bytes).first(kSizes[choice % 8]);
}

std::string CommandLine(uint8_t choice) {
  switch (choice % 4) {
    case 0:
      return "";
    case 1:
      return "console=ttyS0 root=/dev/vda";
    case 2:
      return std::string(2047, 'x');
    default:
      return std::string(5000, 'y');
  }
}

bool Overlaps(uint64_t a, uint64_t a_length, uint64_t b, uint64_t b_length) {
  return a < b + b_length && b < a + a_length;
}

void CheckBzImage(const kvmini::hw::GuestMemory& memory, std::span<const uint8_t> kernel,
                  std::span<const uint8_t> initrd, const x86::BootState& state) {
  auto image = x86::ParseBzImage(kernel, kernel.size(), "fuzz-kernel");
  FUZZ_REQUIRE(image.ok());
  FUZZ_REQUIRE(state.rip == x86::kKernelLoadAddress + x86::kKernel64BitEntryOffset);
  FUZZ_REQUIRE(state.rsi == x86::kZeroPageAddress);
  // The protected-mode kernel is at 1 MiB, byte for byte.
  auto loaded = memory.HostSpan(x86::kKernelLoadAddress, image->protected_mode_size);
  FUZZ_REQUIRE(loaded.has_value());
  FUZZ_REQUIRE(std::memcmp(loaded->data(), kernel.data() + image->protected_mode_offset,
                           image->protected_mode_size) == 0);
  // Where it decompresses (computed without wrapping: a header cannot move
  // that area by overflowing) must be RAM below the 3 GiB hole.
  unsigned __int128 run_start = image->pref_address;
  if (image->relocatable && image->kernel_alignment != 0) {
    unsigned __int128 alignment = image->kernel_alignment;
    unsigned __int128 aligned = (x86::kKernelLoadAddress + alignment - 1) / alignment * alignment;
    if (aligned > run_start) run_start = aligned;
  }
  unsigned __int128 run_end = run_start + image->init_size;
  uint64_t low_ram_end = std::min<uint64_t>(memory.regions()[0].size, 3 * x86::kGiB);
  FUZZ_REQUIRE(run_end <= low_ram_end);
  if (initrd.empty()) return;
  auto ramdisk_image = memory.ReadObject<uint32_t>(x86::kZeroPageAddress + 0x218);
  auto ramdisk_size = memory.ReadObject<uint32_t>(x86::kZeroPageAddress + 0x21C);
  FUZZ_REQUIRE(ramdisk_image.ok() && ramdisk_size.ok() && *ramdisk_size == initrd.size());
  const uint64_t address = *ramdisk_image;
  FUZZ_REQUIRE(address % x86::kPageSize == 0);
  FUZZ_REQUIRE(memory.Contains(address, initrd.size()));
  FUZZ_REQUIRE(address + initrd.size() - 1 <= image->initrd_addr_max);
  // Clear of the loaded kernel and of where it decompresses.
  FUZZ_REQUIRE(
      !Overlaps(address, initrd.size(), x86::kKernelLoadAddress, image->protected_mode_size));
  FUZZ_REQUIRE(!(address < run_end && run_start < address + initrd.size()));
  FUZZ_REQUIRE(std::memcmp(memory.HostSpan(address, initrd.size())->data(), initrd.data(),
                           initrd.size()) == 0);
}

void CheckPvh(const kvmini::hw::GuestMemory& memory, std::span<const uint8_t> kernel,
              std::span<const uint8_t> initrd, const x86::BootState& state) {
  auto parsed = x86::ParsePvhKernel(x86::SourceFromBytes(kernel, "fuzz-kernel"));
  FUZZ_REQUIRE(parsed.ok());
  FUZZ_REQUIRE(state.rip == parsed->entry && state.rbx == x86::kPvhStartInfoAddress);
  auto magic = memory.ReadObject<uint32_t>(x86::kPvhStartInfoAddress);
  FUZZ_REQUIRE(magic.ok() && *magic == x86::pvh::kStartInfoMagic);
  // Each segment no other one overlaps holds its file bytes, then zeroes.
  const auto& segments = parsed->segments;
  for (size_t i = 0; i < segments.size(); ++i) {
    const x86::ElfSegment& segment = segments[i];
    bool alone = true;
    for (size_t j = 0; j < segments.size(); ++j) {
      alone &= i == j || !Overlaps(segment.physical_address, segment.memory_size,
                                   segments[j].physical_address, segments[j].memory_size);
    }
    auto bytes = memory.HostSpan(segment.physical_address, segment.memory_size);
    FUZZ_REQUIRE(segment.physical_address >= x86::kKernelLoadAddress && bytes.has_value());
    if (!alone) continue;
    FUZZ_REQUIRE(
        std::memcmp(bytes->data(), kernel.data() + segment.file_offset, segment.file_size) == 0);
    FUZZ_REQUIRE(std::all_of(bytes->begin() + segment.file_size, bytes->end(),
                             [](uint8_t byte) { return byte == 0; }));
  }
  if (initrd.empty()) return;
  // The module list's one entry: address and size, above the kernel, in RAM.
  auto address = memory.ReadObject<uint64_t>(x86::kPvhModuleListAddress);
  auto size = memory.ReadObject<uint64_t>(x86::kPvhModuleListAddress + 8);
  FUZZ_REQUIRE(address.ok() && size.ok() && *size == initrd.size());
  FUZZ_REQUIRE(*address >= parsed->end && memory.Contains(*address, *size));
  FUZZ_REQUIRE(
      std::memcmp(memory.HostSpan(*address, *size)->data(), initrd.data(), initrd.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Byte 0: initrd size (bits 0-2), RSDP (3), memory (4), command line (5-6).
  const uint8_t setup = data[0];
  std::span<const uint8_t> kernel(data + 1, size - 1);
  std::span<const uint8_t> initrd = Initrd(setup & 7);
  std::string command_line = CommandLine(setup >> 5);
  const kvmini::hw::GuestMemory& memory = Memory(setup & 0x10);

  x86::LinuxBootConfig config{
      .kernel = kernel,
      .kernel_name = "fuzz-kernel",
      .initrd = initrd,
      .initrd_name = "fuzz-initrd",
      .command_line = command_line,
      .acpi_rsdp_address = setup & 8 ? x86::kRsdpAddress : 0,
  };
  absl::StatusOr<x86::BootState> state = x86::LoadLinux(memory, config);
  if (!state.ok()) {
    std::string message(state.status().message());
    FUZZ_REQUIRE(message.find("fuzz-kernel") != std::string::npos ||
                 message.find("fuzz-initrd") != std::string::npos);
    return 0;
  }
  const bool elf = kernel.size() >= 4 && std::memcmp(kernel.data(),
                                                     "\x7F"
                                                     "ELF",
                                                     4) == 0;
  if (elf) {
    CheckPvh(memory, kernel, initrd, *state);
  } else {
    CheckBzImage(memory, kernel, initrd, *state);
  }
  return 0;
}

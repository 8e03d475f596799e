#include "vmm/x86/boot.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/boot_file.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

std::string Mebibytes(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / kMiB);
}

uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return alignment == 0 ? value : (value + alignment - 1) / alignment * alignment;
}

// The bytes of a kernel or initrd, from a buffer or a file: read straight
// into their place in guest memory.
struct ImageSource {
  std::string_view name;
  uint64_t size = 0;
  std::function<absl::Status(uint64_t offset, std::span<uint8_t> destination)> read;
};

ImageSource SourceFromBytes(std::span<const uint8_t> bytes, std::string_view name) {
  return {name, bytes.size(), [bytes](uint64_t offset, std::span<uint8_t> destination) {
            std::copy_n(bytes.begin() + offset, destination.size(), destination.begin());
            return absl::OkStatus();
          }};
}

ImageSource SourceFromFile(const BootFile& file) {
  return {file.path(), file.size(), [&file](uint64_t offset, std::span<uint8_t> destination) {
            return file.ReadAt(offset, destination);
          }};
}

absl::Status CopyToGuest(const hw::GuestMemory& memory, uint64_t address,
                         const ImageSource& source, uint64_t offset, uint64_t size) {
  std::optional<std::span<uint8_t>> destination = memory.HostSpan(address, size);
  if (!destination) {
    return absl::OutOfRangeError(absl::StrFormat(
        "%s: [%#x, +%#x) is not guest RAM", source.name, address, size));
  }
  return source.read(offset, *destination);
}

// End of the RAM range the kernel is loaded into (below the MMIO hole).
absl::StatusOr<uint64_t> LowRamEnd(const hw::GuestMemory& memory) {
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    if (region.guest_address == 0 && region.size > kKernelLoadAddress) return region.size;
  }
  return absl::InvalidArgumentError(
      "guest RAM does not start at address 0 and extend past 1 MiB; cannot load a kernel");
}

// The first address above everything the kernel occupies while it boots:
// the loaded image, and the area it decompresses into.
absl::StatusOr<uint64_t> KernelFootprintEnd(const BzImage& kernel, std::string_view name,
                                            uint64_t low_ram_end) {
  const uint64_t load_end = kKernelLoadAddress + kernel.protected_mode_size;
  // A relocatable kernel runs at its load address rounded up to its
  // alignment, but never below pref_address (LOAD_PHYSICAL_ADDR).
  const uint64_t run_start =
      kernel.relocatable
          ? std::max(AlignUp(kKernelLoadAddress, kernel.kernel_alignment), kernel.pref_address)
          : kernel.pref_address;
  const uint64_t run_end = run_start + kernel.init_size;
  const uint64_t end = std::max(load_end, run_end);
  if (end > low_ram_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the kernel needs guest RAM up to %s (it unpacks %s at %s), but RAM below the "
        "3 GiB hole ends at %s: give the guest more memory",
        name, Mebibytes(end), Mebibytes(kernel.init_size), Mebibytes(run_start),
        Mebibytes(low_ram_end)));
  }
  return end;
}

absl::StatusOr<uint64_t> PlaceInitrd(const BzImage& kernel, const ImageSource& initrd,
                                     uint64_t kernel_end, uint64_t low_ram_end) {
  const uint64_t size = initrd.size;
  const uint64_t top =
      std::min(low_ram_end, static_cast<uint64_t>(kernel.initrd_addr_max) + 1);
  if (size <= top) {
    const uint64_t address = (top - size) / kPageSize * kPageSize;
    if (address >= kernel_end) return address;
  }
  return absl::InvalidArgumentError(absl::StrFormat(
      "%s: the initrd (%s) does not fit in guest RAM between the kernel (which needs up to %s) "
      "and %s (the lower of the kernel's initrd_addr_max and the end of RAM below the 3 GiB "
      "hole): give the guest more memory",
      initrd.name, Mebibytes(size), Mebibytes(kernel_end), Mebibytes(top)));
}

absl::Status CheckCommandLine(const BzImage& kernel, std::string_view kernel_name,
                              std::string_view command_line) {
  const uint64_t limit = std::min<uint64_t>(kernel.cmdline_size, kCommandLineMaxBytes - 1);
  if (command_line.size() > limit) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "the kernel command line is %d bytes; %s accepts at most %d", command_line.size(),
        kernel_name, limit));
  }
  if (command_line.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("the kernel command line contains a NUL byte");
  }
  return absl::OkStatus();
}

std::vector<uint8_t> BuildZeroPage(const BzImage& kernel, uint64_t initrd_address,
                                   uint64_t initrd_size, uint64_t acpi_rsdp_address,
                                   const std::vector<E820Entry>& e820) {
  namespace bp = boot_params;
  // Everything not set here must be 0 (the sentinel in particular).
  std::vector<uint8_t> page(kZeroPageSize, 0);
  std::copy(kernel.setup_header.begin(), kernel.setup_header.end(),
            page.begin() + setup_header::kStart);
  page[setup_header::kTypeOfLoader] = bp::kUndefinedLoader;
  StoreLittleEndian<uint32_t>(page, setup_header::kCmdLinePtr, kCommandLineAddress);
  StoreLittleEndian<uint32_t>(page, bp::kExtCmdLinePtr, kCommandLineAddress >> 32);
  StoreLittleEndian<uint32_t>(page, setup_header::kRamdiskImage,
                              static_cast<uint32_t>(initrd_address));
  StoreLittleEndian<uint32_t>(page, setup_header::kRamdiskSize,
                              static_cast<uint32_t>(initrd_size));
  StoreLittleEndian<uint32_t>(page, bp::kExtRamdiskImage, initrd_address >> 32);
  StoreLittleEndian<uint32_t>(page, bp::kExtRamdiskSize, initrd_size >> 32);
  StoreLittleEndian<uint64_t>(page, bp::kAcpiRsdpAddress, acpi_rsdp_address);
  KVMINI_CHECK(e820.size() <= bp::kE820MaxEntries, "e820 map larger than boot_params holds");
  page[bp::kE820EntryCount] = static_cast<uint8_t>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    const uint64_t offset = bp::kE820Table + i * bp::kE820EntrySize;
    StoreLittleEndian<uint64_t>(page, offset, e820[i].address);
    StoreLittleEndian<uint64_t>(page, offset + 8, e820[i].size);
    StoreLittleEndian<uint32_t>(page, offset + 16, static_cast<uint32_t>(e820[i].type));
  }
  return page;
}

// The loader proper. `head` holds at least the kernel file's first
// setup_header::kLimit bytes (for the setup header).
absl::StatusOr<BootState> Load(const hw::GuestMemory& memory, std::span<const uint8_t> head,
                               const ImageSource& kernel_source,
                               const std::optional<ImageSource>& initrd,
                               std::string_view command_line, uint64_t acpi_rsdp_address) {
  absl::StatusOr<BzImage> kernel = ParseBzImage(head, kernel_source.size, kernel_source.name);
  if (!kernel.ok()) return kernel.status();
  if (absl::Status status = CheckCommandLine(*kernel, kernel_source.name, command_line);
      !status.ok()) {
    return status;
  }
  absl::StatusOr<uint64_t> low_ram_end = LowRamEnd(memory);
  if (!low_ram_end.ok()) return low_ram_end.status();
  absl::StatusOr<uint64_t> kernel_end =
      KernelFootprintEnd(*kernel, kernel_source.name, *low_ram_end);
  if (!kernel_end.ok()) return kernel_end.status();
  uint64_t initrd_address = 0;
  if (initrd) {
    absl::StatusOr<uint64_t> placed = PlaceInitrd(*kernel, *initrd, *kernel_end, *low_ram_end);
    if (!placed.ok()) return placed.status();
    initrd_address = *placed;
  }

  std::vector<hw::GuestMemory::Range> ram;
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    ram.push_back({region.guest_address, region.size});
  }
  const std::vector<uint8_t> zero_page =
      BuildZeroPage(*kernel, initrd_address, initrd ? initrd->size : 0, acpi_rsdp_address,
                    BuildE820Map(ram));
  std::vector<uint8_t> command_line_bytes(command_line.begin(), command_line.end());
  command_line_bytes.push_back('\0');

  if (absl::Status status = CopyToGuest(memory, kKernelLoadAddress, kernel_source,
                                        kernel->protected_mode_offset,
                                        kernel->protected_mode_size);
      !status.ok()) {
    return status;
  }
  if (initrd) {
    if (absl::Status status = CopyToGuest(memory, initrd_address, *initrd, 0, initrd->size);
        !status.ok()) {
      return status;
    }
  }
  for (absl::Status status : {
           memory.Write(kCommandLineAddress, command_line_bytes),
           memory.Write(kZeroPageAddress, zero_page),
           WriteLongModeTables(memory),
       }) {
    if (!status.ok()) return status;
  }
  return LongModeBootState(kKernelLoadAddress + kKernel64BitEntryOffset, kZeroPageAddress);
}

}  // namespace

absl::StatusOr<BootState> LoadLinux(const hw::GuestMemory& memory, const LinuxBootConfig& config) {
  std::optional<ImageSource> initrd;
  if (!config.initrd.empty()) initrd = SourceFromBytes(config.initrd, config.initrd_name);
  return Load(memory, config.kernel, SourceFromBytes(config.kernel, config.kernel_name), initrd,
              config.command_line, config.acpi_rsdp_address);
}

absl::StatusOr<BootState> LoadLinuxFromFiles(const hw::GuestMemory& memory,
                                             const LinuxBootFiles& files) {
  absl::StatusOr<BootFile> kernel = BootFile::Open(files.kernel_path, "kernel");
  if (!kernel.ok()) return kernel.status();
  std::vector<uint8_t> head(std::min(kernel->size(), setup_header::kLimit));
  if (absl::Status status = kernel->ReadAt(0, head); !status.ok()) return status;

  std::optional<BootFile> initrd_file;
  std::optional<ImageSource> initrd;
  if (!files.initrd_path.empty()) {
    absl::StatusOr<BootFile> opened = BootFile::Open(files.initrd_path, "initrd");
    if (!opened.ok()) return opened.status();
    if (opened->size() == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("initrd file %s is empty", files.initrd_path));
    }
    initrd_file = std::move(*opened);
    initrd = SourceFromFile(*initrd_file);
  }
  return Load(memory, head, SourceFromFile(*kernel), initrd, files.command_line,
              files.acpi_rsdp_address);
}

}  // namespace kvmini::vmm::x86

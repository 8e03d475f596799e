#include "vmm/x86/bzimage_boot.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/x86/boot.h"
#include "vmm/x86/bzimage.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

uint64_t AlignUp(uint64_t value, uint64_t alignment) {
  return alignment == 0 ? value : (value + alignment - 1) / alignment * alignment;
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
  // pref_address comes from the file: saturate rather than wrap around,
  // which would let a hostile header pass the RAM check below.
  const uint64_t run_end =
      run_start > UINT64_MAX - kernel.init_size ? UINT64_MAX : run_start + kernel.init_size;
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
  StoreLittleEndian<uint32_t>(page, setup_header::kRamdiskSize, static_cast<uint32_t>(initrd_size));
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

}  // namespace

absl::StatusOr<BootState> LoadBzImageKernel(const hw::GuestMemory& memory,
                                            std::span<const uint8_t> head,
                                            const ImageSource& kernel_source,
                                            const std::optional<ImageSource>& initrd,
                                            std::string_view command_line,
                                            uint64_t acpi_rsdp_address) {
  absl::StatusOr<BzImage> kernel = ParseBzImage(head, kernel_source.size, kernel_source.name);
  if (!kernel.ok()) return kernel.status();
  absl::StatusOr<std::vector<uint8_t>> command_line_bytes =
      CommandLineBytes(command_line, kernel->cmdline_size, kernel_source.name);
  if (!command_line_bytes.ok()) return command_line_bytes.status();
  absl::StatusOr<uint64_t> low_ram_end = LowRamEnd(memory);
  if (!low_ram_end.ok()) return low_ram_end.status();
  absl::StatusOr<uint64_t> kernel_end =
      KernelFootprintEnd(*kernel, kernel_source.name, *low_ram_end);
  if (!kernel_end.ok()) return kernel_end.status();
  uint64_t initrd_address = 0;
  if (initrd) {
    absl::StatusOr<uint64_t> placed = PlaceInitrd(
        *initrd, *kernel_end,
        std::min(*low_ram_end, static_cast<uint64_t>(kernel->initrd_addr_max) + 1),
        "the lower of the kernel's initrd_addr_max and the end of RAM below the 3 GiB hole");
    if (!placed.ok()) return placed.status();
    initrd_address = *placed;
  }

  std::vector<hw::GuestMemory::Range> ram;
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    ram.push_back({region.guest_address, region.size});
  }
  const std::vector<uint8_t> zero_page = BuildZeroPage(
      *kernel, initrd_address, initrd ? initrd->size : 0, acpi_rsdp_address, BuildE820Map(ram));

  if (absl::Status status = CopyToGuest(memory, kKernelLoadAddress, kernel_source,
                                        kernel->protected_mode_offset, kernel->protected_mode_size);
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
           memory.Write(kCommandLineAddress, *command_line_bytes),
           memory.Write(kZeroPageAddress, zero_page),
           WriteLongModeTables(memory),
       }) {
    if (!status.ok()) return status;
  }
  return LongModeBootState(kKernelLoadAddress + kKernel64BitEntryOffset, kZeroPageAddress);
}

}  // namespace kvmini::vmm::x86

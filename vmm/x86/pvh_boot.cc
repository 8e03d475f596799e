#include "vmm/x86/pvh_boot.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/x86/little_endian.h"
#include "vmm/x86/memory_layout.h"

namespace kvmini::vmm::x86 {
namespace {

// ELF64 (System V gABI) header and program header fields we read.
constexpr uint64_t kElfHeaderSize = 64;
constexpr uint64_t kElfClass = 4;                 // u8: 2 = 64-bit
constexpr uint64_t kElfData = 5;                  // u8: 1 = little endian
constexpr uint64_t kElfType = 16;                 // u16: 2 = executable
constexpr uint64_t kElfMachine = 18;              // u16: 62 = x86-64
constexpr uint64_t kElfProgramHeaderOffset = 32;  // u64
constexpr uint64_t kElfProgramHeaderSize = 54;    // u16
constexpr uint64_t kElfProgramHeaderCount = 56;   // u16
constexpr uint64_t kProgramHeaderSize = 56;
constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kPtNote = 4;
// Generous bounds for a kernel's headers, against hostile files.
constexpr uint16_t kMaxProgramHeaders = 128;
constexpr uint64_t kMaxNoteSegmentBytes = 1 << 20;

uint64_t Align4(uint64_t value) { return (value + 3) & ~uint64_t{3}; }

absl::StatusOr<std::vector<uint8_t>> ReadBytes(const ImageSource& source, uint64_t offset,
                                               uint64_t size) {
  if (offset > source.size || source.size - offset < size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: truncated ELF file (needs bytes [%#x, +%#x), has %d)", source.name,
                        offset, size, source.size));
  }
  std::vector<uint8_t> bytes(size);
  if (absl::Status status = source.read(offset, bytes); !status.ok()) return status;
  return bytes;
}

// The PVH entry in a PT_NOTE segment's notes, if there.
absl::StatusOr<std::optional<uint32_t>> FindPvhEntry(std::span<const uint8_t> notes,
                                                     std::string_view name) {
  uint64_t offset = 0;
  while (notes.size() - offset >= 12) {
    const uint32_t name_size = LoadLittleEndian<uint32_t>(notes, offset);
    const uint32_t desc_size = LoadLittleEndian<uint32_t>(notes, offset + 4);
    const uint32_t type = LoadLittleEndian<uint32_t>(notes, offset + 8);
    const uint64_t name_offset = offset + 12;
    const uint64_t desc_offset = name_offset + Align4(name_size);
    const uint64_t next = desc_offset + Align4(desc_size);
    if (next > notes.size()) break;  // a malformed tail: no more notes
    constexpr uint8_t kXenName[] = {'X', 'e', 'n', 0};
    if (type == pvh::kPhys32EntryNote && name_size == sizeof(kXenName) &&
        std::memcmp(notes.data() + name_offset, kXenName, sizeof(kXenName)) == 0) {
      uint64_t entry;
      if (desc_size == 4) {
        entry = LoadLittleEndian<uint32_t>(notes, desc_offset);
      } else if (desc_size == 8) {
        entry = LoadLittleEndian<uint64_t>(notes, desc_offset);
      } else {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: the PVH entry note has a %d-byte address", name, desc_size));
      }
      if (entry > UINT32_MAX) {
        return absl::InvalidArgumentError(
            absl::StrFormat("%s: the PVH entry %#x is above 4 GiB", name, entry));
      }
      return static_cast<uint32_t>(entry);
    }
    offset = next;
  }
  return std::nullopt;
}

absl::Status WriteStartInfo(const hw::GuestMemory& memory, const std::optional<ImageSource>& initrd,
                            uint64_t initrd_address, uint64_t acpi_rsdp_address) {
  std::vector<hw::GuestMemory::Range> ram;
  for (const hw::GuestMemory::Region& region : memory.regions()) {
    ram.push_back({region.guest_address, region.size});
  }
  const std::vector<E820Entry> map = BuildE820Map(ram);
  std::vector<uint8_t> memory_map;
  for (const E820Entry& entry : map) {
    AppendLittleEndian<uint64_t>(memory_map, entry.address);
    AppendLittleEndian<uint64_t>(memory_map, entry.size);
    AppendLittleEndian<uint32_t>(memory_map, static_cast<uint32_t>(entry.type));
    AppendLittleEndian<uint32_t>(memory_map, 0);
  }
  KVMINI_CHECK(kPvhMemoryMapAddress + memory_map.size() <= kZeroPageAddress,
               "PVH memory map overflows its area");

  std::vector<uint8_t> modules;
  if (initrd) {
    AppendLittleEndian<uint64_t>(modules, initrd_address);
    AppendLittleEndian<uint64_t>(modules, initrd->size);
    AppendLittleEndian<uint64_t>(modules, 0);  // no module command line
    AppendLittleEndian<uint64_t>(modules, 0);
  }

  std::vector<uint8_t> start_info;
  AppendLittleEndian<uint32_t>(start_info, pvh::kStartInfoMagic);
  AppendLittleEndian<uint32_t>(start_info, pvh::kStartInfoVersion);
  AppendLittleEndian<uint32_t>(start_info, 0);  // flags
  AppendLittleEndian<uint32_t>(start_info, initrd ? 1 : 0);
  AppendLittleEndian<uint64_t>(start_info, initrd ? kPvhModuleListAddress : 0);
  AppendLittleEndian<uint64_t>(start_info, kCommandLineAddress);
  AppendLittleEndian<uint64_t>(start_info, acpi_rsdp_address);
  AppendLittleEndian<uint64_t>(start_info, kPvhMemoryMapAddress);
  AppendLittleEndian<uint32_t>(start_info, static_cast<uint32_t>(map.size()));
  AppendLittleEndian<uint32_t>(start_info, 0);  // reserved
  KVMINI_CHECK(start_info.size() == pvh::kStartInfoSize, "hvm_start_info layout");

  for (absl::Status status : {memory.Write(kPvhStartInfoAddress, start_info),
                              memory.Write(kPvhModuleListAddress, modules),
                              memory.Write(kPvhMemoryMapAddress, memory_map)}) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PvhKernel> ParsePvhKernel(const ImageSource& kernel) {
  auto invalid = [&kernel](std::string_view reason) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", kernel.name, reason));
  };
  absl::StatusOr<std::vector<uint8_t>> header = ReadBytes(kernel, 0, kElfHeaderSize);
  if (!header.ok()) return header.status();
  if ((*header)[kElfClass] != 2 || (*header)[kElfData] != 1 ||
      LoadLittleEndian<uint16_t>(*header, kElfMachine) != 62) {
    return invalid("not a 64-bit little-endian x86-64 ELF file");
  }
  if (LoadLittleEndian<uint16_t>(*header, kElfType) != 2) {
    return invalid("not an ELF executable (a kernel vmlinux is one)");
  }
  const uint16_t count = LoadLittleEndian<uint16_t>(*header, kElfProgramHeaderCount);
  if (LoadLittleEndian<uint16_t>(*header, kElfProgramHeaderSize) != kProgramHeaderSize ||
      count == 0 || count > kMaxProgramHeaders) {
    return invalid(absl::StrFormat("implausible ELF program headers (%d)", count));
  }
  absl::StatusOr<std::vector<uint8_t>> headers =
      ReadBytes(kernel, LoadLittleEndian<uint64_t>(*header, kElfProgramHeaderOffset),
                count * kProgramHeaderSize);
  if (!headers.ok()) return headers.status();

  PvhKernel result{0, {}, 0};
  std::optional<uint32_t> entry;
  for (uint16_t i = 0; i < count; ++i) {
    std::span<const uint8_t> program_header =
        std::span<const uint8_t>(*headers).subspan(i * kProgramHeaderSize, kProgramHeaderSize);
    const uint32_t type = LoadLittleEndian<uint32_t>(program_header, 0);
    const uint64_t offset = LoadLittleEndian<uint64_t>(program_header, 8);
    const uint64_t physical_address = LoadLittleEndian<uint64_t>(program_header, 24);
    const uint64_t file_size = LoadLittleEndian<uint64_t>(program_header, 32);
    const uint64_t memory_size = LoadLittleEndian<uint64_t>(program_header, 40);
    if (offset > kernel.size || kernel.size - offset < file_size) {
      return invalid(
          absl::StrFormat("truncated: segment %d needs bytes [%#x, +%#x)", i, offset, file_size));
    }
    if (type == kPtLoad && memory_size > 0) {
      if (file_size > memory_size || physical_address + memory_size < physical_address) {
        return invalid(absl::StrFormat("malformed loadable segment %d", i));
      }
      result.segments.push_back({offset, file_size, physical_address, memory_size});
      result.end = std::max(result.end, physical_address + memory_size);
    } else if (type == kPtNote && !entry && file_size <= kMaxNoteSegmentBytes) {
      absl::StatusOr<std::vector<uint8_t>> notes = ReadBytes(kernel, offset, file_size);
      if (!notes.ok()) return notes.status();
      absl::StatusOr<std::optional<uint32_t>> found = FindPvhEntry(*notes, kernel.name);
      if (!found.ok()) return found.status();
      entry = *found;
    }
  }
  if (result.segments.empty()) return invalid("ELF file has no loadable segments");
  if (!entry) {
    return invalid(
        "ELF kernel has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY note; Linux needs "
        "CONFIG_PVH=y): boot its bzImage instead");
  }
  result.entry = *entry;
  return result;
}

absl::StatusOr<BootState> LoadPvhKernel(const hw::GuestMemory& memory, const ImageSource& kernel,
                                        const std::optional<ImageSource>& initrd,
                                        std::string_view command_line, uint64_t acpi_rsdp_address) {
  absl::StatusOr<PvhKernel> parsed = ParsePvhKernel(kernel);
  if (!parsed.ok()) return parsed.status();
  absl::StatusOr<std::vector<uint8_t>> command_line_bytes =
      CommandLineBytes(command_line, pvh::kCommandLineLimit, kernel.name);
  if (!command_line_bytes.ok()) return command_line_bytes.status();
  absl::StatusOr<uint64_t> low_ram_end = LowRamEnd(memory);
  if (!low_ram_end.ok()) return low_ram_end.status();
  for (const ElfSegment& segment : parsed->segments) {
    if (segment.physical_address < kKernelLoadAddress) {
      return absl::InvalidArgumentError(
          absl::StrFormat("%s: a segment loads at %#x, below 1 MiB where the boot structures live",
                          kernel.name, segment.physical_address));
    }
  }
  if (parsed->end > *low_ram_end) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: the kernel needs guest RAM up to %s, but RAM below the 3 GiB hole ends at %s: "
        "give the guest more memory",
        kernel.name, Mebibytes(parsed->end), Mebibytes(*low_ram_end)));
  }
  uint64_t initrd_address = 0;
  if (initrd) {
    absl::StatusOr<uint64_t> placed =
        PlaceInitrd(*initrd, parsed->end, *low_ram_end, "the end of RAM below the 3 GiB hole");
    if (!placed.ok()) return placed.status();
    initrd_address = *placed;
  }

  for (const ElfSegment& segment : parsed->segments) {
    if (absl::Status status = CopyToGuest(memory, segment.physical_address, kernel,
                                          segment.file_offset, segment.file_size);
        !status.ok()) {
      return status;
    }
    // The segment's tail past its file bytes is .bss: zero it, in case the
    // memory was used before (a reboot).
    std::optional<std::span<uint8_t>> tail = memory.HostSpan(
        segment.physical_address + segment.file_size, segment.memory_size - segment.file_size);
    KVMINI_CHECK(tail.has_value(), "segment checked against RAM above");
    std::fill(tail->begin(), tail->end(), 0);
  }
  if (initrd) {
    if (absl::Status status = CopyToGuest(memory, initrd_address, *initrd, 0, initrd->size);
        !status.ok()) {
      return status;
    }
  }
  for (absl::Status status : {memory.Write(kCommandLineAddress, *command_line_bytes),
                              WriteStartInfo(memory, initrd, initrd_address, acpi_rsdp_address),
                              WriteLongModeTables(memory)}) {
    if (!status.ok()) return status;
  }
  return ProtectedModeBootState(parsed->entry, kPvhStartInfoAddress);
}

}  // namespace kvmini::vmm::x86

#include "tests/unit/vmm/x86/fake_vmlinux.h"

#include <string_view>

#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::x86::testing {
namespace {

constexpr uint64_t kHeaderSize = 64;
constexpr uint64_t kProgramHeaderSize = 56;

void AppendNote(std::vector<uint8_t>& notes, std::string_view name, uint32_t type,
                const std::vector<uint8_t>& descriptor) {
  AppendLittleEndian<uint32_t>(notes, static_cast<uint32_t>(name.size() + 1));
  AppendLittleEndian<uint32_t>(notes, static_cast<uint32_t>(descriptor.size()));
  AppendLittleEndian<uint32_t>(notes, type);
  notes.insert(notes.end(), name.begin(), name.end());
  notes.push_back(0);
  while (notes.size() % 4 != 0) notes.push_back(0);
  notes.insert(notes.end(), descriptor.begin(), descriptor.end());
  while (notes.size() % 4 != 0) notes.push_back(0);
}

std::vector<uint8_t> Notes(const FakeVmlinuxOptions& options) {
  std::vector<uint8_t> notes;
  AppendNote(notes, "GNU", 3, std::vector<uint8_t>(20, 0xAB));  // a build ID first
  AppendNote(notes, "Xen", 6, {'l', 'i', 'n', 'u', 'x', 0});    // another Xen note
  if (options.pvh_note) {
    std::vector<uint8_t> entry;
    for (uint32_t i = 0; i < options.pvh_entry_size; ++i) {
      entry.push_back((options.pvh_entry >> (8 * i)) & 0xFF);
    }
    AppendNote(notes, "Xen", 18, entry);
  }
  return notes;
}

uint64_t DataStart(const FakeVmlinuxOptions& options) {
  return kHeaderSize + (options.segments.size() + 1) * kProgramHeaderSize;
}

}  // namespace

uint64_t FakeSegmentOffset(const FakeVmlinuxOptions& options, size_t index) {
  uint64_t offset = DataStart(options) + Notes(options).size();
  for (size_t i = 0; i < index; ++i) offset += options.segments[i].file_size;
  return offset;
}

std::vector<uint8_t> MakeFakeVmlinux(const FakeVmlinuxOptions& options) {
  const std::vector<uint8_t> notes = Notes(options);
  std::vector<uint8_t> file(kHeaderSize, 0);
  file[0] = 0x7F;
  file[1] = 'E';
  file[2] = 'L';
  file[3] = 'F';
  file[4] = options.elf_class;
  file[5] = 1;                                // little endian
  file[6] = 1;                                // version
  StoreLittleEndian<uint16_t>(file, 16, 2);   // ET_EXEC
  StoreLittleEndian<uint16_t>(file, 18, 62);  // x86-64
  StoreLittleEndian<uint32_t>(file, 20, 1);
  StoreLittleEndian<uint64_t>(file, 24, 0x1000000);  // e_entry: not the PVH entry
  StoreLittleEndian<uint64_t>(file, 32, kHeaderSize);
  StoreLittleEndian<uint16_t>(file, 52, kHeaderSize);
  StoreLittleEndian<uint16_t>(file, 54, kProgramHeaderSize);
  StoreLittleEndian<uint16_t>(file, 56, static_cast<uint16_t>(options.segments.size() + 1));

  auto program_header = [&file](uint32_t type, uint64_t offset, uint64_t physical_address,
                                uint64_t file_size, uint64_t memory_size) {
    AppendLittleEndian<uint32_t>(file, type);
    AppendLittleEndian<uint32_t>(file, 0);  // flags
    AppendLittleEndian<uint64_t>(file, offset);
    AppendLittleEndian<uint64_t>(file, physical_address + 0xFFFFFFFF80000000);  // virtual
    AppendLittleEndian<uint64_t>(file, physical_address);
    AppendLittleEndian<uint64_t>(file, file_size);
    AppendLittleEndian<uint64_t>(file, memory_size);
    AppendLittleEndian<uint64_t>(file, 4);  // alignment
  };
  for (size_t i = 0; i < options.segments.size(); ++i) {
    const FakeSegment& segment = options.segments[i];
    program_header(1, FakeSegmentOffset(options, i), segment.physical_address, segment.file_size,
                   segment.memory_size);
  }
  program_header(4, DataStart(options), 0x2000000, notes.size(), notes.size());
  file.insert(file.end(), notes.begin(), notes.end());
  for (const FakeSegment& segment : options.segments) {
    for (uint64_t i = 0; i < segment.file_size; ++i) file.push_back((i * 13 + 5) & 0xFF);
  }
  return file;
}

}  // namespace kvmini::vmm::x86::testing

#include "tests/unit/vmm/x86/fake_bzimage.h"

#include "vmm/x86/bzimage.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::x86::testing {

uint64_t FakePayloadOffset(const FakeKernelOptions& options) {
  const uint64_t sectors = options.setup_sectors == 0 ? 4 : options.setup_sectors;
  return (sectors + 1) * 512;
}

std::vector<uint8_t> MakeFakeBzImage(const FakeKernelOptions& options) {
  namespace sh = setup_header;
  const uint64_t payload_offset = FakePayloadOffset(options);
  std::vector<uint8_t> image(payload_offset + options.payload_bytes, 0);
  image[sh::kSetupSectors] = options.setup_sectors;
  StoreLittleEndian<uint32_t>(image, sh::kSysSize,
                              static_cast<uint32_t>(options.payload_bytes / 16));
  StoreLittleEndian<uint16_t>(image, sh::kBootFlag, 0xAA55);
  image[sh::kJump] = 0xEB;
  image[sh::kJump + 1] = 0x6A;  // header ends at 0x26C, as in Linux 6.1
  StoreLittleEndian<uint32_t>(image, sh::kHeaderMagic, 0x53726448);
  StoreLittleEndian<uint16_t>(image, sh::kVersion, options.version);
  image[sh::kLoadFlags] = options.loadflags;
  StoreLittleEndian<uint32_t>(image, 0x214, 0x100000);  // code32_start
  StoreLittleEndian<uint32_t>(image, sh::kInitrdAddrMax, options.initrd_addr_max);
  StoreLittleEndian<uint32_t>(image, sh::kKernelAlignment, options.kernel_alignment);
  image[sh::kRelocatable] = options.relocatable;
  StoreLittleEndian<uint16_t>(image, sh::kXLoadFlags, options.xloadflags);
  StoreLittleEndian<uint32_t>(image, sh::kCmdlineSize, options.cmdline_size);
  StoreLittleEndian<uint64_t>(image, sh::kPrefAddress, options.pref_address);
  StoreLittleEndian<uint32_t>(image, sh::kInitSize, options.init_size);
  // Bytes past the header that must NOT reach the zero page.
  for (uint64_t offset = 0x26C; offset < 0x290; ++offset) image[offset] = 0xCC;
  for (uint64_t i = 0; i < options.payload_bytes; ++i) {
    image[payload_offset + i] = static_cast<uint8_t>((i * 7 + 3) & 0xFF);
  }
  return image;
}

}  // namespace kvmini::vmm::x86::testing

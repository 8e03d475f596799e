#include "vmm/x86/bzimage.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "util/check.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::x86 {
namespace {

using namespace setup_header;  // NOLINT: the offsets read better unqualified

std::string VersionString(uint16_t version) {
  return absl::StrFormat("%d.%02d", version >> 8, version & 0xFF);
}

}  // namespace

absl::StatusOr<BzImage> ParseBzImage(std::span<const uint8_t> head, uint64_t file_size,
                                     std::string_view name) {
  KVMINI_CHECK(head.size() <= file_size && head.size() >= std::min(file_size, kLimit),
               "ParseBzImage needs the file's first setup_header::kLimit bytes");
  std::span<const uint8_t> image = head.first(std::min(head.size(), kLimit));
  auto invalid = [name](std::string_view reason) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %s", name, reason));
  };
  if (file_size < kLimit) {
    return invalid(absl::StrFormat(
        "not a bzImage: only %d bytes, too short to hold the boot setup header", file_size));
  }
  if (LoadLittleEndian<uint16_t>(image, kBootFlag) != kBootFlagValue ||
      LoadLittleEndian<uint32_t>(image, kHeaderMagic) != kHeaderMagicValue) {
    return invalid("not a bzImage: no Linux boot signature (0xAA55 and \"HdrS\") in its header");
  }
  const uint16_t version = LoadLittleEndian<uint16_t>(image, kVersion);
  if (version < kMinimumVersion) {
    return invalid(absl::StrFormat(
        "kernel uses boot protocol %s; kvmini needs %s or newer (Linux 3.8+) for the 64-bit "
        "entry point",
        VersionString(version), VersionString(kMinimumVersion)));
  }
  if ((image[kLoadFlags] & kLoadedHigh) == 0) {
    return invalid("is a zImage (loaded below 1 MiB), not a bzImage");
  }
  if ((LoadLittleEndian<uint16_t>(image, kXLoadFlags) & kXlfKernel64) == 0) {
    return invalid("kernel has no 64-bit entry point (XLF_KERNEL_64 clear): not an x86-64 kernel");
  }
  if (image[kJump] != 0xEB) {
    return invalid("not a bzImage: the setup header does not start with a short jump");
  }
  const uint64_t header_end = kHeaderMagic + image[kJump + 1];
  if (header_end < kInitSize + 4) {
    return invalid(absl::StrFormat("setup header ends at %#x, too short for boot protocol %s",
                                   header_end, VersionString(version)));
  }
  if (header_end > kLimit) {
    return invalid(
        absl::StrFormat("setup header claims to end at %#x, past the zero page's header area (%#x)",
                        header_end, kLimit));
  }

  uint64_t setup_sectors = image[kSetupSectors];
  if (setup_sectors == 0) setup_sectors = 4;  // the protocol's historical default
  const uint64_t setup_bytes = (setup_sectors + 1) * 512;
  const uint64_t protected_mode_bytes =
      static_cast<uint64_t>(LoadLittleEndian<uint32_t>(image, kSysSize)) * 16;
  if (protected_mode_bytes == 0) return invalid("not a bzImage: its kernel size (syssize) is 0");
  if (file_size < setup_bytes + protected_mode_bytes) {
    return invalid(absl::StrFormat(
        "truncated: the header announces %d bytes (setup %d + kernel %d), the file has %d",
        setup_bytes + protected_mode_bytes, setup_bytes, protected_mode_bytes, file_size));
  }

  BzImage result;
  result.setup_header = image.subspan(kStart, header_end - kStart);
  // Everything after the setup code is loaded: there may be a few bytes past
  // syssize (signature, padding) that the kernel's own size checks expect.
  result.protected_mode_offset = setup_bytes;
  result.protected_mode_size = file_size - setup_bytes;
  result.protocol_version = version;
  result.initrd_addr_max = LoadLittleEndian<uint32_t>(image, kInitrdAddrMax);
  result.cmdline_size = LoadLittleEndian<uint32_t>(image, kCmdlineSize);
  result.relocatable = image[kRelocatable] != 0;
  result.kernel_alignment = LoadLittleEndian<uint32_t>(image, kKernelAlignment);
  result.pref_address = LoadLittleEndian<uint64_t>(image, kPrefAddress);
  result.init_size = LoadLittleEndian<uint32_t>(image, kInitSize);
  if (result.init_size == 0) return invalid("kernel header gives no init_size");
  return result;
}

}  // namespace kvmini::vmm::x86

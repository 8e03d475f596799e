#include "tests/unit/vmm/machine/tiny_bzimage.h"

#include <cstring>
#include <fstream>

namespace kvmini::vmm::testing {
namespace {

void Store16(std::vector<uint8_t>& image, size_t offset, uint16_t value) {
  std::memcpy(image.data() + offset, &value, sizeof(value));
}
void Store32(std::vector<uint8_t>& image, size_t offset, uint32_t value) {
  std::memcpy(image.data() + offset, &value, sizeof(value));
}
void Store64(std::vector<uint8_t>& image, size_t offset, uint64_t value) {
  std::memcpy(image.data() + offset, &value, sizeof(value));
}

constexpr size_t kSetupSectors = 1;
constexpr size_t kSetupBytes = (kSetupSectors + 1) * 512;
constexpr size_t kEntryOffset = 0x200;  // 64-bit entry = load address + 0x200

std::vector<uint8_t> Payload(uint8_t exit_status, TinyKernelEnd end) {
  std::vector<uint8_t> code = {
      0xBA, 0xF8, 0x03, 0x00, 0x00,        // mov edx, 0x3f8
      0x8B, 0xB6, 0x28, 0x02, 0x00, 0x00,  // mov esi, [rsi + 0x228]  (cmd_line_ptr)
      0xAC,                                // loop: lodsb
      0x84, 0xC0,                          // test al, al
      0x74, 0x03,                          // jz done
      0xEE,                                // out dx, al
      0xEB, 0xF8,                          // jmp loop
  };
  if (end == TinyKernelEnd::kExitPort) {
    code.insert(code.end(), {0xB0, exit_status, 0xE6, 0xF4});  // done: out 0xf4, status
  }
  code.insert(code.end(), {0xEB, 0xFE});  // jmp $
  return code;
}

}  // namespace

std::vector<uint8_t> TinyBzImage(uint8_t exit_status, TinyKernelEnd end) {
  std::vector<uint8_t> payload = Payload(exit_status, end);
  std::vector<uint8_t> kernel(kEntryOffset, 0x90);  // 32-bit entry area: never run
  kernel.insert(kernel.end(), payload.begin(), payload.end());
  kernel.resize((kernel.size() + 15) / 16 * 16, 0);

  std::vector<uint8_t> image(kSetupBytes, 0);
  image[0x1F1] = kSetupSectors;
  Store32(image, 0x1F4, static_cast<uint32_t>(kernel.size() / 16));  // syssize
  Store16(image, 0x1FE, 0xAA55);
  image[0x200] = 0xEB;  // jmp over the header, which ends at 0x264
  image[0x201] = 0x264 - 0x202;
  Store32(image, 0x202, 0x53726448);  // "HdrS"
  Store16(image, 0x206, 0x020F);      // protocol 2.15
  image[0x211] = 0x01;                // LOADED_HIGH
  Store32(image, 0x214, 0x100000);    // code32_start
  Store32(image, 0x22C, 0x7FFFFFFF);  // initrd_addr_max
  Store32(image, 0x230, 0x200000);    // kernel_alignment
  image[0x234] = 0;                   // not relocatable
  Store16(image, 0x236, 0x0003);      // XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
  Store32(image, 0x238, 2047);        // cmdline_size
  Store64(image, 0x258, 0x100000);    // pref_address
  Store32(image, 0x260, 0x10000);     // init_size
  image.insert(image.end(), kernel.begin(), kernel.end());
  return image;
}

absl::Status WriteTinyBzImage(const std::string& path, uint8_t exit_status, TinyKernelEnd end) {
  std::vector<uint8_t> image = TinyBzImage(exit_status, end);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(image.data()), static_cast<std::streamsize>(image.size()));
  file.close();
  if (!file) return absl::InternalError("cannot write the tiny bzImage to " + path);
  return absl::OkStatus();
}

}  // namespace kvmini::vmm::testing

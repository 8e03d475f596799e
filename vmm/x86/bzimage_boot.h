// Loading a bzImage through the Linux 64-bit boot protocol: kernel at
// 1 MiB, zero page (boot_params) with the kernel's setup header, command
// line, initrd, e820 map and RSDP address, long-mode page tables and GDT.
// Internal to vmm/x86; the machine uses boot.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "hw/memory/guest_memory.h"
#include "vmm/x86/load_support.h"
#include "vmm/x86/long_mode.h"

namespace kvmini::vmm::x86 {

// `head`: at least the kernel file's first setup_header::kLimit bytes.
absl::StatusOr<BootState> LoadBzImageKernel(const hw::GuestMemory& memory,
                                            std::span<const uint8_t> head,
                                            const ImageSource& kernel,
                                            const std::optional<ImageSource>& initrd,
                                            std::string_view command_line,
                                            uint64_t acpi_rsdp_address);

}  // namespace kvmini::vmm::x86

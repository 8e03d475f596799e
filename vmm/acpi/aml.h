// A small builder for AML (ACPI Machine Language) byte code: just what the
// DSDT of a kvmini machine needs - names, integers, strings, Scope, Device,
// Name, Buffer, Package, and resource templates with I/O ports, IRQs,
// 32-bit fixed memory and extended interrupts. Each function returns the
// encoded bytes of one term; callers concatenate them. Encodings follow the
// ACPI specification's AML grammar (chapter 20) and resource descriptors
// (section 6.4).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <vector>

namespace kvmini::vmm::acpi::aml {

using Bytes = std::vector<uint8_t>;

// PkgLength for a package whose contents after the PkgLength are
// `body_length` bytes (the encoded value counts the PkgLength itself).
Bytes PkgLength(uint64_t body_length);

// A name path such as "_SB_", "\\_SB_", "\\_SB_.COM1" or "_S5_". Each
// segment must be 1-4 characters of [A-Z0-9_] not starting with a digit; it
// is padded to 4 with '_'. A bad name is a kvmini bug (checked).
Bytes NameString(std::string_view path);

// The shortest encoding: ZeroOp, OneOp, OnesOp, or Byte/Word/DWord/QWord.
Bytes Integer(uint64_t value);
Bytes String(std::string_view ascii);
// A 7-character PNP ID ("PNP0501") compressed to its 32-bit EISA form.
Bytes EisaId(std::string_view id);

Bytes Name(std::string_view name, const Bytes& object);
Bytes Scope(std::string_view name, std::initializer_list<Bytes> terms);
Bytes Scope(std::string_view name, const std::vector<Bytes>& terms);
Bytes Device(std::string_view name, std::initializer_list<Bytes> terms);
Bytes Buffer(const Bytes& data);
Bytes Package(std::initializer_list<Bytes> elements);

// Resource descriptors for a ResourceTemplate.
enum class Trigger { kLevel, kEdge };
enum class Polarity { kActiveHigh, kActiveLow };
enum class Sharing { kExclusive, kShared };
// I/O port range with 16-bit decode, fixed at `base`.
Bytes IoPort(uint16_t base, uint8_t length);
// ISA IRQ, edge-triggered, active high, exclusive (IRQNoFlags).
Bytes IsaIrq(uint8_t irq);
Bytes Memory32Fixed(bool writable, uint32_t base, uint32_t length);
// One interrupt, consumed by the device.
Bytes ExtendedInterrupt(Trigger trigger, Polarity polarity, Sharing sharing, uint32_t gsi);
// A Buffer holding the descriptors followed by an EndTag.
Bytes ResourceTemplate(std::initializer_list<Bytes> descriptors);

// Concatenates terms.
Bytes Join(const std::vector<Bytes>& terms);

}  // namespace kvmini::vmm::acpi::aml

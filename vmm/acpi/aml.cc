#include "vmm/acpi/aml.h"

#include "util/check.h"
#include "vmm/x86/little_endian.h"

namespace kvmini::vmm::acpi::aml {
namespace {

using x86::AppendLittleEndian;

// Opcodes and prefixes (ACPI 6.x, 20.2).
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0A;
constexpr uint8_t kWordPrefix = 0x0B;
constexpr uint8_t kDWordPrefix = 0x0C;
constexpr uint8_t kStringPrefix = 0x0D;
constexpr uint8_t kQWordPrefix = 0x0E;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kExtOpPrefix = 0x5B;
constexpr uint8_t kDeviceOp = 0x82;  // after kExtOpPrefix
constexpr uint8_t kRootChar = '\\';
constexpr uint8_t kDualNamePrefix = 0x2E;
constexpr uint8_t kMultiNamePrefix = 0x2F;
constexpr uint8_t kNullName = 0x00;

// Resource descriptor tags (6.4).
constexpr uint8_t kIoPortTag = 0x47;      // small item 8, length 7
constexpr uint8_t kIrqNoFlagsTag = 0x22;  // small item 4, length 2
constexpr uint8_t kEndTag = 0x79;         // small item 0xF, length 1
constexpr uint8_t kMemory32FixedTag = 0x86;
constexpr uint8_t kExtendedInterruptTag = 0x89;

void Append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

void AppendNameSeg(Bytes& out, std::string_view segment) {
  KVMINI_CHECK(!segment.empty() && segment.size() <= 4, "AML name segment must be 1-4 chars");
  KVMINI_CHECK(segment[0] < '0' || segment[0] > '9', "AML name segment starts with a digit");
  for (char c : segment) {
    KVMINI_CHECK((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_',
                 "AML name segment has a character outside [A-Z0-9_]");
    out.push_back(static_cast<uint8_t>(c));
  }
  for (size_t i = segment.size(); i < 4; ++i) out.push_back('_');
}

// Term with a PkgLength: opcode bytes, PkgLength, then body.
Bytes Packaged(std::initializer_list<uint8_t> opcode, const Bytes& body) {
  Bytes out(opcode);
  Append(out, PkgLength(body.size()));
  Append(out, body);
  return out;
}

uint8_t HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  KVMINI_CHECK(c >= 'A' && c <= 'F', "EISA ID product number must be upper-case hex");
  return c - 'A' + 10;
}

}  // namespace

Bytes PkgLength(uint64_t body_length) {
  // The encoded length includes the PkgLength bytes themselves, so the size
  // of the encoding is chosen on body + encoding size.
  if (body_length + 1 < (1u << 6)) return {static_cast<uint8_t>(body_length + 1)};
  for (uint64_t extra_bytes = 1; extra_bytes <= 3; ++extra_bytes) {
    const uint64_t total = body_length + 1 + extra_bytes;
    if (total >= (1ull << (4 + 8 * extra_bytes))) continue;
    Bytes out{static_cast<uint8_t>((extra_bytes << 6) | (total & 0xF))};
    for (uint64_t i = 0; i < extra_bytes; ++i) out.push_back((total >> (4 + 8 * i)) & 0xFF);
    return out;
  }
  KVMINI_CHECK(false, "AML package longer than 2^28 bytes");
  return {};
}

Bytes NameString(std::string_view path) {
  Bytes out;
  if (!path.empty() && path[0] == '\\') {
    out.push_back(kRootChar);
    path.remove_prefix(1);
  }
  if (path.empty()) {
    out.push_back(kNullName);
    return out;
  }
  std::vector<std::string_view> segments;
  for (size_t dot; (dot = path.find('.')) != std::string_view::npos; path.remove_prefix(dot + 1)) {
    segments.push_back(path.substr(0, dot));
  }
  segments.push_back(path);
  if (segments.size() == 2) {
    out.push_back(kDualNamePrefix);
  } else if (segments.size() > 2) {
    KVMINI_CHECK(segments.size() <= 255, "AML name path too long");
    out.push_back(kMultiNamePrefix);
    out.push_back(static_cast<uint8_t>(segments.size()));
  }
  for (std::string_view segment : segments) AppendNameSeg(out, segment);
  return out;
}

Bytes Integer(uint64_t value) {
  if (value == 0) return {kZeroOp};
  if (value == 1) return {kOneOp};
  Bytes out;
  if (value <= 0xFF) {
    out.push_back(kBytePrefix);
    AppendLittleEndian<uint8_t>(out, value);
  } else if (value <= 0xFFFF) {
    out.push_back(kWordPrefix);
    AppendLittleEndian<uint16_t>(out, value);
  } else if (value <= 0xFFFFFFFF) {
    out.push_back(kDWordPrefix);
    AppendLittleEndian<uint32_t>(out, value);
  } else {
    out.push_back(kQWordPrefix);
    AppendLittleEndian<uint64_t>(out, value);
  }
  return out;
}

Bytes String(std::string_view ascii) {
  Bytes out{kStringPrefix};
  for (char c : ascii) {
    KVMINI_CHECK(c > 0 && c < 0x7F, "AML strings are printable ASCII");
    out.push_back(static_cast<uint8_t>(c));
  }
  out.push_back(0);
  return out;
}

Bytes EisaId(std::string_view id) {
  KVMINI_CHECK(id.size() == 7, "an EISA ID is 3 letters and 4 hex digits");
  uint8_t letters[3];
  for (int i = 0; i < 3; ++i) {
    KVMINI_CHECK(id[i] >= 'A' && id[i] <= 'Z', "EISA ID vendor must be upper-case letters");
    letters[i] = id[i] - 'A' + 1;  // 5 bits each
  }
  // Big-endian 16-bit vendor code (0 | 5 | 5 | 5 bits), then the product
  // number's two bytes; stored as a DWord in that byte order.
  return {kDWordPrefix, static_cast<uint8_t>((letters[0] << 2) | (letters[1] >> 3)),
          static_cast<uint8_t>(((letters[1] & 0x7) << 5) | letters[2]),
          static_cast<uint8_t>((HexDigit(id[3]) << 4) | HexDigit(id[4])),
          static_cast<uint8_t>((HexDigit(id[5]) << 4) | HexDigit(id[6]))};
}

Bytes Name(std::string_view name, const Bytes& object) {
  Bytes out{kNameOp};
  Append(out, NameString(name));
  Append(out, object);
  return out;
}

Bytes Scope(std::string_view name, const std::vector<Bytes>& terms) {
  Bytes body = NameString(name);
  Append(body, Join(terms));
  return Packaged({kScopeOp}, body);
}

Bytes Scope(std::string_view name, std::initializer_list<Bytes> terms) {
  return Scope(name, std::vector<Bytes>(terms));
}

Bytes Device(std::string_view name, std::initializer_list<Bytes> terms) {
  Bytes body = NameString(name);
  Append(body, Join(terms));
  return Packaged({kExtOpPrefix, kDeviceOp}, body);
}

Bytes Buffer(const Bytes& data) {
  Bytes body = Integer(data.size());
  Append(body, data);
  return Packaged({kBufferOp}, body);
}

Bytes Package(std::initializer_list<Bytes> elements) {
  KVMINI_CHECK(elements.size() <= 255, "AML Package with more than 255 elements");
  Bytes body{static_cast<uint8_t>(elements.size())};
  for (const Bytes& element : elements) Append(body, element);
  return Packaged({kPackageOp}, body);
}

Bytes IoPort(uint16_t base, uint8_t length) {
  constexpr uint8_t kDecode16 = 0x01;
  Bytes out{kIoPortTag, kDecode16};
  AppendLittleEndian<uint16_t>(out, base);  // minimum
  AppendLittleEndian<uint16_t>(out, base);  // maximum
  out.push_back(1);                         // alignment
  out.push_back(length);
  return out;
}

Bytes IsaIrq(uint8_t irq) {
  KVMINI_CHECK(irq < 16, "ISA IRQs are 0-15");
  Bytes out{kIrqNoFlagsTag};
  AppendLittleEndian<uint16_t>(out, static_cast<uint16_t>(1u << irq));
  return out;
}

Bytes Memory32Fixed(bool writable, uint32_t base, uint32_t length) {
  Bytes out{kMemory32FixedTag};
  AppendLittleEndian<uint16_t>(out, 9);  // descriptor length after this field
  out.push_back(writable ? 1 : 0);
  AppendLittleEndian<uint32_t>(out, base);
  AppendLittleEndian<uint32_t>(out, length);
  return out;
}

Bytes ExtendedInterrupt(Trigger trigger, Polarity polarity, Sharing sharing, uint32_t gsi) {
  constexpr uint8_t kConsumer = 1 << 0;
  uint8_t flags = kConsumer;
  if (trigger == Trigger::kEdge) flags |= 1 << 1;
  if (polarity == Polarity::kActiveLow) flags |= 1 << 2;
  if (sharing == Sharing::kShared) flags |= 1 << 3;
  Bytes out{kExtendedInterruptTag};
  AppendLittleEndian<uint16_t>(out, 6);  // flags, count, one interrupt number
  out.push_back(flags);
  out.push_back(1);
  AppendLittleEndian<uint32_t>(out, gsi);
  return out;
}

Bytes ResourceTemplate(std::initializer_list<Bytes> descriptors) {
  Bytes data;
  for (const Bytes& descriptor : descriptors) Append(data, descriptor);
  data.push_back(kEndTag);
  data.push_back(0);  // checksum 0: "not checked"
  return Buffer(data);
}

Bytes Join(const std::vector<Bytes>& terms) {
  Bytes out;
  for (const Bytes& term : terms) Append(out, term);
  return out;
}

}  // namespace kvmini::vmm::acpi::aml

// The DSDT: AML describing the devices the guest cannot probe for itself.
#include "absl/strings/str_format.h"
#include "vmm/acpi/aml.h"
#include "vmm/acpi/power_port.h"
#include "vmm/acpi/sdt.h"
#include "vmm/acpi/tables.h"

namespace kvmini::vmm::acpi {
namespace {

// DSDT revision 2: AML integers are 64 bits wide.
constexpr uint8_t kDsdtRevision = 2;

aml::Bytes Com1Device() {
  return aml::Device("COM1", {
                                 aml::Name("_HID", aml::EisaId("PNP0501")),
                                 aml::Name("_UID", aml::Integer(0)),
                                 aml::Name("_CRS", aml::ResourceTemplate({
                                                       aml::IoPort(x86::kCom1Port, 8),
                                                       aml::IsaIrq(x86::kCom1Irq),
                                                   })),
                             });
}

// The interrupt is edge-triggered because devices signal it through an
// irqfd without resample, which pulses the line once per event.
aml::Bytes VirtioMmioDevice(uint32_t index, const x86::MmioDeviceWindow& window) {
  return aml::Device(
      absl::StrFormat("V%03X", index),
      {
          aml::Name("_HID", aml::String("LNRO0005")),
          aml::Name("_UID", aml::Integer(index)),
          aml::Name("_CCA", aml::Integer(1)),  // DMA is cache coherent
          aml::Name("_CRS",
                    aml::ResourceTemplate({
                        aml::Memory32Fixed(true, static_cast<uint32_t>(window.base),
                                           static_cast<uint32_t>(window.size)),
                        aml::ExtendedInterrupt(aml::Trigger::kEdge, aml::Polarity::kActiveHigh,
                                               aml::Sharing::kExclusive, window.gsi),
                    })),
      });
}

}  // namespace

std::vector<uint8_t> BuildDsdt(const AcpiConfig& config) {
  std::vector<aml::Bytes> devices{Com1Device()};
  for (uint32_t i = 0; i < config.virtio_mmio_devices.size(); ++i) {
    devices.push_back(VirtioMmioDevice(i, config.virtio_mmio_devices[i]));
  }
  // _S5_: {SLP_TYPa, SLP_TYPb, reserved, reserved}. Without it Linux does
  // not offer ACPI power-off.
  const aml::Bytes soft_off =
      aml::Name("_S5_", aml::Package({aml::Integer(kSoftOffSleepType), aml::Integer(0),
                                      aml::Integer(0), aml::Integer(0)}));
  std::vector<uint8_t> table = SdtHeader("DSDT", kDsdtRevision);
  for (const aml::Bytes& term : {aml::Scope("\\_SB_", devices), soft_off}) {
    table.insert(table.end(), term.begin(), term.end());
  }
  FinishSdt(table);
  return table;
}

}  // namespace kvmini::vmm::acpi

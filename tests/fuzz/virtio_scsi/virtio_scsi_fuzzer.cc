// Fuzzes virtio-scsi through the virtio-mmio transport, down to the SCSI
// disk emulation: a driver (tests/fuzz/common) sets up the control, event
// and one or two request queues, then posts chains (request headers with
// any LUN and CDB, data-out, responses with sense and data-in, of any shape),
// TMF and AN requests on the control queue, raw descriptors and indices,
// kicks, sense_size/cdb_size config writes, injected disk errors and
// resets, against a 64 KiB in-memory disk (512- or 4096-byte blocks, maybe
// read-only). Checks (besides ASan/UBSan): nothing stays in flight once the
// loop is idle (TMFs included), and every reset completes before its write
// returns (see device_fixture.h). The CDB layer alone is fuzzed by scsi_cdb.
#include <cstdint>
#include <memory>

#include "hw/virtio/virtio_scsi.h"
#include "tests/fuzz/common/device_fixture.h"
#include "tests/fuzz/common/fuzz_input.h"

namespace {
using kvmini::fuzz::DeviceFixture;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvmini::fuzz::FuzzInput input(data, size);
  // Set-up: byte 0 (request queues, read-only, block size, ring size),
  // then the wanted features.
  const uint8_t setup = input.U8();
  const uint16_t request_queues = setup & 1 ? 2 : 1;
  const bool read_only = setup & 2;
  const uint32_t block_size = setup & 4 ? 4096 : 512;
  const uint32_t queue_size = 1u << ((setup >> 3) % 9);
  const uint64_t wanted = input.U64();

  DeviceFixture fixture(
      [&](std::unique_ptr<kvmini::block::BlockBackend> backend) {
        auto scsi = kvmini::hw::virtio::VirtioScsi::Create(
            std::move(backend), {.id = "sda",
                                 .num_request_queues = request_queues,
                                 .disk = {.block_size = block_size, .serial = "fuzz-serial"}});
        return scsi.ok() ? std::move(*scsi) : nullptr;
      },
      64 << 10, read_only);
  fixture.BringUp(wanted, queue_size,
                  kvmini::hw::virtio::virtio_scsi::kFirstRequestQueue + request_queues);
  fixture.RunOps(input);
  return 0;
}

// Fuzzes virtio-blk request handling through the virtio-mmio transport:
// a driver (tests/fuzz/common) negotiates features chosen by the input,
// sets up one or two queues, then posts chains (headers, data and status
// buffers of any shape and direction, direct or indirect), raw descriptors
// and ring indices, kicks, injected disk errors, config accesses and
// resets, against a 64 KiB in-memory disk that may be read-only. Checks
// (besides ASan/UBSan): nothing stays in flight once the loop is idle, and
// every reset completes before its write returns (see device_fixture.h).
#include <cstdint>
#include <memory>

#include "hw/virtio/virtio_blk.h"
#include "tests/fuzz/common/device_fixture.h"
#include "tests/fuzz/common/fuzz_input.h"

namespace {
using kvmini::fuzz::DeviceFixture;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvmini::fuzz::FuzzInput input(data, size);
  // Set-up: byte 0 (queues, read-only, ring size), then the wanted features.
  const uint8_t setup = input.U8();
  const uint16_t queues = setup & 1 ? 2 : 1;
  const bool read_only = setup & 2;
  const uint32_t queue_size = 1u << ((setup >> 2) % 9);
  const uint64_t wanted = input.U64();

  DeviceFixture fixture(
      [&](std::unique_ptr<kvmini::block::BlockBackend> backend) {
        auto blk = kvmini::hw::virtio::VirtioBlk::Create(
            std::move(backend), {.id = "vda", .serial = "fuzz-serial", .num_queues = queues});
        return blk.ok() ? std::move(*blk) : nullptr;
      },
      64 << 10, read_only);
  fixture.BringUp(wanted, queue_size, queues);
  fixture.RunOps(input);
  return 0;
}

// The operator side of the dataplane load tests (virtio-blk and
// virtio-scsi): stop, start and move a device's dataplane at random while a
// driver thread keeps requests in flight.
#pragma once

#include <random>
#include <span>

#include "absl/functional/function_ref.h"
#include "gtest/gtest.h"
#include "hw/virtio/mmio_transport.h"
#include "util/aio_context.h"

namespace kvmini::test {

// From the main loop thread, until `finished()`: one of stop, start, move to
// the next of `iothreads`, or serving the main loop a little (where the
// queues are while stopped). Returns how many operations ran.
inline int ChurnDataplane(hw::virtio::MmioTransport& transport, util::AioContext& main,
                          std::span<util::AioContext* const> iothreads,
                          absl::FunctionRef<bool()> finished) {
  int operations = 0;
  std::mt19937 random(7);
  while (!finished()) {
    switch (random() % 4) {
      case 0:
        transport.StopDataplaneAndWait();
        EXPECT_FALSE(transport.dataplane_status().running);
        break;
      case 1:
        transport.StartDataplaneAndWait();
        break;
      case 2:
        transport.MoveDataplaneAndWait(iothreads[operations % iothreads.size()]);
        break;
      default:
        for (int i = 0; i < 20; ++i) main.Poll(false);
        break;
    }
    ++operations;
  }
  return operations;
}

}  // namespace kvmini::test

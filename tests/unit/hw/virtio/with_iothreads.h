// A test fixture layer that gives a device test two IOThreads for its
// dataplane, torn down after the device (the testbed detaches from them).
// Shared by the virtio-blk and virtio-scsi dataplane tests.
#pragma once

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "hw/virtio/mmio_transport.h"
#include "util/iothread.h"

namespace kvmini::test {

// `DeviceTest` is a fixture with a `testbed_` (a unique_ptr to a testbed
// with transport()).
template <typename DeviceTest>
class WithIOThreads : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    for (const char* id : {"iothread0", "iothread1"}) {
      auto thread = util::IOThread::Create(id);
      ASSERT_TRUE(thread.ok()) << thread.status();
      iothreads_.push_back(std::move(*thread));
    }
  }
  void TearDown() override {
    this->testbed_.reset();  // before the IOThreads: it detaches from them
    iothreads_.clear();
    DeviceTest::TearDown();
  }
  util::AioContext& iothread(int i) { return iothreads_[i]->context(); }
  hw::virtio::MmioTransport& transport() { return this->testbed_->transport(); }
  bool Running() { return transport().dataplane_status().running; }

  std::vector<std::unique_ptr<util::IOThread>> iothreads_;
};

}  // namespace kvmini::test

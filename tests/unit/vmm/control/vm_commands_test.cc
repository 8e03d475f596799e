// The control socket's machine commands (VmCommands) on real disks without a
// machine: VirtioDisks over images in /dev/shm with two IOThreads, a fake
// RunControl standing in for the vCPUs, the harness playing the guest
// driver of disk vda from the main loop thread, and clients on the socket.
#include "vmm/control/vm_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/harness/blk_driver.h"
#include "tests/harness/virtio_driver.h"
#include "tests/harness/virtio_testbed.h"
#include "tests/unit/vmm/control/control_test_client.h"

namespace kvmini::vmm {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr uint64_t kRamBytes = 64 << 20;
constexpr uint64_t kImageBytes = 8 << 20;

// The vCPUs: they park asynchronously, from the main loop, as the machine's do.
class FakeRunControl final : public RunControl {
 public:
  uint32_t vcpu_count() const override { return 2; }
  absl::Duration uptime() const override { return absl::Seconds(5); }
  void PauseVcpus(absl::AnyInvocable<void() &&> parked) override {
    ++pauses;
    vcpus_paused = true;
    util::AioContext::Main()->ScheduleOneshot(std::move(parked));
  }
  void ResumeVcpus() override {
    ++resumes;
    vcpus_paused = false;
  }
  void PowerOff(std::string reason) override {
    power_off_reason = std::move(reason);
    if (on_power_off) on_power_off();
  }

  int pauses = 0;
  int resumes = 0;
  bool vcpus_paused = false;
  std::string power_off_reason;
  // Runs inside PowerOff: what the machine would see as kvmini exits.
  std::function<void()> on_power_off;
};

class VmCommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto main = util::AioContext::CreateMain();
    ASSERT_TRUE(main.ok());
    main_ = std::move(*main);
    for (int i = 0; i < 3; ++i) {
      auto image = test::CreateTemporaryImage(kImageBytes);
      ASSERT_TRUE(image.ok()) << image.status();
      images_.push_back(*image);
    }
    auto memory = hw::GuestMemory::Allocate({{0, kRamBytes}});
    ASSERT_TRUE(memory.ok());
    memory_ = std::move(*memory);
    allocator_ = std::make_unique<test::GuestAllocator>(4096, kRamBytes);
    std::vector<DiskSpec> specs(3);
    specs[0] = {.type = DiskType::kBlk, .id = "vda", .path = images_[0], .iothread = "io0"};
    specs[1] = {.type = DiskType::kScsi, .id = "sda", .path = images_[1], .iothread = "io1"};
    specs[2] = {.type = DiskType::kBlk, .id = "vdb", .path = images_[2]};
    auto disks = VirtioDisks::Create(*memory_, {"io0", "io1"}, specs);
    ASSERT_TRUE(disks.ok()) << disks.status();
    disks_ = std::move(*disks);

    char directory[] = "/tmp/kvmini-vm-commands-XXXXXX";
    ASSERT_NE(mkdtemp(directory), nullptr);
    directory_ = directory;
    auto server = ControlServer::Create(directory_ + "/control.sock", *main_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    commands_ = std::make_unique<VmCommands>(run_, *disks_);
    commands_->RegisterWith(*server_);
    client_ = std::make_unique<testing::ControlTestClient>(*main_);
    fd_ = client_->Connect(directory_ + "/control.sock");
    client_->ReadMessage(fd_);  // greeting
  }

  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    commands_.reset();
    server_.reset();
    blk_.reset();
    driver_.reset();
    disks_.reset();
    for (const std::string& image : images_) unlink(image.c_str());
    rmdir(directory_.c_str());
  }

  // The guest driver of vda: negotiated, one queue, DRIVER_OK.
  void StartVdaDriver() {
    hw::virtio::MmioTransport& transport = *disks_->FindDisk("vda")->transport;
    std::vector<int> notify_fds;
    for (const auto& notifier : transport.queue_notifiers()) notify_fds.push_back(notifier.fd);
    driver_ = std::make_unique<test::VirtioDriver>(transport, *memory_, *allocator_,
                                                   transport.interrupt_fd(), notify_fds);
    blk_ = std::make_unique<test::BlkDriver>(*driver_, *memory_, *allocator_);
    ASSERT_TRUE(blk_->Start(0, 1, 128).ok());
  }

  json Execute(const std::string& command, json arguments = json::object()) {
    return client_->Execute(fd_, {{"execute", command}, {"arguments", arguments}});
  }
  json Device(const std::string& id) {
    json answer = Execute("query-devices");
    for (const json& device : answer["return"]["devices"]) {
      if (device["id"] == id) return device;
    }
    ADD_FAILURE() << "query-devices has no " << id << ": " << answer;
    return json();
  }

  std::vector<uint8_t> Pattern(uint32_t seed, size_t bytes) {
    std::vector<uint8_t> data(bytes);
    std::mt19937 random(seed);
    for (uint8_t& byte : data) byte = static_cast<uint8_t>(random());
    return data;
  }
  // Writes then reads back 8 KiB at `sector` through vda.
  void RoundTrip(uint64_t sector, uint32_t seed) {
    std::vector<uint8_t> data = Pattern(seed, 8192);
    auto written =
        blk_->Run(0, {.type = hw::virtio::blk::kTypeOut, .sector = sector, .out_data = data});
    ASSERT_TRUE(written.ok());
    EXPECT_EQ(written->status, hw::virtio::blk::kStatusOk);
    auto read =
        blk_->Run(0, {.type = hw::virtio::blk::kTypeIn, .sector = sector, .in_length = 8192});
    ASSERT_TRUE(read.ok());
    EXPECT_EQ(read->status, hw::virtio::blk::kStatusOk);
    EXPECT_EQ(read->in_data, data);
  }
  std::vector<uint8_t> ImageBytes(int index) {
    std::vector<uint8_t> bytes(kImageBytes);
    int fd = open(images_[index].c_str(), O_RDONLY);
    EXPECT_EQ(pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
    close(fd);
    return bytes;
  }

  // Posts `count` 4 KiB writes of fresh patterns to vda's first sectors
  // and kicks, without waiting; returns what each writes.
  std::vector<std::vector<uint8_t>> PostWrites(int count, uint32_t seed) {
    std::vector<std::vector<uint8_t>> written;
    for (int i = 0; i < count; ++i) {
      written.push_back(Pattern(seed + i, 4096));
      EXPECT_TRUE(blk_->Post(0, {.type = hw::virtio::blk::kTypeOut,
                                 .sector = static_cast<uint64_t>(i) * 8,
                                 .out_data = written.back()})
                      .ok());
    }
    driver_->Kick(0);
    return written;
  }
  // vda's image holds `written` from sector 0 on.
  void ExpectWritesInImage(const std::vector<std::vector<uint8_t>>& written) {
    std::vector<uint8_t> image = ImageBytes(0);
    for (size_t i = 0; i < written.size(); ++i) {
      EXPECT_EQ(std::memcmp(image.data() + i * 4096, written[i].data(), 4096), 0) << i;
    }
  }

  std::unique_ptr<util::AioContext> main_;
  std::vector<std::string> images_;
  std::unique_ptr<hw::GuestMemory> memory_;
  std::unique_ptr<test::GuestAllocator> allocator_;
  std::unique_ptr<VirtioDisks> disks_;
  FakeRunControl run_;
  std::string directory_;
  std::unique_ptr<ControlServer> server_;
  std::unique_ptr<VmCommands> commands_;
  std::unique_ptr<testing::ControlTestClient> client_;
  int fd_ = -1;
  std::unique_ptr<test::VirtioDriver> driver_;
  std::unique_ptr<test::BlkDriver> blk_;
};

TEST_F(VmCommandsTest, StopAndContPauseAndResumeOnce) {
  json status = Execute("query-status")["return"];
  EXPECT_EQ(status["status"], "running");
  EXPECT_EQ(status["running"], true);
  EXPECT_EQ(status["vcpus"], 2);
  EXPECT_DOUBLE_EQ(status["uptime_s"].get<double>(), 5.0);

  EXPECT_EQ(Execute("stop")["return"]["status"], "paused");
  EXPECT_EQ(run_.pauses, 1);
  EXPECT_TRUE(run_.vcpus_paused);
  EXPECT_EQ(Execute("query-status")["return"]["status"], "paused");
  EXPECT_EQ(Execute("stop")["return"]["status"], "paused");  // already: nothing more
  EXPECT_EQ(run_.pauses, 1);

  EXPECT_EQ(Execute("cont")["return"]["status"], "running");
  EXPECT_EQ(run_.resumes, 1);
  EXPECT_FALSE(run_.vcpus_paused);
  EXPECT_EQ(Execute("cont")["return"]["status"], "running");
  EXPECT_EQ(run_.resumes, 1);
  EXPECT_EQ(Execute("query-status")["return"]["running"], true);
}

TEST_F(VmCommandsTest, QueryDevicesReportsEachDisk) {
  StartVdaDriver();
  RoundTrip(64, 1);
  json vda = Device("vda");
  EXPECT_EQ(vda["type"], "virtio-blk");
  EXPECT_EQ(vda["path"], images_[0]);
  EXPECT_EQ(vda["iothread"], "io0");
  EXPECT_EQ(vda["dataplane_running"], true);
  EXPECT_EQ(vda["read_only"], false);
  EXPECT_EQ(vda["requests_completed"], 2);
  EXPECT_EQ(vda["requests_in_flight"], 0);
  EXPECT_EQ(vda["bytes_written"], 8192);
  EXPECT_EQ(vda["bytes_read"], 8192);
  EXPECT_EQ(vda["errors"], 0);
  EXPECT_GT(vda["last_start_us"].get<int64_t>(), 0);  // started at DRIVER_OK
  json sda = Device("sda");
  EXPECT_EQ(sda["type"], "virtio-scsi");
  EXPECT_EQ(sda["iothread"], "io1");
  EXPECT_EQ(sda["dataplane_running"], false);  // no driver: not active
  EXPECT_EQ(Device("vdb")["iothread"], nullptr);
  // A request the device refuses counts as an error.
  auto beyond = blk_->Run(
      0, {.type = hw::virtio::blk::kTypeIn, .sector = kImageBytes / 512, .in_length = 512});
  ASSERT_TRUE(beyond.ok());
  EXPECT_EQ(beyond->status, hw::virtio::blk::kStatusIoError);
  EXPECT_EQ(Device("vda")["errors"], 1);
}

TEST_F(VmCommandsTest, DataplaneCommandsMoveARunningDisk) {
  StartVdaDriver();
  json stopped = Execute("dataplane-stop", {{"device", "vda"}})["return"];
  EXPECT_EQ(stopped["device"], "vda");
  EXPECT_EQ(stopped["dataplane_running"], false);
  EXPECT_GT(stopped["last_stop_us"].get<int64_t>(), 0);
  RoundTrip(8, 2);  // served by the main loop
  EXPECT_EQ(Execute("dataplane-stop", {{"device", "vda"}})["return"]["dataplane_running"],
            false);  // idempotent
  EXPECT_EQ(Execute("dataplane-start", {{"device", "vda"}})["return"]["dataplane_running"], true);
  RoundTrip(16, 3);
  json moved = Execute("device-set-iothread", {{"device", "vda"}, {"iothread", "io1"}})["return"];
  EXPECT_EQ(moved["iothread"], "io1");
  EXPECT_EQ(moved["dataplane_running"], true);
  EXPECT_EQ(Device("vda")["iothread"], "io1");
  RoundTrip(24, 4);
  json detached = Execute("device-set-iothread", {{"device", "vda"}, {"iothread", nullptr}});
  EXPECT_EQ(detached["return"]["iothread"], nullptr);
  EXPECT_EQ(detached["return"]["dataplane_running"], false);
  RoundTrip(32, 5);
  json refused = Execute("dataplane-start", {{"device", "vda"}});
  EXPECT_EQ(refused["error"]["class"], kErrorGeneric);
  EXPECT_THAT(refused["error"]["desc"].get<std::string>(), HasSubstr("'vda' has no iothread"));
  EXPECT_EQ(Execute("device-set-iothread",
                    {{"device", "vda"}, {"iothread", "io0"}})["return"]["dataplane_running"],
            true);
  RoundTrip(40, 6);
}

TEST_F(VmCommandsTest, ErrorsNameTheArgumentAtFault) {
  struct Case {
    std::string command;
    json arguments;
    std::string error_class;
    std::string in_description;
  };
  const Case cases[] = {
      {"dataplane-stop", json::object(), kErrorInvalidParameter, "argument 'device'"},
      {"dataplane-start", {{"device", 5}}, kErrorInvalidParameter, "vda, sda, vdb"},
      {"dataplane-stop", {{"device", "vdz"}}, kErrorDeviceNotFound, "no disk 'vdz'"},
      {"device-set-iothread",
       {{"device", "vdz"}, {"iothread", "io0"}},
       kErrorDeviceNotFound,
       "'vdz'"},
      {"device-set-iothread",
       {{"device", "vda"}},
       kErrorInvalidParameter,
       "argument 'iothread' (an iothread id: io0, io1"},
      {"device-set-iothread",
       {{"device", "vda"}, {"iothread", "io9"}},
       kErrorInvalidParameter,
       "no iothread 'io9' (iothreads: io0, io1)"},
      {"dataplane-start", {{"device", "vdb"}}, kErrorGeneric, "'vdb' has no iothread"},
  };
  for (const Case& c : cases) {
    json answer = Execute(c.command, c.arguments);
    EXPECT_EQ(answer["error"]["class"], c.error_class) << c.command << " " << c.arguments;
    EXPECT_THAT(answer["error"]["desc"].get<std::string>(), HasSubstr(c.in_description));
  }
  EXPECT_EQ(Device("vda")["iothread"], "io0");  // nothing changed
}

// stop answers once every request in flight has completed and the images
// are flushed; nothing changes while paused; cont restarts the dataplane.
TEST_F(VmCommandsTest, StopQuiescesRequestsInFlight) {
  StartVdaDriver();
  constexpr int kRequests = 32;
  const std::vector<std::vector<uint8_t>> written = PostWrites(kRequests, 100);
  json stopped = Execute("stop")["return"];
  EXPECT_EQ(stopped["status"], "paused");
  // Everything the guest had posted has been answered by now.
  for (const char* id : {"vda", "sda", "vdb"}) {
    json device = Device(id);
    EXPECT_EQ(device["requests_in_flight"], 0) << id;
    EXPECT_EQ(device["dataplane_running"], false) << id;
  }
  EXPECT_EQ(Device("vda")["requests_completed"], kRequests);
  auto completions = blk_->Collect(0);
  EXPECT_EQ(completions.size(), static_cast<size_t>(kRequests));
  ExpectWritesInImage(written);
  const std::vector<uint8_t> image = ImageBytes(0);
  absl::Time until = absl::Now() + absl::Milliseconds(50);
  while (absl::Now() < until) main_->Poll(false);
  EXPECT_EQ(ImageBytes(0), image);

  EXPECT_EQ(Execute("cont")["return"]["status"], "running");
  EXPECT_EQ(Device("vda")["dataplane_running"], true);
  RoundTrip(512, 7);
}

// The operator's dataplane choices survive a pause: a start while paused is
// applied by cont, a stopped dataplane stays stopped.
TEST_F(VmCommandsTest, ContRestoresTheDataplanesAsWanted) {
  StartVdaDriver();
  Execute("dataplane-stop", {{"device", "vda"}});
  Execute("stop");
  Execute("cont");
  EXPECT_EQ(Device("vda")["dataplane_running"], false);
  EXPECT_EQ(Device("vda")["dataplane_wanted"], false);
  Execute("stop");
  json deferred = Execute("dataplane-start", {{"device", "vda"}})["return"];
  EXPECT_EQ(deferred["deferred_until_cont"], true);
  EXPECT_EQ(deferred["dataplane_running"], false);
  json moved = Execute("device-set-iothread", {{"device", "vda"}, {"iothread", "io1"}})["return"];
  EXPECT_EQ(moved["dataplane_running"], false);  // still paused
  Execute("cont");
  json vda = Device("vda");
  EXPECT_EQ(vda["dataplane_running"], true);
  EXPECT_EQ(vda["iothread"], "io1");
  RoundTrip(0, 8);
}

TEST_F(VmCommandsTest, QuitQuiescesThenPowersOff) {
  StartVdaDriver();
  RoundTrip(0, 9);
  json answer = Execute("quit");
  EXPECT_EQ(answer["return"]["status"], "powering off");
  EXPECT_EQ(run_.pauses, 1);
  EXPECT_THAT(run_.power_off_reason, HasSubstr("quit"));
  EXPECT_EQ(Device("vda")["dataplane_running"], false);
}

// quit with requests in flight: by the time the machine is powered off
// every request has been answered, and its data is in the image.
TEST_F(VmCommandsTest, QuitWithRequestsInFlightAnswersThemBeforePowerOff) {
  StartVdaDriver();
  constexpr int kRequests = 32;
  const std::vector<std::vector<uint8_t>> written = PostWrites(kRequests, 200);
  uint16_t used_at_power_off = 0;
  json in_flight_at_power_off;
  run_.on_power_off = [&] {
    used_at_power_off = driver_->queue(0).used_index();
    for (const VirtioDisks::Disk& disk : disks_->disks()) {
      in_flight_at_power_off[disk.spec.id] = disk.counters().in_flight;
    }
  };
  EXPECT_EQ(Execute("quit")["return"]["status"], "powering off");
  EXPECT_EQ(used_at_power_off, kRequests);
  EXPECT_EQ(in_flight_at_power_off, (json{{"vda", 0}, {"sda", 0}, {"vdb", 0}}));
  ExpectWritesInImage(written);
}

// A client that hangs up while its stop is under way (vCPUs asked to park,
// the disks not yet quiesced): the pause still completes as a whole,
// another client sees it and resumes the machine, and the disks work again.
TEST_F(VmCommandsTest, ClientGoneMidStopLeavesAConsistentPause) {
  StartVdaDriver();
  int leaving = client_->Connect(directory_ + "/control.sock");
  client_->ReadMessage(leaving);
  client_->SendRaw(leaving, json{{"execute", "stop"}}.dump() + "\n");
  while (run_.pauses == 0) main_->Poll(true);
  close(leaving);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Execute("query-status")["return"]["status"] != "paused" && absl::Now() < deadline) {
    main_->Poll(false);
  }
  EXPECT_EQ(Execute("query-status")["return"]["status"], "paused");
  EXPECT_EQ(run_.pauses, 1);
  EXPECT_TRUE(run_.vcpus_paused);
  EXPECT_EQ(Device("vda")["dataplane_running"], false);
  EXPECT_EQ(Execute("cont")["return"]["status"], "running");
  EXPECT_EQ(Device("vda")["dataplane_running"], true);
  RoundTrip(0, 11);
}

// Commands for one disk from two clients, sent before the loop runs: the
// second arrives while the first's dataplane move polls the main loop, and
// is queued behind it instead of waiting there (which would never end).
TEST_F(VmCommandsTest, CommandsFromTwoClientsForOneDiskDoNotBlockEachOther) {
  StartVdaDriver();
  int other = client_->Connect(directory_ + "/control.sock");
  client_->ReadMessage(other);
  for (int round = 0; round < 20; ++round) {
    client_->SendRaw(
        fd_, json{{"execute", "dataplane-stop"}, {"arguments", {{"device", "vda"}}}, {"id", round}}
                     .dump() +
                 "\n");
    client_->SendRaw(other, json{{"execute", round % 2 ? "dataplane-start" : "stop"},
                                 {"arguments", {{"device", "vda"}}},
                                 {"id", round}}
                                    .dump() +
                                "\n");
    client_->SendRaw(other, json{{"execute", "device-set-iothread"},
                                 {"arguments", {{"device", "vda"}, {"iothread", "io1"}}}}
                                    .dump() +
                                "\n");
    client_->SendRaw(fd_, json{{"execute", "cont"}}.dump() + "\n");
    EXPECT_EQ(client_->ReadMessage(fd_)["id"], round);
    EXPECT_TRUE(client_->ReadMessage(fd_).contains("return"));
    EXPECT_EQ(client_->ReadMessage(other)["id"], round);
    EXPECT_TRUE(client_->ReadMessage(other).contains("return"));
  }
  Execute("cont");
  Execute("dataplane-start", {{"device", "vda"}});
  EXPECT_EQ(Device("vda")["dataplane_running"], true);
  RoundTrip(0, 10);
  close(other);
}

}  // namespace
}  // namespace kvmini::vmm

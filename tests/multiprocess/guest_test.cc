// SPDX-License-Identifier: Apache-2.0
// The guest process: Connect (retries until the host appears, times out, refuses broken segments with
// distinct errors and no crash, one guest at a time, the next once the first leaves) and its workers (one per host
// slot, heartbeats answered by the runtime, a throwing handler fails only its call).
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <functional>
#include <ostream>
#include <string_view>
#include <thread>

#include "../common/fake_host.h"
#include "shm/log.h"
#include "shm/platform/platform.h"
#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;

// Counts the host's refusals of a guest because the seat is taken (its log says so, at debug level).
class SeatRefusals {
 public:
  SeatRefusals() {
    shm::SetLogSink([this](shm::LogLevel, std::string_view m) {
      if (m.find("the guest seat is held") != std::string_view::npos) count_.fetch_add(1);
    });
  }
  SeatRefusals(const SeatRefusals&) = delete;
  SeatRefusals& operator=(const SeatRefusals&) = delete;
  ~SeatRefusals() { shm::SetLogSink(nullptr); }
  bool WaitFor(int n, Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (count_.load() < n && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return count_.load() >= n;
  }

 private:
  std::atomic<int> count_{0};
};

TEST(Connect, RetriesUntilTheHostAppears) {
  SegmentName name("latehost");
  Process guest;
  {
    // A host that is shutting down answers every hello so: the guest must try again later.
    FakeReply reply;
    reply.status = static_cast<uint32_t>(shm::wire::AttachStatus::kShuttingDown);
    reply.descriptors = 0;
    FakeHost leaving(name.str(), {}, 4096, reply);
    ASSERT_TRUE(leaving.ok()) << leaving.error();
    guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "60000"});
    ASSERT_TRUE(guest.started()) << guest.error();
    // Two hellos: it asked, was told to wait, and asked again.
    const auto deadline = Clock::now() + kLong;
    while (leaving.hellos() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_GE(leaving.hellos(), 2) << "the guest did not retry; its output:\n" << guest.transcript();
    EXPECT_FALSE(guest.Exited()) << "the guest gave up before its connect timeout";
  }
  shm::DirectHost host;
  auto r = host.Init(MakeHostConfig(name.str()));
  ASSERT_TRUE(r) << Describe(r);
  ASSERT_TRUE(GetLine(guest, "SERVING"));
  std::vector<uint8_t> out;
  auto s = host.Send("found you", MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(s) << Describe(s);
  EXPECT_EQ(Str(out), "found you");
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

TEST(Connect, TimesOutWithNotFoundWhenNoHostAppears) {
  SegmentName name("nohost");
  Process guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "300"});
  ASSERT_TRUE(guest.started()) << guest.error();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind("CONNECT_FAILED NotFound", 0), 0u) << line;
  EXPECT_TRUE(ExitsWith(guest, ExitCodeFor(ErrorCode::kNotFound)));
}

TEST(Connect, SecondGuestIsRefusedWhileTheFirstStays) {
  SegmentName name("twoguests");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str())));
  Process first = SpawnPeer({"guest", "--name", name.str()});
  ASSERT_TRUE(first.started()) << first.error();
  ASSERT_TRUE(GetLine(first, "SERVING"));
  Process second = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "3000"});
  ASSERT_TRUE(second.started()) << second.error();
  std::string line;
  ASSERT_TRUE(GetLine(second, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind("CONNECT_FAILED GuestAlreadyConnected", 0), 0u) << line;
  EXPECT_NE(line.find("pid " + std::to_string(first.pid())), std::string::npos) << line;
  EXPECT_TRUE(ExitsWith(second, ExitCodeFor(ErrorCode::kGuestAlreadyConnected)));
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(first, kExitOk));
}

// A guest that finds another attached keeps trying until its deadline: it attaches once the first leaves.
TEST(Connect, SecondGuestAttachesOnceTheFirstLeaves) {
  SegmentName name("nextguest");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str())));
  Process first = SpawnPeer({"guest", "--name", name.str(), "--mode", "attach-only"});
  ASSERT_TRUE(first.started()) << first.error();
  ASSERT_TRUE(GetLine(first, "CONNECTED"));
  SeatRefusals refusals;
  Process second = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "60000"});
  ASSERT_TRUE(second.started()) << second.error();
  // Refused twice while the first guest stays: the second was refused and is trying again.
  ASSERT_TRUE(refusals.WaitFor(2, kLong)) << "the second guest did not retry; its output:\n" << second.transcript();
  first.CloseStdin();  // the first guest closes and exits
  ASSERT_TRUE(ExitsWith(first, kExitOk));
  ASSERT_TRUE(GetLine(second, "SERVING"));
  std::vector<uint8_t> out;
  auto r = host.Send("second", MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(Str(out), "second");
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(second, kExitOk));
}

// ---- Broken segments -------------------------------------------------------------------------------------------
// This process plays a live host with a broken segment or a broken reply (FakeHost).

struct CraftedFile {
  std::vector<uint8_t> header = std::vector<uint8_t>(shm::wire::kSegmentHeaderSize, 0);
  uint64_t file_size = 0;
  FakeReply reply;
  template <typename T>
  void Set(size_t offset, T v) {
    std::memcpy(header.data() + offset, &v, sizeof v);
  }
};

struct BrokenCase {
  const char* label;
  ErrorCode expected;
  std::function<void(CraftedFile&)> mutate;
};

std::ostream& operator<<(std::ostream& os, const BrokenCase& c) { return os << c.label; }

CraftedFile ValidFile() {
  using H = shm::wire::SegmentHeader;
  shm::wire::Geometry g;
  g.host_slots = 2;
  g.guest_slots = 1;
  g.host_payload = 4096;
  g.guest_payload = 4096;
  CraftedFile f;
  f.Set<uint64_t>(offsetof(H, magic), shm::wire::kMagic);
  f.Set<uint32_t>(offsetof(H, version), shm::wire::kVersion);
  f.Set<uint32_t>(offsetof(H, header_size), shm::wire::kSegmentHeaderSize);
  f.Set<uint32_t>(offsetof(H, slot_header_size), shm::wire::kSlotHeaderSize);
  f.Set<uint32_t>(offsetof(H, host_slots), g.host_slots);
  f.Set<uint32_t>(offsetof(H, guest_slots), g.guest_slots);
  f.Set<uint32_t>(offsetof(H, host_payload), g.host_payload);
  f.Set<uint32_t>(offsetof(H, guest_payload), g.guest_payload);
  f.Set<uint64_t>(offsetof(H, total_size), shm::wire::SegmentSize(g));
  f.file_size = shm::wire::SegmentSize(g);
  return f;
}

// A header that agrees with itself (total_size matches its geometry) in a file of `file_size` bytes.
void SetGeometry(CraftedFile& f, uint32_t host_slots, uint32_t payload, uint64_t file_size) {
  using H = shm::wire::SegmentHeader;
  shm::wire::Geometry g;
  g.host_slots = host_slots;
  g.guest_slots = 0;
  g.host_payload = payload;
  f.Set<uint32_t>(offsetof(H, host_slots), g.host_slots);
  f.Set<uint32_t>(offsetof(H, guest_slots), 0);
  f.Set<uint32_t>(offsetof(H, host_payload), g.host_payload);
  f.Set<uint32_t>(offsetof(H, guest_payload), 0);
  f.Set<uint64_t>(offsetof(H, total_size), shm::wire::SegmentSize(g));
  f.file_size = file_size;
}

class BrokenSegment : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenSegment, GuestGetsItsOwnErrorAndDoesNotCrash) {
  SegmentName name("broken");
  CraftedFile f = ValidFile();
  GetParam().mutate(f);
  FakeHost fake(name.str(), f.header, f.file_size, f.reply);
  ASSERT_TRUE(fake.ok()) << fake.error();

  Process guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "30000"});
  ASSERT_TRUE(guest.started()) << guest.error();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind(std::string("CONNECT_FAILED ") + shm::ToString(GetParam().expected) + " ", 0), 0u) << line;
  EXPECT_TRUE(ExitsWith(guest, ExitCodeFor(GetParam().expected)));  // an exit code, not a signal (no SIGBUS)
}

using H = shm::wire::SegmentHeader;
INSTANTIATE_TEST_SUITE_P(
    Connect, BrokenSegment,
    ::testing::Values(
        BrokenCase{"BadMagic", ErrorCode::kBadMagic,
                   [](CraftedFile& f) { f.Set<uint64_t>(offsetof(H, magic), 0x0123456789abcdefull); }},
        BrokenCase{"NewerVersion", ErrorCode::kVersionMismatch,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, version), shm::wire::kVersion + 1); }},
        BrokenCase{"ZeroHostSlots", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_slots), 0); }},
        BrokenCase{"TooManySlots", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_slots), shm::wire::kMaxSlots + 1); }},
        BrokenCase{"UnalignedPayload", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_payload), 100); }},
        BrokenCase{"HugePayload", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_payload), 0xFFFFFFC0u); }},
        BrokenCase{"WrongTotalSize", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) {
                     uint64_t total = 0;
                     std::memcpy(&total, f.header.data() + offsetof(H, total_size), sizeof total);
                     f.Set<uint64_t>(offsetof(H, total_size), total + 4096);
                   }},
        BrokenCase{"UnknownHeaderSize", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, header_size), 128); }},
        BrokenCase{"UnknownFlags", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, flags), 1); }},
        BrokenCase{"FileShorterThanClaimed", ErrorCode::kTruncated,
                   [](CraftedFile& f) { f.file_size = f.file_size / 2; }},
        BrokenCase{"FileShorterThanHeader", ErrorCode::kTruncated, [](CraftedFile& f) { f.file_size = 100; }},
        BrokenCase{"LargeGeometryInOnePage", ErrorCode::kTruncated,
                   [](CraftedFile& f) { SetGeometry(f, 1024, 1u << 28, shm::wire::kPage); }},  // 512 GiB
        BrokenCase{"GeometryOverSegmentLimit", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) {  // 8 TiB, consistent with itself, over the 1 TiB segment limit
                     SetGeometry(f, shm::wire::kMaxSlots, shm::wire::kMaxPayload, shm::wire::kPage);
                   }},
        // A host hands out its memory only once magic is written: 0 is not "still initialising".
        BrokenCase{"ZeroMagic", ErrorCode::kBadMagic, [](CraftedFile& f) { f.Set<uint64_t>(offsetof(H, magic), 0); }},
        // Memory that is not sealed could be shrunk under the guest's mapping (SIGBUS): refused before mapping.
        BrokenCase{"UnsealedMemory", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.seal = false; }},
        BrokenCase{"TwoDescriptors", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.descriptors = 2; }},
        BrokenCase{"NoDescriptor", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.descriptors = 0; }},
        BrokenCase{"ShortReply", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.size = 12; }},
        BrokenCase{"LongReply", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.size = 20; }},
        BrokenCase{"ReservedReplyField", ErrorCode::kProtocol, [](CraftedFile& f) { f.reply.reserved = 1; }},
        BrokenCase{"UnknownStatus", ErrorCode::kProtocol,
                   [](CraftedFile& f) {
                     f.reply.status = 99;
                     f.reply.descriptors = 0;
                   }},
        BrokenCase{"DescriptorWithARefusal", ErrorCode::kProtocol,
                   [](CraftedFile& f) { f.reply.status = static_cast<uint32_t>(shm::wire::AttachStatus::kDenied); }},
        BrokenCase{"Denied", ErrorCode::kPermissionDenied,
                   [](CraftedFile& f) {
                     f.reply.status = static_cast<uint32_t>(shm::wire::AttachStatus::kDenied);
                     f.reply.descriptors = 0;
                   }},
        BrokenCase{"HostOfAnotherVersion", ErrorCode::kVersionMismatch,
                   [](CraftedFile& f) {
                     f.reply.status = static_cast<uint32_t>(shm::wire::AttachStatus::kVersionMismatch);
                     f.reply.detail = shm::wire::kVersion + 1;
                     f.reply.descriptors = 0;
                   }}),
    [](const ::testing::TestParamInfo<BrokenCase>& case_info) { return std::string(case_info.param.label); });

// ---- Workers -----------------------------------------------------------------------------------------------

using Workers = HostAndGuest;

// N calls from N host threads, each on its own slot, to a handler that answers only once all N are inside
// it at the same time: possible only with one worker per slot.
TEST_F(Workers, OneWorkerServesEachHostSlotConcurrently) {
  constexpr uint32_t kSlots = 4;
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", kSlots)));
  for (int round = 0; round < 3; ++round) {
    const std::string request = "r" + std::to_string(round) + " " + std::to_string(kSlots);
    std::vector<std::string> answers(kSlots);
    std::vector<std::thread> callers;
    for (uint32_t i = 0; i < kSlots; ++i) {
      callers.emplace_back([&, i] {
        std::vector<uint8_t> out;
        auto r = host_->SendToSlot(i, request, Type(kTypeBarrier), out, {kLong, false});
        answers[i] = r ? Str(out) : r.error().ToString();
      });
    }
    for (auto& t : callers) t.join();
    for (uint32_t i = 0; i < kSlots; ++i) EXPECT_EQ(answers[i], "ok") << "round " << round << ", slot " << i;
  }
}

TEST_F(Workers, HeartbeatIsAnsweredWithoutTheHandler) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  auto count = [&]() -> long long {
    auto r = Call("", Type(kTypeCount), out);
    EXPECT_TRUE(r) << Describe(r);
    return r ? std::stoll(Str(out)) : -1;
  };
  const long long before = count();
  for (uint32_t i = 0; i < 10; ++i) {
    auto r = host_->SendToSlot(i % 2, "ping", MsgType::HEARTBEAT_REQ, out, {kLong, false});
    ASSERT_TRUE(r) << Describe(r);
    EXPECT_EQ(*r, MsgType::HEARTBEAT_RESP);
    EXPECT_TRUE(out.empty());
  }
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  ASSERT_TRUE(z->Send(0, MsgType::HEARTBEAT_REQ, kLong));
  EXPECT_EQ(z->ResponseType(), MsgType::HEARTBEAT_RESP);
  z->Release();
  EXPECT_EQ(count(), before + 1) << "the handler ran for a heartbeat";
}

TEST_F(Workers, ThrowingHandlerFailsItsCallAndTheWorkerGoesOn) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 3)));
  std::vector<uint8_t> out;
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t i = 0; i < host_->host_slots(); ++i) {
      auto r = host_->SendToSlot(i, "", Type(kTypeThrow), out, {kLong, false});
      ASSERT_FALSE(r) << "a handler that throws cannot succeed";
      EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
      EXPECT_EQ(r.error().remote(), shm::wire::WireError::kHandlerFailed) << r.error().ToString();
      auto next = host_->SendToSlot(i, "still serving", MsgType::NORMAL, out, {kLong, false});
      ASSERT_TRUE(next) << "slot " << i << ": " << Describe(next);
      EXPECT_EQ(Str(out), "still serving");
    }
  }
}

TEST_F(Workers, FailureReplyFailsTheCall) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  auto r = Call("", Type(kTypeFail), out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
  EXPECT_EQ(r.error().remote(), shm::wire::WireError::kHandlerFailed) << r.error().ToString();
  ASSERT_TRUE(Call("next", MsgType::NORMAL, out));
  EXPECT_EQ(Str(out), "next");
}

}  // namespace
}  // namespace shm_test

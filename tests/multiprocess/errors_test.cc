// SPDX-License-Identifier: Apache-2.0
// Errors on the wire, both directions (SYSTEM_ERROR with a code; the caller gets a typed shm::Error, never an
// empty success), and stale answers (a late answer never reaches a later call on its slot).
#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <thread>

#include "shm/detail/segment.h"
#include "shm/detail/slot.h"
#include "shm/detail/wait.h"
#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;
using shm::wire::WireError;

::testing::AssertionResult IsRemote(const shm::Result<MsgType>& r, WireError expected) {
  if (r) return ::testing::AssertionFailure() << "the call succeeded; expected SYSTEM_ERROR " << ToString(expected);
  if (r.error().code() != ErrorCode::kRemote || r.error().remote() != expected) {
    return ::testing::AssertionFailure() << r.error().ToString() << "; expected Remote " << ToString(expected);
  }
  return ::testing::AssertionSuccess();
}

using HostToGuestErrors = HostAndGuest;

TEST_F(HostToGuestErrors, ResponseTooLargeIsAnsweredWithSystemError) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  const int64_t cap = host_->payload_capacity();
  std::vector<uint8_t> out;
  for (int64_t size : {cap + 1, -(cap + 1), int64_t{INT32_MIN}, int64_t{INT32_MAX}}) {
    EXPECT_TRUE(IsRemote(Call(std::to_string(size), Type(kTypeReplySize), out), WireError::kResponseTooLarge))
        << "reply size " << size;
  }
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  const std::string size = std::to_string(-(cap + 1));
  std::memcpy(z->RequestBuffer().data(), size.data(), size.size());
  auto r = z->Send(static_cast<int32_t>(size.size()), Type(kTypeReplySize), kLong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().remote(), WireError::kResponseTooLarge) << r.error().ToString();
  EXPECT_TRUE(z->valid()) << "an error answer leaves the slot with its holder";
  z->Release();
  ASSERT_TRUE(Call("fine", MsgType::NORMAL, out));
  EXPECT_EQ(Str(out), "fine");
}

TEST_F(HostToGuestErrors, ReservedReplyTypeIsAnsweredWithSystemError) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  for (uint32_t t : {1u, 2u, 3u, 4u, 12u, 126u}) {
    EXPECT_TRUE(IsRemote(Call(std::to_string(t), Type(kTypeReplyType), out), WireError::kReservedType))
        << "reply type " << t;
  }
  // A SYSTEM_ERROR reply is the handler saying it failed.
  EXPECT_TRUE(IsRemote(Call("127", Type(kTypeReplyType), out), WireError::kHandlerFailed));
  EXPECT_TRUE(IsRemote(Call("", Type(kTypeThrow), out), WireError::kHandlerFailed));
  ASSERT_TRUE(Call("fine", MsgType::NORMAL, out));
}

TEST_F(HostToGuestErrors, ReservedRequestTypeIsRefusedBeforeSending) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("", Type(kTypeCount), out));
  const long long before = std::stoll(Str(out));
  for (uint32_t t : {2u, 3u, 4u, 9u, 12u, 127u}) {
    auto r = Call("x", Type(t), out);
    ASSERT_FALSE(r) << "type " << t;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << "type " << t << ": " << r.error().ToString();
  }
  ASSERT_TRUE(Call("", Type(kTypeCount), out));
  EXPECT_EQ(std::stoll(Str(out)), before + 1) << "a refused request reached the guest";
}

// Publish a request the library refuses to send (as a hostile or buggy host would) through a second mapping
// of the segment, and return the guest's raw answer: resp_type and resp_error.
std::pair<uint32_t, WireError> RawCall(const shm::detail::SlotView& s, int32_t size, uint32_t type) {
  auto& h = *s.header;
  uint32_t seq = 0;
  const auto deadline = Clock::now() + kLong;
  while (!shm::detail::TryClaim(h, &seq)) {
    if (Clock::now() > deadline) return {0, WireError::kNone};
    std::this_thread::yield();
  }
  h.req_type.store(type, std::memory_order_relaxed);
  h.req_size.store(static_cast<uint32_t>(size), std::memory_order_relaxed);
  uint32_t tx = 0;
  if (!shm::detail::Publish(h, seq, &tx)) return {0, WireError::kNone};
  shm::detail::SpinPolicy spin;
  uint32_t v = 0;
  const int64_t until = shm::platform::MonotonicNs() + std::chrono::nanoseconds(kLong).count();
  const auto st = shm::detail::WaitFor(
      h.ctl, nullptr, until, spin, [](uint32_t w) { return shm::wire::CtlIs(w, shm::wire::SlotState::kResponse); },
      [](bool) { return false; }, &v);
  if (st != shm::detail::WaitStatus::kReady) return {0, WireError::kNone};
  const uint32_t resp_type = h.resp_type.load(std::memory_order_relaxed);
  const auto err = static_cast<WireError>(h.resp_error.load(std::memory_order_relaxed));
  shm::detail::Release(h, tx);
  return {resp_type, err};
}

TEST_F(HostToGuestErrors, GuestRefusesACraftedRequestOfImpossibleSizeOrType) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  auto seg = MapLiveSegment(::getpid(), name_.str());
  ASSERT_TRUE(seg) << Describe(seg);
  const shm::detail::SlotView s = seg->Slot(1);  // this test sends nothing else on slot 1
  const int32_t cap = static_cast<int32_t>(s.capacity);
  const uint32_t system_error = static_cast<uint32_t>(MsgType::SYSTEM_ERROR);
  for (int32_t size : {cap + 1, -(cap + 1), INT32_MIN, INT32_MAX}) {
    const auto [type, err] = RawCall(s, size, 0);
    EXPECT_EQ(type, system_error) << "size " << size;
    EXPECT_EQ(err, WireError::kRequestTooLarge) << "size " << size;
  }
  for (uint32_t t : {2u, 3u, 127u}) {
    const auto [type, err] = RawCall(s, 0, t);
    EXPECT_EQ(type, system_error) << "type " << t;
    EXPECT_EQ(err, WireError::kReservedType) << "type " << t;
  }
  std::vector<uint8_t> out;
  auto r = host_->SendToSlot(1, "after", MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(Str(out), "after");
}

// ---- Guest to host -------------------------------------------------------------------------------------------

class GuestToHostErrors : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(host_.Init(MakeHostConfig(name_.str(), 1, 2, 4096))); }
  void StartHandler() {
    ASSERT_TRUE(host_.Start([](const shm::Message& m, shm::MutableBytes out) -> shm::Reply {
      const std::string req(m.data.as_string_view());
      switch (static_cast<uint32_t>(m.type)) {
        case kTypeThrow: throw std::runtime_error("the test asked the host's handler to throw");
        case kTypeReplySize: return shm::Reply{static_cast<int32_t>(std::stol(req)), MsgType::NORMAL};
        case kTypeReplyType: return shm::Reply{0, static_cast<MsgType>(std::stoul(req))};
        default:
          if (req.size() > out.size()) return shm::Reply::Owned(std::vector<uint8_t>(req.begin(), req.end()), m.type);
          std::memcpy(out.data(), req.data(), req.size());
          return {static_cast<int32_t>(req.size()), m.type};
      }
    }));
  }
  // One guest call from a guest process; returns its RESULT line.
  std::string GuestCall(std::vector<std::string> args) {
    args.insert(args.begin(), {"guest-call", "--name", name_.str(), "--scenario", "one"});
    Process guest = SpawnPeer(args);
    std::string line;
    EXPECT_TRUE(guest.started()) << guest.error();
    EXPECT_TRUE(GetLine(guest, "RESULT", &line));
    EXPECT_TRUE(ExitsWith(guest, kExitOk));
    return line;
  }

  SegmentName name_{"g2h"};
  shm::DirectHost host_;
};

TEST_F(GuestToHostErrors, HandlerFailuresReachTheGuestAsRemoteErrors) {
  ASSERT_NO_FATAL_FAILURE(StartHandler());
  EXPECT_EQ(GuestCall({"--type", std::to_string(kTypeThrow)}), "RESULT ERR Remote HandlerFailed");
  EXPECT_EQ(GuestCall({"--type", std::to_string(kTypeReplySize), "--payload", "4097"}),
            "RESULT ERR Remote ResponseTooLarge");
  EXPECT_EQ(GuestCall({"--type", std::to_string(kTypeReplySize), "--payload", std::to_string(INT32_MIN)}),
            "RESULT ERR Remote ResponseTooLarge");
  EXPECT_EQ(GuestCall({"--type", std::to_string(kTypeReplyType), "--payload", "3"}), "RESULT ERR Remote ReservedType");
  EXPECT_EQ(GuestCall({"--type", "200", "--size", "5"}), "RESULT OK 200 5");  // and the worker goes on
}

TEST_F(GuestToHostErrors, BadRequestsAreRefusedByTheGuestBeforeSending) {
  ASSERT_NO_FATAL_FAILURE(StartHandler());
  // Larger than a slot is no longer bad: it travels in chunks (SPECIFICATION.md §8.5), echoed whole.
  EXPECT_EQ(GuestCall({"--size", "4097"}), "RESULT OK 0 4097");
  EXPECT_EQ(GuestCall({"--size", "4097", "--aligned", "1"}), "RESULT OK 0 4097");
  EXPECT_EQ(GuestCall({"--type", "3"}), "RESULT ERR InvalidArgs None");
  EXPECT_EQ(GuestCall({"--type", "127"}), "RESULT ERR InvalidArgs None");
  EXPECT_EQ(GuestCall({"--size", "4096", "--aligned", "1"}), "RESULT OK 0 4096");
}

TEST_F(GuestToHostErrors, HostRefusesACraftedRequestOfImpossibleSizeOrType) {
  ASSERT_NO_FATAL_FAILURE(StartHandler());
  const std::string system_error = std::to_string(static_cast<uint32_t>(MsgType::SYSTEM_ERROR));
  for (const std::string& size : std::vector<std::string>{"4097", "-4097", std::to_string(INT32_MIN)}) {
    Process guest = SpawnPeer({"guest-call", "--name", name_.str(), "--scenario", "crafted", "--size", size});
    ASSERT_TRUE(guest.started()) << guest.error();
    std::string line;
    ASSERT_TRUE(GetLine(guest, "RAW", &line));
    EXPECT_EQ(line, "RAW " + system_error + " RequestTooLarge") << "size " << size;
    EXPECT_TRUE(ExitsWith(guest, kExitOk));
  }
  Process guest =
      SpawnPeer({"guest-call", "--name", name_.str(), "--scenario", "crafted", "--size", "0", "--type", "3"});
  ASSERT_TRUE(guest.started()) << guest.error();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "RAW", &line));
  EXPECT_EQ(line, "RAW " + system_error + " ReservedType");
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

TEST_F(GuestToHostErrors, CallAfterSendShutdownIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartHandler());
  Process guest = SpawnPeer({"guest-call", "--name", name_.str(), "--scenario", "one", "--wait-go", "1"});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "READY"));
  ASSERT_TRUE(host_.SendShutdown());
  ASSERT_TRUE(guest.WriteLine("GO"));
  std::string line;
  ASSERT_TRUE(GetLine(guest, "RESULT", &line));
  EXPECT_EQ(line, "RESULT ERR ShuttingDown None");
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

// A guest call is pending (nobody serves it) when the host shuts down: it ends with a shutdown error long
// before its own 60 s deadline.
TEST_F(GuestToHostErrors, PendingCallEndsWhenTheHostShutsDown) {
  Process guest = SpawnPeer({"guest-call", "--name", name_.str(), "--scenario", "one", "--timeout-ms", "60000"});
  ASSERT_TRUE(guest.started()) << guest.error();
  auto pending = host_.WaitForGuestCalls(kLong);
  ASSERT_TRUE(pending && *pending) << "the guest call never arrived";
  const auto start = Clock::now();
  ASSERT_TRUE(host_.SendShutdown());
  std::string line;
  ASSERT_TRUE(GetLine(guest, "RESULT", &line, seconds(30)));
  EXPECT_LT(Clock::now() - start, seconds(30));
  EXPECT_TRUE(line == "RESULT ERR ShuttingDown None" || line == "RESULT ERR Remote ShuttingDown") << line;
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

// Nobody serves guest calls on this host: the guest's call ends with an error at its deadline, never a
// success.
TEST_F(GuestToHostErrors, NoHandlerOnTheHostEndsTheCallWithAnError) {
  EXPECT_EQ(GuestCall({"--timeout-ms", "300"}), "RESULT ERR Timeout None");
}

// ---- A broken guest ------------------------------------------------------------------------------------------

// A guest process answers the host's call with a seq the call never published. The call fails with kProtocol;
// the slot is not lost for good: it is out of use while that guest lives, and the next guest is served on it.
TEST(BrokenGuest, SlotAnsweredWithAWrongSeqServesTheNextGuest) {
  SegmentName name("wrong-seq");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 0, 4096)));
  Process broken = SpawnPeer({"guest", "--name", name.str(), "--mode", "wrong-seq"});
  ASSERT_TRUE(broken.started()) << broken.error();
  ASSERT_TRUE(GetLine(broken, "CONNECTED"));
  std::vector<uint8_t> out;
  auto r = host.Send("x", MsgType::NORMAL, out, {kLong, false});
  ASSERT_FALSE(r) << "answered '" << Str(out) << "'";
  EXPECT_EQ(r.error().code(), ErrorCode::kProtocol) << r.error().ToString();
  ASSERT_TRUE(GetLine(broken, "WRONG_SEQ"));
  auto busy = host.Send("y", MsgType::NORMAL, out, {milliseconds(200), false});
  ASSERT_FALSE(busy) << "the slot was used again while the broken guest lives";
  EXPECT_EQ(busy.error().code(), ErrorCode::kNoFreeSlot) << busy.error().ToString();
  broken.CloseStdin();
  ASSERT_TRUE(ExitsWith(broken, kExitOk));
  ASSERT_NO_FATAL_FAILURE(FreshGuestServesThenShutsDown(host, name.str(), "served again"));
}

// ---- Stale answers -----------------------------------------------------------------------------------------------

using StaleAnswers = HostAndGuest;

// A call times out while the guest is in its handler; the guest answers late. The next calls on that slot
// get their own answers (each echoes a unique id) or an error, never the late one.
TEST_F(StaleAnswers, LateAnswerNeverReachesALaterCall) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  for (int round = 0; round < 6; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string late = "late-" + std::to_string(round);
    shm::ZeroCopySlot lost;
    const uint32_t slot = AbandonASlot(*host_, guest_, late, &lost);
    ASSERT_NE(slot, UINT32_MAX);
    // The zero-copy slot that timed out knows it no longer holds the slot.
    auto again = lost.Send(1, MsgType::NORMAL, kLong);
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), ErrorCode::kSlotLost) << again.error().ToString();

    // While the late handler runs, its slot is not free: a call on it ends with an error.
    const std::string probe = "probe-" + std::to_string(round);
    auto busy = host_->SendToSlot(slot, probe, MsgType::NORMAL, out, {milliseconds(50), false});
    ASSERT_FALSE(busy) << "answered '" << Str(out) << "'";
    EXPECT_EQ(busy.error().code(), ErrorCode::kSlotBusy) << busy.error().ToString();
    // The other slot serves meanwhile.
    auto other = host_->SendToSlot(1 - slot, "other", MsgType::NORMAL, out, {kLong, false});
    ASSERT_TRUE(other) << Describe(other);
    EXPECT_EQ(Str(out), "other");

    // Let the guest answer late, and call on the same slot at once: this call waits for the slot and gets
    // its own answer.
    ASSERT_TRUE(guest_.WriteLine("GO"));
    const std::string next = "next-" + std::to_string(round);
    auto r = host_->SendToSlot(slot, next, MsgType::NORMAL, out, {kLong, false});
    ASSERT_TRUE(r) << Describe(r);
    EXPECT_EQ(Str(out), next);
    ASSERT_TRUE(GetLine(guest_, "ANSWERING " + std::to_string(slot) + " " + late));
    // The slot is reusable after the late answer was discarded.
    const std::string after = "after-" + std::to_string(round);
    r = host_->SendToSlot(slot, after, MsgType::NORMAL, out, {kLong, false});
    ASSERT_TRUE(r) << Describe(r);
    EXPECT_EQ(Str(out), after);
  }
}

}  // namespace
}  // namespace shm_test

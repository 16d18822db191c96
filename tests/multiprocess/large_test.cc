// SPDX-License-Identifier: Apache-2.0
// Messages larger than a slot (SPECIFICATION.md §8.5) between a host in this process and a guest process: every
// kind (large request, large answer, both) at sizes from one byte past a slot to 256 MiB, the Source/Sink API,
// the limits of both sides, a failing Source, a timeout and the guest's death in mid-transfer, guest calls.
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "large_messages.h"
#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;
using shm::Sink;
using shm::Source;

constexpr uint32_t kSlot = 4096;
using std::chrono::seconds;

class LargeCalls : public HostAndGuest {
 protected:
  // Start the host with `host_slots` slots of `payload` bytes and a guest with `guest_args` added.
  void BeginWith(uint32_t host_slots, uint32_t payload, std::vector<std::string> guest_args = {}) {
    shm::HostConfig config = MakeHostConfig(name_.str(), host_slots, 1, payload);
    host_ = std::make_unique<shm::DirectHost>();
    auto r = host_->Init(config);
    ASSERT_TRUE(r) << r.error().ToString();
    StartGuestWith(std::move(guest_args));
  }
  void StartGuestWith(std::vector<std::string> guest_args) {
    std::vector<std::string> args = {"guest", "--name", name_.str()};
    args.insert(args.end(), guest_args.begin(), guest_args.end());
    guest_ = SpawnPeer(args);
    ASSERT_TRUE(guest_.started()) << guest_.error();
    ASSERT_TRUE(GetLine(guest_, "SERVING"));
  }
  auto Caller(shm::CallOptions options = {kLong}) {
    return [this, options](const Source& s, MsgType t, const Sink& k) { return host_->Call(s, t, k, options); };
  }
  // A plain call that must work: the slot and the guest are fine after whatever came before.
  void ExpectPlainCallWorks() {
    std::vector<uint8_t> out;
    auto r = host_->Send(std::string_view("still fine"), MsgType::NORMAL, out, {kLong});
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(Str(out), "still fine");
  }
};

TEST_F(LargeCalls, EveryKindAtSizesAroundTheSlot) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(2, kSlot));
  for (uint64_t size : {uint64_t{kSlot} + 1, uint64_t{2} * kSlot, uint64_t{7} * kSlot - 1, uint64_t{1} << 20,
                        (uint64_t{1} << 20) + 3}) {
    EXPECT_EQ(CheckLargeCalls(Caller(), size, size), "") << size << " bytes";
  }
  ExpectPlainCallWorks();
}

TEST_F(LargeCalls, SixteenMiBBothWaysAndTwoHundredFiftySixMiBEachWay) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(2, 64 * 1024));
  const shm::CallOptions slow{std::chrono::minutes(3)};
  EXPECT_EQ(CheckLargeCalls(Caller(slow), uint64_t{16} << 20, 16), "");
  // 256 MiB: a large request with a small answer and a small request with a large answer, neither held whole
  // by the sender (the pattern is generated into the slots chunk by chunk).
  EXPECT_EQ(CheckLargeCalls(Caller(slow), uint64_t{256} << 20, 256, /*both_ways=*/false), "");
}

TEST_F(LargeCalls, SendTakesAndGivesAnySize) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  std::vector<uint8_t> request(3 * kSlot + 17), out;
  FillPattern(5, 0, shm::MutableBytes(request.data(), request.size()));
  auto r = host_->Send(request, Type(kTypeComplement), out, {kLong});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(*r, Type(kTypeComplement));
  ASSERT_EQ(out.size(), request.size());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], static_cast<uint8_t>(~request[i])) << i;
  ExpectPlainCallWorks();
}

TEST_F(LargeCalls, AnswerGoesIntoTheCallersOwnBufferOrIsRefused) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  const uint64_t size = 5 * kSlot + 9;
  std::vector<uint8_t> mine(size + 100, 0xEE);
  const auto ask = U64Pair(size, 77);
  auto r = host_->Call(Source::Of(ask), Type(kTypeGenerate),
                       Sink::InBuffer(shm::MutableBytes(mine.data(), mine.size())), {kLong});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->size, size);
  EXPECT_EQ(FirstPatternMismatch(77, mine.data(), size), size);
  EXPECT_EQ(mine[size], 0xEE) << "wrote past the answer";
  // Too small a buffer: refused before any byte is written, and the next call works.
  std::vector<uint8_t> small(size - 1, 0xEE);
  r = host_->Call(Source::Of(ask), Type(kTypeGenerate), Sink::InBuffer(shm::MutableBytes(small.data(), small.size())),
                  {kLong});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  EXPECT_EQ(small[0], 0xEE);
  ExpectPlainCallWorks();
}

TEST_F(LargeCalls, AnswersAboveTheCallersLimitAreRefused) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  std::vector<uint8_t> out;
  const auto ask = U64Pair(10 * kSlot, 1);
  shm::CallOptions limited{kLong};
  limited.max_response_size = 10 * kSlot - 1;
  auto r = host_->Send(ask, Type(kTypeGenerate), out, limited);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  limited.max_response_size = 10 * kSlot;
  r = host_->Send(ask, Type(kTypeGenerate), out, limited);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(out.size(), 10u * kSlot);
  // A plain answer above a call's limit too.
  limited.max_response_size = 5;
  r = host_->Send(std::string_view("123456"), MsgType::NORMAL, out, limited);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  ExpectPlainCallWorks();
}

TEST_F(LargeCalls, RequestsAboveTheGuestsLimitAreRefusedByIt) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot, {"--max-message", "100000"}));
  std::vector<uint8_t> out;
  auto r = host_->Call(PatternSource(1, 100001), Type(kTypeDigest), Sink::Into(out), {kLong});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
  EXPECT_EQ(r.error().remote(), shm::wire::WireError::kRequestTooLarge);
  EXPECT_EQ(CheckLargeCalls(Caller(), 100000, 3), "");
}

// One slot and one partial transfer allowed: a later large call works only if the abandoned one was dropped.
TEST_F(LargeCalls, AFailingSourceEndsTheCallAndFreesTheTransfer) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot, {"--max-transfers", "1"}));
  std::vector<uint8_t> out;
  Source failing{10 * kSlot, [](uint64_t offset, shm::MutableBytes into) {
                   if (offset >= 2 * kSlot) return false;
                   FillPattern(1, offset, into);
                   return true;
                 }};
  auto r = host_->Call(failing, Type(kTypeDigest), Sink::Into(out), {kLong});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
  EXPECT_EQ(CheckLargeCalls(Caller(), 3 * kSlot, 4), "");
}

TEST_F(LargeCalls, ADeadlineInMidRequestEndsTheCallAndTheNextOneWorks) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot, {"--max-transfers", "1"}));
  std::vector<uint8_t> out;
  const auto timeout = std::chrono::milliseconds(300);
  std::atomic<int64_t> deadline{0};
  // The Source itself waits until the call's deadline has passed before its third chunk: a condition, not a
  // guessed sleep.
  Source stalling{10 * kSlot, [&](uint64_t offset, shm::MutableBytes into) {
                    if (offset == 2 * kSlot) {
                      while (shm::platform::MonotonicNs() <= deadline.load()) std::this_thread::yield();
                    }
                    FillPattern(1, offset, into);
                    return true;
                  }};
  deadline = shm::platform::MonotonicNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  auto r = host_->Call(stalling, Type(kTypeDigest), Sink::Into(out), {timeout});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout) << r.error().ToString();
  EXPECT_EQ(CheckLargeCalls(Caller(), 3 * kSlot, 5), "");
  ExpectPlainCallWorks();
}

TEST_F(LargeCalls, AZeroCopySlotRefusesALargeAnswerAndKeepsTheSlot) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  auto slot = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(slot) << slot.error().ToString();
  const auto ask = U64Pair(2 * kSlot, 9);
  std::memcpy(slot->RequestBuffer().data(), ask.data(), ask.size());
  auto r = slot->Send(16, Type(kTypeGenerate), kLong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  ASSERT_TRUE(slot->valid());
  std::memcpy(slot->RequestBuffer().data(), "ok", 2);
  r = slot->Send(2, MsgType::NORMAL, kLong);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(Str(slot->Response()), "ok");
}

TEST_F(LargeCalls, TheGuestsDeathInMidAnswerEndsTheCallAndANewGuestServes) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  std::vector<uint8_t> out;
  const auto ask = U64Pair(64 * kSlot, 3);
  // The Sink learns the answer's size after its first chunk: kill the guest there, and wait until it is gone.
  Sink killing{[&](uint64_t size, MsgType) {
    guest_.Kill();
    (void)guest_.Wait(seconds(30));
    out.resize(size);
    return shm::MutableBytes(out.data(), out.size());
  }};
  auto r = host_->Call(Source::Of(ask), Type(kTypeGenerate), killing, {std::chrono::seconds(2)});
  ASSERT_FALSE(r);
  // The next chunk's request was published with no guest to take it: it may wait for a new guest until the
  // deadline (SPECIFICATION.md §10.1), or find the dead guest had taken it.
  EXPECT_TRUE(r.error().code() == ErrorCode::kTimeout || r.error().code() == ErrorCode::kPeerDead)
      << r.error().ToString();
  ASSERT_NO_FATAL_FAILURE(StartGuestWith({}));
  EXPECT_EQ(CheckLargeCalls(Caller(), 64 * kSlot, 6), "");
}

TEST_F(LargeCalls, ShutdownInMidRequestEndsTheCallWithClosed) {
  ASSERT_NO_FATAL_FAILURE(BeginWith(1, kSlot));
  std::vector<uint8_t> out;
  Source shutting{10 * kSlot, [&](uint64_t offset, shm::MutableBytes into) {
                    if (offset == 2 * kSlot) host_->Shutdown();  // from the calling thread, between two chunks
                    FillPattern(1, offset, into);
                    return true;
                  }};
  auto r = host_->Call(shutting, Type(kTypeDigest), Sink::Into(out), {kLong});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kClosed) << r.error().ToString();
  // The guest sees its host go and ends.
  EXPECT_TRUE(guest_.Wait(seconds(30)));
}

// Guest calls: a guest process sends and receives large messages through GuestCall; this host serves them.
TEST(LargeGuestCalls, EveryKindBothWaysAtSizesAroundTheSlot) {
  SegmentName name("lgc");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 2, kSlot)));
  ASSERT_TRUE(host.Start([](const shm::Message& m, shm::MutableBytes out) {
    bool large = false;
    shm::Reply r = ServeLarge(m, out, &large);
    return large ? r : shm::Reply::Failure();
  }));
  const std::string sizes = std::to_string(kSlot + 1) + "," + std::to_string(3 * kSlot) + "," +
                            std::to_string(1 << 20) + "," + std::to_string((16 << 20) + 5);
  Process guest = SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "large", "--sizes", sizes});
  ASSERT_TRUE(guest.started()) << guest.error();
  EXPECT_TRUE(GetLine(guest, "LARGE OK", nullptr, seconds(240)));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  host.Shutdown();
}

TEST(LargeGuestCalls, CloseInMidRequestEndsTheCallWithClosed) {
  SegmentName name("lgclose");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 1, kSlot)));
  ASSERT_TRUE(host.Start([](const shm::Message& m, shm::MutableBytes out) {
    bool large = false;
    shm::Reply r = ServeLarge(m, out, &large);
    return large ? r : shm::Reply::Failure();
  }));
  Process guest =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "large-interrupted", "--action", "close"});
  ASSERT_TRUE(guest.started()) << guest.error();
  EXPECT_TRUE(GetLine(guest, "RESULT ERR Closed"));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  // The host holds nothing of it once the guest has gone, and serves the next guest's large calls.
  Process next = SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "large", "--sizes", "20000"});
  EXPECT_TRUE(GetLine(next, "LARGE OK"));
  EXPECT_TRUE(ExitsWith(next, kExitOk));
  host.Shutdown();
}

TEST(LargeGuestCalls, TheHostsDeathInMidRequestEndsTheCallWithHostGone) {
  SegmentName name("lghost");
  Process host = SpawnPeer({"host", "--name", name.str(), "--serve-large", "1"});
  ASSERT_TRUE(host.started()) << host.error();
  ASSERT_TRUE(GetLine(host, "INIT OK"));
  Process guest =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "large-interrupted", "--action", "wait"});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "MID"));  // two chunks were taken by the host
  host.Kill();
  ASSERT_TRUE(host.Wait(seconds(30)));
  ASSERT_TRUE(guest.WriteLine("go"));
  EXPECT_TRUE(GetLine(guest, "RESULT ERR HostGone"));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

}  // namespace
}  // namespace shm_test

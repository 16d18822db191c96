// SPDX-License-Identifier: Apache-2.0
// The counters of SPECIFICATION.md §5.4, both sides, with a real guest process: each side counts its own
// events in its own blocks, DirectHost::Stats() returns the host's, and the guest's are read from the memfd
// (the guest process keeps its own; this process sees them in the shared region).
#include "shm/wire/counters.h"

#include <chrono>
#include <cstring>
#include <string>

#include "large_messages.h"
#include "shm/stats.h"
#include "test_support.h"

namespace shm_test {
namespace {

using shm::MsgType;
using shm::wire::WireError;
namespace w = shm::wire;

// One counter of the guest's blocks, summed over slots [first, first + n), read from this process's own
// mapping of the host's segment.
uint64_t GuestCounter(const shm::detail::Segment& seg, uint32_t first, uint32_t n, uint32_t counter) {
  uint64_t sum = 0;
  const w::CounterBlock* b = seg.counter_blocks(false);
  for (uint32_t i = first; i < first + n; ++i) sum += b[i].c[counter].load(std::memory_order_relaxed);
  return sum;
}

// Wait (condition-based, generous deadline) until a guest counter reaches `want`; returns the last value.
uint64_t WaitForGuestCounter(const shm::detail::Segment& seg, uint32_t first, uint32_t n, uint32_t counter,
                             uint64_t want) {
  const auto deadline = Clock::now() + kLong;
  uint64_t v = GuestCounter(seg, first, n, counter);
  while (v < want && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(2));
    v = GuestCounter(seg, first, n, counter);
  }
  return v;
}

using Counters = HostAndGuest;

TEST_F(Counters, EachSideCountsItsOwnEventsOfHostCalls) {
  shm::HostConfig config = MakeHostConfig("", 2, 0, 4096);
  config.latency_histogram = true;
  ASSERT_NO_FATAL_FAILURE(Begin(config));
  std::vector<uint8_t> out;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Call("hello", MsgType::NORMAL, out));
  ASSERT_TRUE(Call("", MsgType::HEARTBEAT_REQ, out));
  ASSERT_FALSE(Call("", Type(kTypeThrow), out));
  ASSERT_FALSE(Call(std::to_string(host_->payload_capacity() + 1), Type(kTypeReplySize), out));
  // A call that times out while the guest serves it; its answer, released afterwards, is discarded.
  const uint32_t abandoned = AbandonASlot(*host_, guest_, "late");
  ASSERT_NE(abandoned, UINT32_MAX);
  ASSERT_TRUE(guest_.WriteLine("go"));

  auto seg = MapLiveSegment(::getpid(), name_.str());
  ASSERT_TRUE(seg) << seg.error().ToString();
  ASSERT_TRUE(seg->has_counters());
  EXPECT_EQ(WaitForGuestCounter(*seg, 0, 2, w::kLate, 1), 1u) << "the guest's late answer was not counted";

  const shm::StatsSnapshot st = host_->Stats();
  EXPECT_TRUE(st.shared);
  ASSERT_EQ(st.call_slots.size(), 2u);
  EXPECT_TRUE(st.serve_slots.empty()) << "no guest slots";
  EXPECT_EQ(st.calls.calls, 6u) << "5 answers and a heartbeat";
  EXPECT_EQ(st.calls.remote[static_cast<int>(WireError::kHandlerFailed)], 1u);
  EXPECT_EQ(st.calls.remote[static_cast<int>(WireError::kResponseTooLarge)], 1u);
  EXPECT_GE(st.calls.timeouts, 1u) << "AbandonASlot may time out more than once before the guest takes it";
  EXPECT_EQ(st.calls.peer_dead + st.calls.protocol + st.calls.ended, 0u);
  EXPECT_EQ(st.calls.bytes_in, 25u) << "the 5 echoed answers";
  EXPECT_GE(st.calls.bytes_out, 25u);
  EXPECT_EQ(st.call_slots[0].calls + st.call_slots[1].calls, st.calls.calls);
  EXPECT_TRUE(st.latency.enabled);
  EXPECT_EQ(st.latency.count, 6u);
  EXPECT_GT(st.latency.p50_ns, 0u);
  EXPECT_LE(st.latency.p50_ns, st.latency.p99_ns);
  EXPECT_LE(st.latency.p99_ns, st.latency.max_ns);

  // The guest's side of the same calls, in its own blocks.
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kServed), 9u) << "5 echoes, heartbeat, throw, too large, the late one";
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kHeartbeats), 1u);
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kAnsweredBase + static_cast<uint32_t>(WireError::kHandlerFailed)), 1u);
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kAnsweredBase + static_cast<uint32_t>(WireError::kResponseTooLarge)), 1u);
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kLost), 0u);
  EXPECT_EQ(GuestCounter(*seg, 0, 2, w::kServeBytesOut), 25u + 4u) << "5 echoes of 5 bytes, and 'late'";
  // The reserved counter stays zero.
  const w::CounterBlock* host_blocks = seg->counter_blocks(true);
  for (uint32_t i = 0; i < 2; ++i) EXPECT_EQ(host_blocks[i].c[7].load(), 0u) << "reserved counter, slot " << i;
}

// A message larger than a slot is one call to its caller, however many transactions it takes: one count of
// calls, its bytes once, one latency sample. The server counts each transaction it served.
TEST_F(Counters, ATransferIsOneCallOfItsWholeSize) {
  constexpr uint32_t kSlot = 4096;
  shm::HostConfig config = MakeHostConfig("", 1, 0, kSlot);
  config.latency_histogram = true;
  ASSERT_NO_FATAL_FAILURE(Begin(config));
  // 3 full chunks and one of 17 bytes each way: 4 request chunks (the last answered with the answer's first
  // chunk), then 3 CHUNK_NEXT.
  std::vector<uint8_t> request(3 * kSlot + 17), out;
  FillPattern(7, 0, shm::MutableBytes(request.data(), request.size()));
  auto r = host_->Send(request, Type(kTypeComplement), out, {kLong});
  ASSERT_TRUE(r) << r.error().ToString();
  ASSERT_EQ(out.size(), request.size());

  const shm::StatsSnapshot st = host_->Stats();
  EXPECT_EQ(st.calls.calls, 1u);
  EXPECT_EQ(st.calls.bytes_out, request.size()) << "the request's bytes, CHUNK_NEXT's none";
  EXPECT_EQ(st.calls.bytes_in, request.size());
  EXPECT_EQ(st.calls.errors(), 0u);
  EXPECT_EQ(st.latency.count, 1u) << "one sample for the whole call";

  auto seg = MapLiveSegment(::getpid(), name_.str());
  ASSERT_TRUE(seg) << seg.error().ToString();
  EXPECT_EQ(WaitForGuestCounter(*seg, 0, 1, w::kServed, 7), 7u) << "4 chunks and 3 CHUNK_NEXT served";
  EXPECT_EQ(GuestCounter(*seg, 0, 1, w::kServeBytesIn), request.size());
  EXPECT_EQ(GuestCounter(*seg, 0, 1, w::kServeBytesOut), request.size());

  // A plain call after it counts as the second.
  ASSERT_TRUE(Call("x", MsgType::NORMAL, out));
  EXPECT_EQ(host_->Stats().calls.calls, 2u);
}

TEST_F(Counters, LatencyHistogramIsOffByDefault) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 1, 0)));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("x", MsgType::NORMAL, out));
  const shm::StatsSnapshot st = host_->Stats();
  EXPECT_FALSE(st.latency.enabled);
  EXPECT_EQ(st.latency.count, 0u);
  EXPECT_EQ(st.calls.calls, 1u);
}

TEST_F(Counters, ANewGuestStartsItsCountersAtZeroAndCountsItsRecovery) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 1, 0)));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("one", MsgType::NORMAL, out));
  // The guest dies while serving a call the host has given up on: the slot stays ABANDONED.
  ASSERT_NE(AbandonASlot(*host_, guest_, "dies"), UINT32_MAX);
  guest_.Kill();
  ASSERT_TRUE(guest_.Wait(kLong));
  auto seg = MapLiveSegment(::getpid(), name_.str());
  ASSERT_TRUE(seg) << seg.error().ToString();
  EXPECT_EQ(GuestCounter(*seg, 0, 1, w::kServed), 1u) << "the dead guest's count stays until a new guest";
  ASSERT_NO_FATAL_FAILURE(StartGuest());
  EXPECT_EQ(GuestCounter(*seg, 0, 1, w::kServed), 0u) << "a new guest's blocks start at zero";
  EXPECT_NE(seg->counters_header().guest_since_ns.load(), 0u);
  ASSERT_TRUE(Call("two", MsgType::NORMAL, out, {kLong, false}));
  EXPECT_EQ(WaitForGuestCounter(*seg, 0, 1, w::kServed, 1), 1u);
  EXPECT_EQ(seg->counters_header().guest_attached.load(), 1u) << "the host records the taken seat";
  const shm::StatsSnapshot st = host_->Stats();
  EXPECT_EQ(st.calls.calls, 2u) << "the host's counts span guests";
}

// Guest calls: the host counts as their server, the guest as their caller.
TEST(CountersOfGuestCalls, HostCountsAsServerAndGuestAsCaller) {
  SegmentName name("cntgc");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 2)));
  // The peer's answers check: "host:<request>", placed and typed as the request was.
  ASSERT_TRUE(host.Start([](const shm::Message& m, shm::MutableBytes out) {
    const std::string reply = "host:" + std::string(m.data.as_string_view());
    const int32_t n = static_cast<int32_t>(reply.size());
    std::memcpy(m.end_aligned ? out.data() + out.size() - reply.size() : out.data(), reply.data(), reply.size());
    return shm::Reply{m.end_aligned ? -n : n, m.type};
  }));
  Process guest =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "basic", "--count", "7", "--rounds", "3"});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "OK"));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  const shm::StatsSnapshot st = host.Stats();
  ASSERT_EQ(st.serve_slots.size(), 2u);
  EXPECT_EQ(st.served.served, 10u);
  EXPECT_EQ(st.served.error_answers(), 0u);
  EXPECT_EQ(st.calls.calls, 0u) << "the host made no calls";
  auto seg = MapLiveSegment(::getpid(), name.str());
  ASSERT_TRUE(seg) << seg.error().ToString();
  EXPECT_EQ(GuestCounter(*seg, 1, 2, w::kCalls), 10u) << "the guest's caller blocks of the guest slots";
  EXPECT_EQ(GuestCounter(*seg, 1, 2, w::kCallBytesIn), st.served.bytes_out);
  EXPECT_EQ(GuestCounter(*seg, 1, 2, w::kCallBytesOut), st.served.bytes_in);
  // The guest has exited; the host's doorman records the closed seat when it sees the connection end.
  const auto deadline = Clock::now() + kLong;
  while (seg->counters_header().guest_attached.load() != 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  EXPECT_EQ(seg->counters_header().guest_attached.load(), 0u) << "the guest has left";
  host.Stop();
}

}  // namespace
}  // namespace shm_test

// SPDX-License-Identifier: Apache-2.0
// Host calls to a guest process: Send, SendToSlot, zero-copy slots (in place, held across calls, end-aligned
// both ways, hostile sizes, outliving the host), random payloads, and short deadlines.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;

using Calls = HostAndGuest;

TEST_F(Calls, SendCarriesBytesAndTypeEachWay) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("")));
  std::vector<uint8_t> out;
  // string_view, vector and empty requests; the guest echoes bytes and type.
  auto r = host_->Send(std::string_view("hello"), MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(*r, MsgType::NORMAL);
  EXPECT_EQ(Str(out), "hello");

  const std::vector<uint8_t> binary = {0, 1, 2, 0x7f, 0x80, 0xff, 0};
  r = host_->Send(binary, MsgType::APP_START, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(*r, MsgType::APP_START);
  EXPECT_EQ(out, binary);

  r = host_->Send(shm::Bytes(), Type(250), out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(*r, Type(250));
  EXPECT_TRUE(out.empty());

  r = host_->Send("fb", MsgType::FLATBUFFER, out, {kLong, true});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(*r, MsgType::FLATBUFFER);
  EXPECT_EQ(Str(out), "fb");
}

TEST_F(Calls, SendToSlotReachesThatSlot) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 4)));
  std::vector<uint8_t> out;
  for (int pass = 0; pass < 3; ++pass) {
    for (uint32_t i = 0; i < host_->host_slots(); ++i) {
      auto r = host_->SendToSlot(i, "", Type(kTypeSlot), out, {kLong, false});
      ASSERT_TRUE(r) << "slot " << i << ": " << Describe(r);
      EXPECT_EQ(Str(out), std::to_string(i)) << "the guest saw the call on another slot";
    }
  }
  auto r = host_->SendToSlot(host_->host_slots(), "", MsgType::NORMAL, out, {kLong, false});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
}

TEST_F(Calls, ZeroCopyWritesAndReadsInPlace) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  ASSERT_TRUE(z->valid());
  EXPECT_EQ(z->capacity(), host_->payload_capacity());
  shm::MutableBytes buf = z->RequestBuffer();
  ASSERT_EQ(buf.size(), z->capacity());
  EXPECT_TRUE(InSegmentMapping(name_.str(), buf.data(), buf.size())) << "the request buffer is not in the segment";

  const std::string msg = "written in the slot";
  std::memcpy(buf.data(), msg.data(), msg.size());
  auto r = z->Send(static_cast<int32_t>(msg.size()), MsgType::NORMAL, kLong);
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(Str(z->Response()), msg);
  EXPECT_EQ(z->ResponseSize(), static_cast<int32_t>(msg.size()));
  EXPECT_EQ(z->ResponseType(), MsgType::NORMAL);
  EXPECT_TRUE(InSegmentMapping(name_.str(), z->Response().data(), z->Response().size()))
      << "the response is not read in place";
}

TEST_F(Calls, HeldZeroCopySlotSendsAgainAndAgain) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  const uint32_t index = z->index();
  std::vector<uint8_t> other;
  for (int i = 0; i < 300; ++i) {
    const std::string msg = "message " + std::to_string(i);
    const bool end_aligned = i % 2 == 1;
    shm::MutableBytes buf = z->RequestBuffer();
    std::memcpy(end_aligned ? buf.data() + buf.size() - msg.size() : buf.data(), msg.data(), msg.size());
    const int32_t n = static_cast<int32_t>(msg.size());
    const MsgType type = Type(128 + static_cast<uint32_t>(i % 3));
    auto r = z->Send(end_aligned ? -n : n, type, kLong);
    ASSERT_TRUE(r) << "send " << i << ": " << Describe(r);
    ASSERT_EQ(Str(z->Response()), msg);
    ASSERT_EQ(z->ResponseType(), type);
    ASSERT_EQ(z->index(), index) << "a held slot must stay the same slot";
    if (i % 50 == 0) {  // the other slot keeps serving copying calls meanwhile
      auto c = host_->Send("other", MsgType::NORMAL, other, {kLong, false});
      ASSERT_TRUE(c) << Describe(c);
      EXPECT_EQ(Str(other), "other");
    }
  }
  z->Release();
  EXPECT_FALSE(z->valid());
  auto after = z->Send(1, MsgType::NORMAL, kLong);
  ASSERT_FALSE(after);
  EXPECT_TRUE(after.error().code() == ErrorCode::kSlotLost || after.error().code() == ErrorCode::kClosed)
      << after.error().ToString();
}

// Negative sizes: the request sits at the end of the request buffer and the guest's answer at the end of the
// response buffer (as a FlatBufferBuilder leaves them).
TEST_F(Calls, EndAlignedPayloadsTravelBothWays) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  const uint32_t cap = z->capacity();
  for (uint32_t n : {1u, 7u, 64u, 1000u, cap}) {
    SCOPED_TRACE("size " + std::to_string(n));
    shm::MutableBytes buf = z->RequestBuffer();
    for (uint32_t i = 0; i < n; ++i) buf[cap - n + i] = static_cast<uint8_t>(i * 7 + n);
    const std::vector<uint8_t> sent(buf.data() + cap - n, buf.data() + cap);
    auto r = z->SendFlatBuffer(static_cast<int32_t>(n), kLong);
    ASSERT_TRUE(r) << Describe(r);
    EXPECT_EQ(z->ResponseType(), MsgType::FLATBUFFER);
    EXPECT_EQ(z->ResponseSize(), -static_cast<int32_t>(n)) << "the guest did not answer end-aligned";
    const shm::Bytes resp = z->Response();
    ASSERT_EQ(resp.size(), n);
    EXPECT_TRUE(std::equal(resp.begin(), resp.end(), sent.begin()));
    // It ends where the response buffer ends: on a 64-byte boundary, inside the segment.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(resp.end()) % 64, 0u);
    EXPECT_TRUE(InSegmentMapping(name_.str(), resp.data(), resp.size()));

    // The same through Send with a negative size and an application type.
    auto s = z->Send(-static_cast<int32_t>(n), MsgType::APP_START, kLong);
    ASSERT_TRUE(s) << Describe(s);
    EXPECT_EQ(z->ResponseSize(), -static_cast<int32_t>(n));
    EXPECT_TRUE(std::equal(z->Response().begin(), z->Response().end(), sent.begin()));
  }
  // The copying call places the request at the end too (CallOptions::end_aligned).
  std::vector<uint8_t> out;
  auto c = host_->Send("tail", MsgType::NORMAL, out, {kLong, true});
  ASSERT_TRUE(c) << Describe(c);
  EXPECT_EQ(Str(out), "tail");
}

// SPECIFICATION.md §8.1: a payload of at most 32 bytes travels in its slot's header (the cache line the control
// word moves), a larger one in the buffers; requests and answers, both placements, both kinds of call.
TEST_F(Calls, SmallPayloadsTravelInTheSlotHeaderLargerOnesInTheBuffers) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  const uint32_t cap = z->capacity(), index = z->index();
  const shm::wire::Geometry g{2, 0, cap, 0};
  const uint64_t inline_at = shm::wire::kSegmentHeaderSize + uint64_t{shm::wire::kSlotHeaderSize} * index +
                             offsetof(shm::wire::SlotHeader, inline_data);
  const uint64_t response_at = shm::wire::RequestBufferOffset(g, index) + cap;
  for (int32_t size : {1, 2, 31, 32, 33, 63, 64, -1, -31, -32, -33, -64}) {
    SCOPED_TRACE("size " + std::to_string(size));
    const uint32_t n = static_cast<uint32_t>(size < 0 ? -size : size);
    shm::MutableBytes buf = z->RequestBuffer();
    uint8_t* at = buf.data() + (size < 0 ? cap - n : 0);
    for (uint32_t i = 0; i < n; ++i) at[i] = static_cast<uint8_t>(i * 13 + n);
    const std::vector<uint8_t> sent(at, at + n);
    auto r = z->Send(size, size < 0 ? MsgType::FLATBUFFER : MsgType::NORMAL, kLong);
    ASSERT_TRUE(r) << Describe(r);
    ASSERT_EQ(z->ResponseSize(), size) << "the guest echoes with the request's placement";
    const shm::Bytes resp = z->Response();
    EXPECT_EQ(std::vector<uint8_t>(resp.begin(), resp.end()), sent);
    const uint64_t off = SegmentOffset(name_.str(), resp.data());
    if (n <= shm::wire::kInlineSize) {
      EXPECT_EQ(off, inline_at + (size < 0 ? shm::wire::kInlineSize - n : 0)) << "not in the slot header";
    } else {
      EXPECT_EQ(off, response_at + (size < 0 ? cap - n : 0)) << "not in the response buffer";
    }
  }
  // The copying call writes a small request into the header only: the guest must read it there, not from the
  // buffer, which holds other bytes from the zero-copy calls above.
  std::memset(z->RequestBuffer().data(), 0xEE, cap);
  z->Release();
  for (uint32_t n : {1u, 20u, 32u, 33u}) {
    for (bool end_aligned : {false, true}) {
      SCOPED_TRACE("copying, " + std::to_string(n) + " bytes" + (end_aligned ? ", end-aligned" : ""));
      std::vector<uint8_t> req(n), out;
      for (uint32_t i = 0; i < n; ++i) req[i] = static_cast<uint8_t>(i + 1);
      auto c =
          host_->SendToSlot(index, req, end_aligned ? MsgType::FLATBUFFER : MsgType::NORMAL, out, {kLong, end_aligned});
      ASSERT_TRUE(c) << Describe(c);
      EXPECT_EQ(out, req);
    }
  }
}

TEST_F(Calls, HostileSizesAreRefusedAndTheSlotStaysUsable) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2, 0, 4096)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  const int32_t cap = static_cast<int32_t>(z->capacity());
  for (int32_t size : {INT32_MIN, INT32_MIN + 1, -(cap + 1), cap + 1, INT32_MAX}) {
    auto r = z->Send(size, MsgType::NORMAL, kLong);
    ASSERT_FALSE(r) << "size " << size;
    EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << "size " << size << ": " << r.error().ToString();
    EXPECT_TRUE(z->valid()) << "a refused size must not cost the slot";
  }
  auto fb = z->SendFlatBuffer(-5, kLong);
  ASSERT_FALSE(fb);
  EXPECT_EQ(fb.error().code(), ErrorCode::kTooLarge) << fb.error().ToString();
  fb = z->SendFlatBuffer(cap + 1, kLong);
  ASSERT_FALSE(fb);
  EXPECT_EQ(fb.error().code(), ErrorCode::kTooLarge) << fb.error().ToString();

  std::memcpy(z->RequestBuffer().data(), "abc", 3);
  auto ok = z->Send(3, MsgType::NORMAL, kLong);
  ASSERT_TRUE(ok) << Describe(ok);
  EXPECT_EQ(Str(z->Response()), "abc");
  z->Release();

  // The copying call sends a request larger than the slot in chunks (SPECIFICATION.md §8.5), and refuses
  // one beyond any transfer before anything is sent.
  std::vector<uint8_t> big(static_cast<size_t>(cap) + 1, 'b'), out;
  auto r = host_->Send(big, MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(out, big);
  r = host_->Send(shm::Bytes(big.data(), (size_t{1} << 40) + 1), MsgType::NORMAL, out, {kLong, false});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  big.pop_back();
  r = host_->Send(big, MsgType::NORMAL, out, {kLong, true});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(out, big);
}

TEST_F(Calls, RandomPayloadsOfRandomSizesArriveIntact) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 3, 0, 8192)));
  const uint32_t cap = host_->payload_capacity();
  std::mt19937 rng(20240611);  // fixed seed: a failure reproduces
  std::vector<uint8_t> req, out;
  for (int i = 0; i < 400; ++i) {
    const uint32_t n = i == 0 ? 0 : i == 1 ? cap : std::uniform_int_distribution<uint32_t>(0, cap)(rng);
    req.resize(n);
    for (auto& b : req) b = static_cast<uint8_t>(rng());
    const bool end_aligned = (rng() & 1) != 0;
    SCOPED_TRACE("iteration " + std::to_string(i) + ", size " + std::to_string(n));
    switch (i % 3) {
      case 0: {
        auto r = host_->Send(req, MsgType::NORMAL, out, {kLong, end_aligned});
        ASSERT_TRUE(r) << Describe(r);
        ASSERT_EQ(out, req);
        break;
      }
      case 1: {
        const uint32_t slot = static_cast<uint32_t>(rng() % host_->host_slots());
        auto r = host_->SendToSlot(slot, req, MsgType::APP_START, out, {kLong, end_aligned});
        ASSERT_TRUE(r) << Describe(r);
        ASSERT_EQ(out, req);
        break;
      }
      default: {
        auto z = host_->GetZeroCopySlot(kLong);
        ASSERT_TRUE(z) << Describe(z);
        uint8_t* dst = z->RequestBuffer().data() + (end_aligned ? cap - n : 0);
        if (n != 0) std::memcpy(dst, req.data(), n);
        auto r = z->Send(end_aligned ? -static_cast<int32_t>(n) : static_cast<int32_t>(n), MsgType::NORMAL, kLong);
        ASSERT_TRUE(r) << Describe(r);
        ASSERT_EQ(z->Response().size(), n);
        ASSERT_TRUE(std::equal(z->Response().begin(), z->Response().end(), req.begin()));
        break;
      }
    }
  }
}

TEST_F(Calls, ZeroCopySlotOutlivingItsHostIsHarmless) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  std::memcpy(z->RequestBuffer().data(), "x", 1);
  ASSERT_TRUE(z->Send(1, MsgType::NORMAL, kLong));
  host_.reset();  // shuts down; the slot keeps the mapping alive but must not use it any more
  EXPECT_FALSE(z->valid());
  EXPECT_EQ(z->RequestBuffer().size(), 0u);
  EXPECT_EQ(z->Response().size(), 0u);
  auto r = z->Send(1, MsgType::NORMAL, kLong);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kClosed) << r.error().ToString();
  z->Release();
  EXPECT_TRUE(ExitsWith(guest_, kExitOk));
}

// A copying Send leaves its slot parked (held, RESPONSE on the wire) for the thread's next call; any other
// call of this process takes a parked slot when none is free; ReleaseParkedSlots and Shutdown free it.
TEST_F(Calls, SendParksItsSlotForTheNextCallAndGivesItUpWhenNeeded) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 1)));
  const int fd = OpenSegmentOf(::getpid(), name_.str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  const uint32_t kFree = StateValue(shm::wire::SlotState::kFree);
  const uint32_t kResponse = StateValue(shm::wire::SlotState::kResponse);
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("a", MsgType::NORMAL, out));
  EXPECT_EQ(SlotStateIn(fd, 0), kResponse) << "the slot was not parked";
  ASSERT_TRUE(Call("b", MsgType::NORMAL, out));
  EXPECT_EQ(Str(out), "b");

  // A zero-copy slot takes the parked one; then nothing is left for a Send.
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  auto r = Call("c", MsgType::NORMAL, out, {milliseconds(20), false});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kNoFreeSlot) << r.error().ToString();
  z->Release();
  EXPECT_EQ(SlotStateIn(fd, 0), kFree);

  // A slot parked by a thread that has exited serves this one, and SendToSlot takes it too.
  std::thread([&] {
    std::vector<uint8_t> o;
    EXPECT_TRUE(Call("d", MsgType::NORMAL, o));
  }).join();
  EXPECT_EQ(SlotStateIn(fd, 0), kResponse);
  ASSERT_TRUE(Call("e", MsgType::NORMAL, out));
  EXPECT_EQ(Str(out), "e");
  ASSERT_TRUE(host_->SendToSlot(0, "f", MsgType::NORMAL, out, {kLong, false}));
  EXPECT_EQ(Str(out), "f");
  EXPECT_EQ(SlotStateIn(fd, 0), kResponse) << "SendToSlot parks its slot too";
  ASSERT_TRUE(host_->SendToSlot(0, "g", MsgType::NORMAL, out, {kLong, false}));
  EXPECT_EQ(Str(out), "g");

  host_->ReleaseParkedSlots();
  EXPECT_EQ(SlotStateIn(fd, 0), kFree);
  ASSERT_TRUE(Call("h", MsgType::NORMAL, out));
  EXPECT_EQ(SlotStateIn(fd, 0), kResponse);
  host_->Shutdown();
  EXPECT_EQ(SlotStateIn(fd, 0), kFree) << "Shutdown left a parked slot held";
  ::close(fd);
}

// More threads than slots: parked slots pass from thread to thread and every call gets its own answer.
TEST_F(Calls, ThreadsShareFewerSlotsThroughParking) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> o;
      for (int i = 0; i < 300; ++i) {
        const std::string req = std::to_string(t) + "/" + std::to_string(i);
        auto r = Call(req, MsgType::NORMAL, o);
        if (!r) {
          ADD_FAILURE() << r.error().ToString();
          failed.fetch_add(1);
        } else if (Str(o) != req) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

// ---- Deadlines -------------------------------------------------------------------------------------------------

int64_t Median(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A guest that is attached but never answers: every 1 ms call ends with kTimeout at its deadline. How soon after
// it is up to the scheduler: the median is printed and bounded only at 1 s, far short of the 10 s default timeout
// that a call ignoring its own deadline would wait.
TEST(Deadlines, OneMillisecondTimeoutReturnsPromptly) {
  SegmentName name("deadline");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 2)));
  Process guest = SpawnPeer({"guest", "--name", name.str(), "--mode", "attach-only"});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "CONNECTED"));
  std::vector<int64_t> us;
  std::vector<uint8_t> out;
  for (int i = 0; i < 15; ++i) {
    const auto start = Clock::now();
    auto r = host.Send("never answered", MsgType::NORMAL, out, {milliseconds(1), false});
    us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), ErrorCode::kTimeout) << r.error().ToString();
  }
  const int64_t median_us = Median(us);
  std::printf("1 ms timeout: median %lld us, max %lld us\n", static_cast<long long>(median_us),
              static_cast<long long>(*std::max_element(us.begin(), us.end())));
  EXPECT_LT(median_us, 1000000);
  EXPECT_GE(median_us, 1000) << "a call cannot time out before its deadline";
  guest.CloseStdin();
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

// Same with the guest inside a handler that does not return: the call is abandoned at its deadline.
TEST_F(Calls, OneMillisecondTimeoutWhileTheGuestServesReturnsPromptly) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 1)));
  std::vector<uint8_t> out;
  std::vector<int64_t> us;
  // The first call that the guest takes stays in its handler; later calls find the one slot busy.
  for (int i = 0; i < 9; ++i) {
    const auto start = Clock::now();
    auto r = host_->Send("stuck", Type(kTypeBlock), out, {milliseconds(1), false});
    us.push_back(std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().code() == ErrorCode::kTimeout || r.error().code() == ErrorCode::kNoFreeSlot)
        << r.error().ToString();
  }
  std::printf("1 ms timeout while the guest serves: median %lld us, max %lld us\n", static_cast<long long>(Median(us)),
              static_cast<long long>(*std::max_element(us.begin(), us.end())));
  EXPECT_LT(Median(us), 1000000);
  guest_.CloseStdin();  // lets a handler that did enter answer (late, discarded)
}

}  // namespace
}  // namespace shm_test

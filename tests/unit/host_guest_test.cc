// SPDX-License-Identifier: Apache-2.0
// A DirectHost and a DirectGuest in one test process (their OFD locks conflict even within one process, so they
// behave as two peers). Calls, zero-copy slots, wire errors, and the host's name lifecycle. Separate-process
// behaviour is the multi-process tier's.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shm/detail/attach.h"
#include "shm/detail/segment.h"
#include "shm/guest.h"
#include "shm/host.h"
#include "shm/log.h"
#include "unit_util.h"

namespace {

using shm::ErrorCode;
using shm::Message;
using shm::MsgType;
using shm::MutableBytes;
using shm::Reply;
using shm::wire::WireError;
using namespace std::chrono_literals;

constexpr uint32_t kPayload = 256;
const MsgType kAppType = static_cast<MsgType>(200);

std::string Str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::string Str(shm::Bytes b) { return std::string(b.as_string_view()); }

// Copies the request to the start of the response buffer, with an application type.
Reply Echo(const Message& m, MutableBytes out) {
  if (m.data.size() > out.size())
    return Reply::Owned(std::vector<uint8_t>(m.data.data(), m.data.data() + m.data.size()), kAppType);
  std::memcpy(out.data(), m.data.data(), m.data.size());
  return Reply{static_cast<int32_t>(m.data.size()), kAppType};
}

shm::HostConfig HostConfigFor(const std::string& name) {
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 2;
  c.guest_slots = 1;
  c.payload_size = kPayload;
  c.guest_payload_size = kPayload;
  return c;
}

shm::GuestConfig GuestConfigFor(const std::string& name) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = 10s;
  return c;
}

// What the handler last saw, copied out of the slot.
struct Seen {
  std::string bytes;
  MsgType type = MsgType::NORMAL;
  bool end_aligned = false;
  uint32_t slot = UINT32_MAX;
  uintptr_t end_address = 0;
};

// A host and a guest serving its slots. The handler runs on guest worker threads while the test thread waits
// in a call: the two are ordered only through the segment, which ThreadSanitizer cannot follow here because
// host and guest map it at different addresses. So what the test and the handler share goes through a mutex.
class HostGuest : public ::testing::Test {
 protected:
  using HandlerFn = std::function<Reply(const Message&, MutableBytes)>;

  void SetUp() override {
    name_ = shm_unit::UniqueName("hg");
    auto h = host_.Init(HostConfigFor(name_));
    ASSERT_TRUE(h.ok()) << h.error().ToString();
    auto g = guest_.Connect(GuestConfigFor(name_));
    ASSERT_TRUE(g.ok()) << g.error().ToString();
    auto s = guest_.Start([this](const Message& m, MutableBytes out) {
      HandlerFn fn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++calls_;
        seen_.bytes = Str(m.data);
        seen_.type = m.type;
        seen_.end_aligned = m.end_aligned;
        seen_.slot = m.slot;
        seen_.end_address = reinterpret_cast<uintptr_t>(m.data.end());
        fn = handler_;
      }
      return fn(m, out);
    });
    ASSERT_TRUE(s.ok()) << s.error().ToString();
  }
  void TearDown() override {
    guest_.Close();
    host_.Shutdown();
    EXPECT_FALSE(shm_unit::NameHeld(name_));
  }

  void SetHandler(HandlerFn fn) {
    std::lock_guard<std::mutex> lock(mu_);
    handler_ = std::move(fn);
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  Seen seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

  // Expects a call to fail with kRemote carrying `wire`.
  void ExpectRemote(const shm::Result<MsgType>& r, WireError wire) {
    ASSERT_FALSE(r.ok()) << "succeeded with type " << static_cast<uint32_t>(*r);
    EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
    EXPECT_EQ(r.error().remote(), wire) << r.error().ToString();
    EXPECT_NE(r.error().message().find(shm::wire::ToString(wire)), std::string::npos) << r.error().message();
  }

  std::string name_;
  shm::DirectHost host_;
  shm::DirectGuest guest_;

 private:
  std::mutex mu_;
  HandlerFn handler_ = Echo;
  int calls_ = 0;
  Seen seen_;
};

// ---- Copying calls -----------------------------------------------------------------------------------------------

TEST_F(HostGuest, RoundTripDeliversRequestAndResponse) {
  SetHandler([](const Message& m, MutableBytes out) {
    const std::string answer = "answer to " + Str(m.data);
    std::memcpy(out.data(), answer.data(), answer.size());
    return Reply{static_cast<int32_t>(answer.size()), MsgType::APP_START};
  });
  std::vector<uint8_t> response;
  auto r = host_.Send("hello", static_cast<MsgType>(130), response);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, MsgType::APP_START);
  EXPECT_EQ(Str(response), "answer to hello");
  const Seen seen_now = seen();
  EXPECT_EQ(seen_now.bytes, "hello");
  EXPECT_EQ(seen_now.type, static_cast<MsgType>(130));
  EXPECT_FALSE(seen_now.end_aligned);
  EXPECT_LT(seen_now.slot, 2u);
  EXPECT_EQ(calls(), 1);
}

TEST_F(HostGuest, ManyCallsOnEverySlotEachGetTheirOwnAnswer) {
  std::vector<uint8_t> response;
  for (int i = 0; i < 200; ++i) {
    const std::string req = "request-" + std::to_string(i);
    auto r = (i % 3 == 0) ? host_.Send(req, MsgType::NORMAL, response)
                          : host_.SendToSlot(static_cast<uint32_t>(i % 2), req, MsgType::NORMAL, response);
    ASSERT_TRUE(r.ok()) << i << ": " << r.error().ToString();
    ASSERT_EQ(Str(response), req);
  }
  EXPECT_EQ(calls(), 200);
}

TEST_F(HostGuest, EmptyRequestAndEmptyResponse) {
  SetHandler([](const Message& m, MutableBytes) { return Reply{0, m.data.empty() ? MsgType::NORMAL : kAppType}; });
  std::vector<uint8_t> response{1, 2, 3};
  auto r = host_.Send(shm::Bytes(), MsgType::NORMAL, response);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, MsgType::NORMAL);
  EXPECT_TRUE(response.empty());
}

// A view that claims bytes it does not point to is refused, never read; the slots stay usable.
TEST_F(HostGuest, NullRequestWithASizeIsInvalid) {
  const shm::Bytes null_view(static_cast<const uint8_t*>(nullptr), 5);
  std::vector<uint8_t> response;
  auto expect_invalid = [](const shm::Result<MsgType>& r) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
  };
  expect_invalid(host_.Send(null_view, MsgType::NORMAL, response));
  expect_invalid(host_.Send(null_view, MsgType::NORMAL, response, {shm::kUseDefault, true}));
  expect_invalid(host_.SendToSlot(1, null_view, MsgType::NORMAL, response));
  expect_invalid(host_.Send(shm::Bytes(static_cast<const uint8_t*>(nullptr), SIZE_MAX), MsgType::NORMAL, response));
  expect_invalid(guest_.SendGuestCall(null_view, MsgType::GUEST_CALL, response));
  EXPECT_EQ(calls(), 0);
  // An empty view may have a null pointer.
  auto empty = host_.Send(shm::Bytes(static_cast<const uint8_t*>(nullptr), 0), MsgType::NORMAL, response);
  ASSERT_TRUE(empty.ok()) << empty.error().ToString();
  for (uint32_t slot : {0u, 1u}) {
    auto ok = host_.SendToSlot(slot, "fine", MsgType::NORMAL, response);
    ASSERT_TRUE(ok.ok()) << ok.error().ToString();
    EXPECT_EQ(Str(response), "fine");
  }
}

TEST_F(HostGuest, FullCapacityRequestFits) {
  const std::string req(kPayload, 'x');
  std::vector<uint8_t> response;
  auto r = host_.Send(req, MsgType::NORMAL, response);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Str(response), req);
}

// Larger than a slot travels in chunks (SPECIFICATION.md §8.5); larger than any transfer can carry (2^40) is
// refused before a slot is claimed. (The view is never read: the size alone is refused.)
TEST_F(HostGuest, RequestTooLargeIsRefusedBeforeSending) {
  const std::string small(kPayload + 1, 'x');
  const shm::Bytes big(reinterpret_cast<const uint8_t*>(small.data()), (size_t{1} << 40) + 1);
  std::vector<uint8_t> response;
  auto r = host_.Send(big, MsgType::NORMAL, response);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
  EXPECT_NE(r.error().message().find(std::to_string(big.size())), std::string::npos) << r.error().message();
  auto r2 = host_.SendToSlot(1, big, MsgType::NORMAL, response, {shm::kUseDefault, true});
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code(), ErrorCode::kTooLarge) << r2.error().ToString();
  EXPECT_EQ(calls(), 0) << "nothing was sent";
  // The slots were given back: calls on both still work.
  for (uint32_t slot : {0u, 1u}) {
    auto ok = host_.SendToSlot(slot, "fits", MsgType::NORMAL, response);
    ASSERT_TRUE(ok.ok()) << ok.error().ToString();
  }
}

TEST_F(HostGuest, ReservedRequestTypeIsRefusedBeforeSending) {
  std::vector<uint8_t> response;
  for (uint32_t t : {2u, 3u, 4u, 9u, 12u, 100u, 126u, 127u}) {
    auto r = host_.Send("x", static_cast<MsgType>(t), response);
    ASSERT_FALSE(r.ok()) << "type " << t;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
    EXPECT_NE(r.error().message().find("reserved"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(calls(), 0);
  auto ok = host_.Send("x", MsgType::GUEST_CALL, response);
  EXPECT_TRUE(ok.ok()) << ok.error().ToString();
}

TEST_F(HostGuest, HandlerResponseTooLargeIsAnsweredWithResponseTooLarge) {
  std::vector<uint8_t> response;
  for (int32_t size : {static_cast<int32_t>(kPayload) + 1, -static_cast<int32_t>(kPayload) - 1, INT32_MAX, INT32_MIN}) {
    SCOPED_TRACE(size);
    SetHandler([size](const Message&, MutableBytes) { return Reply{size, MsgType::NORMAL}; });
    ExpectRemote(host_.Send("x", MsgType::NORMAL, response), WireError::kResponseTooLarge);
  }
  EXPECT_EQ(calls(), 4);
}

TEST_F(HostGuest, HandlerThatThrowsFailsTheCallAndTheNextCallSucceeds) {
  std::mutex mu;
  std::vector<std::string> logged;
  shm::SetLogSink([&](shm::LogLevel, std::string_view line) {
    std::lock_guard<std::mutex> lock(mu);
    logged.emplace_back(line);
  });
  std::vector<uint8_t> response;
  SetHandler([](const Message&, MutableBytes) -> Reply { throw std::runtime_error("boom"); });
  ExpectRemote(host_.Send("x", MsgType::NORMAL, response), WireError::kHandlerFailed);
  SetHandler([](const Message&, MutableBytes) -> Reply { throw 42; });
  ExpectRemote(host_.Send("x", MsgType::NORMAL, response), WireError::kHandlerFailed);
  SetHandler(Echo);
  for (uint32_t slot : {0u, 1u}) {  // every worker is still serving
    auto r = host_.SendToSlot(slot, "after", MsgType::NORMAL, response);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(Str(response), "after");
  }
  shm::SetLogSink(nullptr);
  std::lock_guard<std::mutex> lock(mu);
  int threw = 0;
  bool boom = false;
  for (const auto& line : logged) {
    threw += line.find("handler threw") != std::string::npos;
    boom |= line.find("boom") != std::string::npos;
  }
  EXPECT_EQ(threw, 2) << "each exception is logged through the sink";
  EXPECT_TRUE(boom) << "the log names what the handler threw";
}

TEST_F(HostGuest, HandlerFailureReplyFailsTheCall) {
  SetHandler([](const Message&, MutableBytes) { return Reply::Failure(); });
  std::vector<uint8_t> response;
  ExpectRemote(host_.Send("x", MsgType::NORMAL, response), WireError::kHandlerFailed);
}

TEST_F(HostGuest, HandlerReplyingAReservedTypeFailsTheCall) {
  std::vector<uint8_t> response;
  for (uint32_t t : {1u, 2u, 3u, 50u, 126u}) {
    SCOPED_TRACE(t);
    SetHandler([t](const Message&, MutableBytes) { return Reply{0, static_cast<MsgType>(t)}; });
    ExpectRemote(host_.Send("x", MsgType::NORMAL, response), WireError::kReservedType);
  }
}

TEST_F(HostGuest, HeartbeatIsAnsweredWithoutCallingTheHandler) {
  std::vector<uint8_t> response{9};
  for (int i = 0; i < 3; ++i) {
    auto r = host_.Send(i == 0 ? shm::Bytes() : shm::Bytes("probe"), MsgType::HEARTBEAT_REQ, response);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(*r, MsgType::HEARTBEAT_RESP);
    EXPECT_TRUE(response.empty());
  }
  EXPECT_EQ(calls(), 0);
  auto r = host_.Send("x", MsgType::NORMAL, response);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(calls(), 1);
}

TEST_F(HostGuest, EndAlignedRequestArrivesEndAligned) {
  std::vector<uint8_t> response;
  // (An empty request cannot be end-aligned on the wire: -0 is 0.)
  for (const std::string& req : {std::string("tail"), std::string(kPayload, 't'), std::string(1, '1')}) {
    SCOPED_TRACE(req.size());
    auto r = host_.Send(req, MsgType::FLATBUFFER, response, {10s, true});
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    const Seen seen_now = seen();
    EXPECT_TRUE(seen_now.end_aligned);
    EXPECT_EQ(seen_now.type, MsgType::FLATBUFFER);
    EXPECT_EQ(seen_now.bytes, req);
    EXPECT_EQ(seen_now.end_address % 64, 0u) << "end-aligned data ends on a cache line";
    EXPECT_EQ(Str(response), req);
  }
}

TEST_F(HostGuest, EndAlignedResponseArrivesWhole) {
  SetHandler([](const Message& m, MutableBytes out) {
    std::memcpy(out.end() - m.data.size(), m.data.data(), m.data.size());
    return Reply{-static_cast<int32_t>(m.data.size()), MsgType::FLATBUFFER};
  });
  std::vector<uint8_t> response;
  auto r = host_.Send("at the end", MsgType::NORMAL, response);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, MsgType::FLATBUFFER);
  EXPECT_EQ(Str(response), "at the end");
}

TEST_F(HostGuest, BusySlotsGiveNoFreeSlotAndSlotBusyAtTheDeadline) {
  auto a = host_.GetZeroCopySlot(1s);
  auto b = host_.GetZeroCopySlot(1s);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> response;
  auto r = host_.Send("x", MsgType::NORMAL, response, {5ms});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNoFreeSlot) << r.error().ToString();
  auto r2 = host_.SendToSlot(a->index(), "x", MsgType::NORMAL, response, {5ms});
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.error().code(), ErrorCode::kSlotBusy) << r2.error().ToString();
  auto z = host_.GetZeroCopySlot(5ms);
  ASSERT_FALSE(z.ok());
  EXPECT_EQ(z.error().code(), ErrorCode::kNoFreeSlot);
  a->Release();
  auto r3 = host_.Send("x", MsgType::NORMAL, response, {10s});
  EXPECT_TRUE(r3.ok()) << r3.error().ToString();
}

// A request that could never be sent is refused before a slot is claimed: at once, with its own code, even
// while every slot is busy (not kNoFreeSlot or kSlotBusy at the deadline).
TEST_F(HostGuest, UnsendableRequestIsRefusedAtOnceWhileEverySlotIsBusy) {
  auto a = host_.GetZeroCopySlot(10s);
  auto b = host_.GetZeroCopySlot(10s);
  ASSERT_TRUE(a.ok() && b.ok());
  auto g = guest_.AcquireGuestSlot(10s);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  const std::string small(kPayload + 1, 'x');
  const shm::Bytes big(reinterpret_cast<const uint8_t*>(small.data()), (size_t{1} << 40) + 1);  // never read
  const shm::CallOptions wait{2s, false}, aligned{2s, true};
  std::vector<uint8_t> response;
  auto expect = [](const shm::Result<MsgType>& r, ErrorCode code) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), code) << r.error().ToString();
  };
  expect(host_.Send(big, MsgType::NORMAL, response, wait), ErrorCode::kTooLarge);
  expect(host_.Send(big, MsgType::NORMAL, response, aligned), ErrorCode::kTooLarge);
  expect(host_.SendToSlot(a->index(), big, MsgType::NORMAL, response, wait), ErrorCode::kTooLarge);
  expect(host_.Send("x", MsgType::SYSTEM_ERROR, response, wait), ErrorCode::kInvalidArgs);
  expect(host_.SendToSlot(b->index(), "x", MsgType::HEARTBEAT_RESP, response, wait), ErrorCode::kInvalidArgs);
  expect(guest_.SendGuestCall(big, MsgType::GUEST_CALL, response, wait), ErrorCode::kTooLarge);
  expect(guest_.SendGuestCall("x", MsgType::SHUTDOWN, response, wait), ErrorCode::kInvalidArgs);
  EXPECT_EQ(calls(), 0);
  EXPECT_TRUE(a->valid() && b->valid() && g->valid()) << "the held slots were not touched";
}

TEST_F(HostGuest, SendToSlotOutOfRangeIsInvalid) {
  std::vector<uint8_t> response;
  for (uint32_t slot : {2u, 3u, UINT32_MAX}) {
    auto r = host_.SendToSlot(slot, "x", MsgType::NORMAL, response);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
  }
}

// ---- Zero-copy slots ---------------------------------------------------------------------------------------------

TEST_F(HostGuest, ZeroCopySlotWritesAndReadsInPlace) {
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  ASSERT_TRUE(slot->valid());
  EXPECT_EQ(slot->capacity(), kPayload);
  MutableBytes buf = slot->RequestBuffer();
  ASSERT_EQ(buf.size(), kPayload);
  for (int i = 0; i < 3; ++i) {  // the held slot sends again from RESPONSE
    const std::string req = "zero-copy " + std::to_string(i);
    std::memcpy(buf.data(), req.data(), req.size());
    auto r = slot->Send(static_cast<int32_t>(req.size()), kAppType);
    ASSERT_TRUE(r.ok()) << r.error().ToString();
    EXPECT_EQ(Str(slot->Response()), req);
    EXPECT_EQ(slot->ResponseSize(), static_cast<int32_t>(req.size()));
    EXPECT_EQ(slot->ResponseType(), kAppType);
  }
  slot->Release();
  EXPECT_FALSE(slot->valid());
  EXPECT_EQ(slot->RequestBuffer().size(), 0u);
  EXPECT_TRUE(slot->Response().empty());
  auto again = slot->Send(1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(calls(), 3);
}

TEST_F(HostGuest, ZeroCopySlotReadsAnEndAlignedResponseInPlace) {
  SetHandler([](const Message& m, MutableBytes out) {
    std::memcpy(out.end() - m.data.size(), m.data.data(), m.data.size());
    return Reply{-static_cast<int32_t>(m.data.size()), MsgType::NORMAL};
  });
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  std::memcpy(slot->RequestBuffer().data(), "abc", 3);
  auto r = slot->Send(3);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(slot->ResponseSize(), -3);
  EXPECT_EQ(Str(slot->Response()), "abc");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(slot->Response().end()) % 64, 0u);
}

TEST_F(HostGuest, SendFlatBufferSendsEndAlignedFlatBuffer) {
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  MutableBytes buf = slot->RequestBuffer();
  std::memset(buf.data(), '.', buf.size());
  std::memcpy(buf.end() - 6, "fbdata", 6);  // where a FlatBufferBuilder leaves a finished buffer
  auto r = slot->SendFlatBuffer(6);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  const Seen seen_now = seen();
  EXPECT_EQ(seen_now.type, MsgType::FLATBUFFER);
  EXPECT_TRUE(seen_now.end_aligned);
  EXPECT_EQ(seen_now.bytes, "fbdata");
  EXPECT_EQ(Str(slot->Response()), "fbdata");
}

TEST_F(HostGuest, ZeroCopySlotRefusesHostileSizesAndKeepsTheSlot) {
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  const int32_t cap = static_cast<int32_t>(slot->capacity());
  for (int32_t size : {INT32_MIN, INT32_MIN + 1, INT32_MAX, cap + 1, -(cap + 1)}) {
    SCOPED_TRACE(size);
    auto r = slot->Send(size);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
    EXPECT_TRUE(slot->valid()) << "nothing was published, so the slot is still held";
  }
  for (int32_t size : {-1, -cap, INT32_MIN}) {  // a size that cannot fit, as the Go guest says
    auto r = slot->SendFlatBuffer(size);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kTooLarge) << r.error().ToString();
    EXPECT_TRUE(slot->valid());
  }
  auto big = slot->SendFlatBuffer(cap + 1);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), ErrorCode::kTooLarge);
  auto reserved = slot->Send(1, MsgType::SYSTEM_ERROR);
  ASSERT_FALSE(reserved.ok());
  EXPECT_EQ(reserved.error().code(), ErrorCode::kInvalidArgs);
  EXPECT_EQ(calls(), 0);
  std::memcpy(slot->RequestBuffer().data(), "ok", 2);
  auto r = slot->Send(2);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Str(slot->Response()), "ok");
  // Full capacity, both directions.
  EXPECT_TRUE(slot->Send(cap).ok());
  EXPECT_TRUE(slot->Send(-cap).ok());
}

// A ZeroCopySlot is for one thread at a time. A second thread's Send while the first is waiting for its answer is
// this process's misuse, reported as kInvalidArgs (not as the peer breaking the protocol), and the first call
// and the slot are unharmed.
TEST_F(HostGuest, ZeroCopySlotUsedFromTwoThreadsAtOnceIsInvalid) {
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool entered = false, open = false;
  SetHandler([&](const Message& m, MutableBytes out) {
    std::unique_lock<std::mutex> lock(gate_mu);
    entered = true;
    gate_cv.notify_all();
    gate_cv.wait(lock, [&] { return open; });
    return Echo(m, out);
  });
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  std::memcpy(slot->RequestBuffer().data(), "first", 5);
  shm::Result<void> first = shm::Error(ErrorCode::kClosed, "not run");
  std::thread t([&] { first = slot->Send(5, MsgType::NORMAL, 60s); });
  bool reached = false;
  {
    std::unique_lock<std::mutex> lock(gate_mu);
    reached = gate_cv.wait_for(lock, 60s, [&] { return entered; });
  }
  auto second = slot->Send(5, MsgType::NORMAL, 60s);
  auto flat = slot->SendFlatBuffer(5, 60s);
  {
    std::lock_guard<std::mutex> lock(gate_mu);
    open = true;
  }
  gate_cv.notify_all();
  t.join();
  ASSERT_TRUE(reached) << "the first Send never reached the guest";
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), ErrorCode::kInvalidArgs) << second.error().ToString();
  ASSERT_FALSE(flat.ok());
  EXPECT_EQ(flat.error().code(), ErrorCode::kInvalidArgs) << flat.error().ToString();
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_EQ(Str(slot->Response()), "first");
  SetHandler(Echo);
  std::memcpy(slot->RequestBuffer().data(), "again", 5);
  auto again = slot->Send(5);
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_EQ(Str(slot->Response()), "again");
  EXPECT_EQ(calls(), 2);
}

// ---- Guest calls --------------------------------------------------------------------------------------------------

TEST_F(HostGuest, GuestCallServedByTheHostWorker) {
  auto s = host_.Start([](const Message& m, MutableBytes out) {
    const std::string a = "host saw " + Str(m.data);
    std::memcpy(out.data(), a.data(), a.size());
    return Reply{static_cast<int32_t>(a.size()), MsgType::GUEST_CALL};
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  std::vector<uint8_t> response;
  auto r = guest_.SendGuestCall("question", MsgType::GUEST_CALL, response);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(*r, MsgType::GUEST_CALL);
  EXPECT_EQ(Str(response), "host saw question");
  auto bad = guest_.SendGuestCall("x", MsgType::SYSTEM_ERROR, response);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgs);
  host_.Stop();
}

TEST_F(HostGuest, GuestCallServedFromTheHostsOwnLoop) {
  std::vector<uint8_t> response;
  shm::Result<MsgType> result = shm::Error(ErrorCode::kClosed, "not run");
  std::thread caller([&] { result = guest_.SendGuestCall("loop", MsgType::NORMAL, response, {10s}); });
  auto pending = host_.WaitForGuestCalls(10s);
  ASSERT_TRUE(pending.ok()) << pending.error().ToString();
  ASSERT_TRUE(*pending);
  auto served = host_.ProcessGuestCalls(Echo);
  caller.join();
  ASSERT_TRUE(served.ok()) << served.error().ToString();
  EXPECT_EQ(*served, 1u);
  ASSERT_TRUE(result.ok()) << result.error().ToString();
  EXPECT_EQ(Str(response), "loop");
}

// Without guest slots there is nothing to serve: Start refuses at once instead of running a worker whose every
// wait fails (a loop that would spin a core).
TEST(GuestCallsWithoutGuestSlots, StartAndWaitForGuestCallsAreRefused) {
  const std::string name = shm_unit::UniqueName("no-guest-slots");
  auto c = HostConfigFor(name);
  c.guest_slots = 0;
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(c).ok());
  auto started = host.Start(Echo);
  ASSERT_FALSE(started.ok()) << "a worker started on a segment without guest slots";
  EXPECT_EQ(started.error().code(), ErrorCode::kInvalidArgs) << started.error().ToString();
  auto pending = host.WaitForGuestCalls(10s);
  ASSERT_FALSE(pending.ok());
  EXPECT_EQ(pending.error().code(), ErrorCode::kInvalidArgs) << pending.error().ToString();
  auto served = host.ProcessGuestCalls(Echo);
  ASSERT_TRUE(served.ok()) << served.error().ToString();
  EXPECT_EQ(*served, 0u);
}

TEST_F(HostGuest, SendShutdownEndsTheGuestsWorkers) {
  ASSERT_TRUE(host_.SendShutdown().ok());
  auto w = guest_.Wait(10s);
  EXPECT_TRUE(w.ok()) << w.error().ToString();
  std::vector<uint8_t> response;
  auto r = host_.Send("x", MsgType::NORMAL, response);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kShuttingDown);
}

// After this side's own Close, every guest call says kClosed; a call in flight when Close runs ends with it too.
// kShuttingDown is only ever the host's shutdown.
TEST_F(HostGuest, GuestCallsAfterCloseAreClosed) {
  auto held = guest_.AcquireGuestSlot(10s);
  ASSERT_TRUE(held.ok()) << held.error().ToString();
  held->Release();  // the one guest slot is free for the call below
  std::vector<uint8_t> response;
  shm::Result<MsgType> in_flight = shm::Error(ErrorCode::kInvalidArgs, "not run");
  std::thread caller([&] { in_flight = guest_.SendGuestCall("pending", MsgType::GUEST_CALL, response, {60s}); });
  auto pending = host_.WaitForGuestCalls(60s);  // nobody serves it: it stays pending
  guest_.Close();
  caller.join();
  ASSERT_TRUE(pending.ok() && *pending) << "the guest call never arrived";
  ASSERT_FALSE(in_flight.ok());
  EXPECT_EQ(in_flight.error().code(), ErrorCode::kClosed) << in_flight.error().ToString();
  auto after = guest_.SendGuestCall("after", MsgType::GUEST_CALL, response, {1s});
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code(), ErrorCode::kClosed) << after.error().ToString();
  auto slot = guest_.AcquireGuestSlot(1s);
  ASSERT_FALSE(slot.ok());
  EXPECT_EQ(slot.error().code(), ErrorCode::kClosed) << slot.error().ToString();
}

TEST_F(HostGuest, SecondGuestIsRefused) {
  shm::DirectGuest second;
  shm::GuestConfig config = GuestConfigFor(name_);
  // Connect retries while another guest holds the segment, until this deadline: long enough for a loaded
  // host to answer at least once.
  config.connect_timeout = 2s;
  auto r = second.Connect(config);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kGuestAlreadyConnected) << r.error().ToString();
  EXPECT_NE(r.error().message().find(std::to_string(::getpid())), std::string::npos) << r.error().message();
}

// ---- What a handler may call on the object that runs it -----------------------------------------------------

// Collects log lines (from library threads) for a test to look at.
class LogLines {
 public:
  LogLines() {
    shm::SetLogSink([this](shm::LogLevel, std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.emplace_back(line);
    });
  }
  ~LogLines() { shm::SetLogSink(nullptr); }
  bool Any(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& l : lines_) {
      if (l.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// The host's guest-call handler shuts its host down. The worker cannot wait for itself: nothing throws, and the
// destructor, run by another thread once the handler is done, joins the worker.
TEST(HandlerCalls, HostHandlerMayShutDownItsHost) {
  LogLines log;
  const std::string name = shm_unit::UniqueName("handler-shutdown");
  auto host = std::make_unique<shm::DirectHost>();
  ASSERT_TRUE(host->Init(HostConfigFor(name)).ok());
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect(GuestConfigFor(name)).ok());
  ASSERT_TRUE(guest.Start(Echo).ok());
  std::atomic<bool> returned{false};
  shm::DirectHost* h = host.get();
  ASSERT_TRUE(host->Start([h, &returned](const Message& m, MutableBytes out) {
                    h->Shutdown();
                    h->Stop();  // idempotent, and also safe here
                    returned.store(true);
                    return Echo(m, out);
                  })
                  .ok());
  std::vector<uint8_t> response;
  auto r = guest.SendGuestCall("bye", MsgType::GUEST_CALL, response, {60s});
  // The host released its name and lock inside the handler: the answer may arrive, or the guest sees it gone.
  EXPECT_TRUE(r.ok() || r.error().code() == ErrorCode::kHostGone) << r.error().ToString();
  ASSERT_TRUE(shm_unit::WaitUntil([&] { return returned.load(); }, 60s));
  EXPECT_FALSE(shm_unit::NameHeld(name));
  auto after = host->Send("x", MsgType::NORMAL, response, {1s});
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code(), ErrorCode::kClosed) << after.error().ToString();
  host.reset();
  EXPECT_FALSE(log.Any("handler threw")) << "Shutdown threw inside the handler";
  guest.Close();
}

// The handler stops its own worker; a Start from another thread joins that worker and serves again.
TEST(HandlerCalls, HostHandlerMayStopItsWorker) {
  LogLines log;
  const std::string name = shm_unit::UniqueName("handler-stop");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect(GuestConfigFor(name)).ok());
  ASSERT_TRUE(host.Start([&host](const Message& m, MutableBytes out) {
                    host.Stop();
                    auto again = host.Start(Echo);  // refused: the worker is this very thread
                    const std::string text = again.ok() ? "restarted" : shm::ToString(again.error().code());
                    std::memcpy(out.data(), text.data(), text.size());
                    (void)m;
                    return Reply{static_cast<int32_t>(text.size()), MsgType::GUEST_CALL};
                  })
                  .ok());
  std::vector<uint8_t> response;
  auto r = guest.SendGuestCall("stop", MsgType::GUEST_CALL, response, {60s});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Str(response), "InvalidArgs");
  EXPECT_FALSE(log.Any("handler threw")) << "Stop threw inside the handler";
  auto started = host.Start(Echo);
  ASSERT_TRUE(started.ok()) << started.error().ToString();
  r = guest.SendGuestCall("served again", MsgType::GUEST_CALL, response, {60s});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Str(response), "served again");
  host.Stop();
  guest.Close();
}

// A guest handler closes its guest. Close waits for the other workers but not for the calling one; that
// handler's answer still reaches the host, the guest lock goes once it has, and the destructor joins the worker.
TEST(HandlerCalls, GuestHandlerMayCloseItsGuest) {
  LogLines log;
  const std::string name = shm_unit::UniqueName("handler-close");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  auto guest = std::make_unique<shm::DirectGuest>();
  ASSERT_TRUE(guest->Connect(GuestConfigFor(name)).ok());
  std::atomic<bool> returned{false};
  shm::DirectGuest* g = guest.get();
  ASSERT_TRUE(guest
                  ->Start([g, &returned](const Message& m, MutableBytes out) {
                    g->Close();
                    g->Close();  // idempotent, here too
                    returned.store(true);
                    return Echo(m, out);
                  })
                  .ok());
  std::vector<uint8_t> response;
  auto r = host.Send("bye", MsgType::NORMAL, response, {60s});
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(Str(response), "bye");
  auto w = guest->Wait(60s);
  EXPECT_TRUE(w.ok()) << w.error().ToString();
  EXPECT_TRUE(returned.load());
  EXPECT_FALSE(guest->connected());
  EXPECT_TRUE(shm_unit::WaitUntil([&] { return !host.GuestAttached(); }, 60s)) << "the guest lock stayed held";
  guest.reset();
  EXPECT_FALSE(log.Any("handler threw")) << "Close threw inside the handler";
  // The slot the closing handler answered on is free again: a new guest serves it.
  shm::DirectGuest next;
  ASSERT_TRUE(next.Connect(GuestConfigFor(name)).ok());
  ASSERT_TRUE(next.Start(Echo).ok());
  for (uint32_t slot : {0u, 1u}) {
    auto again = host.SendToSlot(slot, "next", MsgType::NORMAL, response, {60s});
    ASSERT_TRUE(again.ok()) << again.error().ToString();
    EXPECT_EQ(Str(response), "next");
  }
  next.Close();
}

// Every worker's handler closes the guest at once: each Close leaves the others to finish, none waits for
// itself, and every host call still gets its answer.
TEST(HandlerCalls, GuestHandlersMayAllCloseAtOnce) {
  const std::string name = shm_unit::UniqueName("handlers-close");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect(GuestConfigFor(name)).ok());
  std::mutex mu;
  std::condition_variable cv;
  int inside = 0;
  ASSERT_TRUE(guest
                  .Start([&](const Message& m, MutableBytes out) {
                    {
                      std::unique_lock<std::mutex> lock(mu);
                      ++inside;
                      cv.notify_all();
                      cv.wait_for(lock, 60s, [&] { return inside == 2; });
                    }
                    guest.Close();
                    return Echo(m, out);
                  })
                  .ok());
  shm::Result<MsgType> results[2] = {shm::Error(ErrorCode::kInvalidArgs, "not run"),
                                     shm::Error(ErrorCode::kInvalidArgs, "not run")};
  std::vector<uint8_t> responses[2];
  std::thread callers[2];
  for (uint32_t i = 0; i < 2; ++i) {
    callers[i] = std::thread(
        [&, i] { results[i] = host.SendToSlot(i, "slot " + std::to_string(i), MsgType::NORMAL, responses[i], {60s}); });
  }
  for (auto& t : callers) t.join();
  for (uint32_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i].error().ToString();
    EXPECT_EQ(Str(responses[i]), "slot " + std::to_string(i));
  }
  auto w = guest.Wait(60s);
  EXPECT_TRUE(w.ok()) << w.error().ToString();
  EXPECT_TRUE(shm_unit::WaitUntil([&] { return !host.GuestAttached(); }, 60s));
}

// ---- Lifetimes and names -----------------------------------------------------------------------------------------

TEST(ZeroCopyLifetime, SlotOutlivingItsHostIsHarmless) {
  const std::string name = shm_unit::UniqueName("outlive");
  auto host = std::make_unique<shm::DirectHost>();
  ASSERT_TRUE(host->Init(HostConfigFor(name)).ok());
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect(GuestConfigFor(name)).ok());
  ASSERT_TRUE(guest.Start(Echo).ok());
  auto slot = host->GetZeroCopySlot();
  ASSERT_TRUE(slot.ok()) << slot.error().ToString();
  std::memcpy(slot->RequestBuffer().data(), "before", 6);
  ASSERT_TRUE(slot->Send(6).ok());
  ASSERT_EQ(Str(slot->Response()), "before");

  host.reset();  // unmaps the segment the slot pointed into
  EXPECT_FALSE(shm_unit::NameHeld(name));
  EXPECT_FALSE(slot->valid());
  EXPECT_EQ(slot->RequestBuffer().data(), nullptr);
  EXPECT_EQ(slot->RequestBuffer().size(), 0u);
  EXPECT_TRUE(slot->Response().empty()) << "no view into the unmapped response buffer";
  auto r = slot->Send(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kClosed) << r.error().ToString();
  auto f = slot->SendFlatBuffer(6);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.error().code(), ErrorCode::kClosed);
  slot->Release();
  slot->Release();
  EXPECT_TRUE(guest.Wait(10s).ok());
  guest.Close();
}

TEST(ZeroCopyLifetime, SlotOfAnUninitialisedOrShutDownHost) {
  shm::DirectHost host;
  auto none = host.GetZeroCopySlot(1ms);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), ErrorCode::kClosed);
  const std::string name = shm_unit::UniqueName("zc-shut");
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  auto held = host.GetZeroCopySlot(1s);
  ASSERT_TRUE(held.ok());
  host.Shutdown();
  auto after = host.GetZeroCopySlot(1ms);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code(), ErrorCode::kClosed);
  auto r = held->Send(0, MsgType::NORMAL, 1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kClosed) << r.error().ToString();
}

TEST(HostName, SecondHostOnTheSameNameIsRefusedWithTheHoldersPid) {
  const std::string name = shm_unit::UniqueName("twice");
  shm::DirectHost first;
  ASSERT_TRUE(first.Init(HostConfigFor(name)).ok());
  shm::DirectHost second;
  auto r = second.Init(HostConfigFor(name));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kHostAlreadyRunning) << r.error().ToString();
  EXPECT_NE(r.error().message().find("pid " + std::to_string(::getpid())), std::string::npos) << r.error().message();
  EXPECT_FALSE(second.initialized());
  EXPECT_TRUE(shm_unit::NameHeld(name)) << "the refused host must not remove the holder's segment";

  // The first host still works: a guest attaches to it, not to anything the second one made.
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect(GuestConfigFor(name)).ok());
  guest.Close();

  first.Shutdown();
  EXPECT_FALSE(shm_unit::NameHeld(name));
  auto again = second.Init(HostConfigFor(name));
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_TRUE(shm_unit::NameHeld(name));
  second.Shutdown();
  EXPECT_FALSE(shm_unit::NameHeld(name));
}

TEST(HostName, DestructorRemovesTheName) {
  const std::string name = shm_unit::UniqueName("dtor");
  {
    shm::DirectHost host;
    ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
    EXPECT_TRUE(shm_unit::NameHeld(name));
  }
  EXPECT_FALSE(shm_unit::NameHeld(name));
  shm::DirectHost next;
  EXPECT_TRUE(next.Init(HostConfigFor(name)).ok());
}

TEST(HostName, ShutdownIsIdempotentAndEndsCalls) {
  const std::string name = shm_unit::UniqueName("idem");
  shm::DirectHost host;
  std::vector<uint8_t> response;
  auto before = host.Send("x", MsgType::NORMAL, response);
  ASSERT_FALSE(before.ok());
  EXPECT_EQ(before.error().code(), ErrorCode::kClosed);
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  auto twice = host.Init(HostConfigFor(name));
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.error().code(), ErrorCode::kInvalidArgs) << twice.error().ToString();
  host.Shutdown();
  host.Shutdown();
  EXPECT_FALSE(shm_unit::NameHeld(name));
  auto after = host.Send("x", MsgType::NORMAL, response);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code(), ErrorCode::kClosed);
  // A host that was shut down may take the name again.
  auto again = host.Init(HostConfigFor(name));
  ASSERT_TRUE(again.ok()) << again.error().ToString();
  EXPECT_TRUE(shm_unit::NameHeld(name));
}

// SendShutdown is the host telling its guest to stop: the host's further calls say kShuttingDown. Its own
// Shutdown closes it: from then on every call says kClosed, SendShutdown included.
TEST(HostName, SendShutdownThenShutdownEachHaveTheirOwnCode) {
  const std::string name = shm_unit::UniqueName("codes");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostConfigFor(name)).ok());
  std::vector<uint8_t> response;
  auto expect = [](ErrorCode code, auto&& result) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().code(), code) << result.error().ToString();
  };
  ASSERT_TRUE(host.SendShutdown().ok());
  ASSERT_TRUE(host.SendShutdown().ok()) << "idempotent until Shutdown";
  expect(ErrorCode::kShuttingDown, host.Send("x", MsgType::NORMAL, response, {1s}));
  expect(ErrorCode::kShuttingDown, host.SendToSlot(0, "x", MsgType::NORMAL, response, {1s}));
  expect(ErrorCode::kShuttingDown, host.GetZeroCopySlot(1s));
  expect(ErrorCode::kShuttingDown, host.WaitForGuestCalls(1s));
  host.Shutdown();
  expect(ErrorCode::kClosed, host.SendShutdown());
  expect(ErrorCode::kClosed, host.Send("x", MsgType::NORMAL, response, {1s}));
  expect(ErrorCode::kClosed, host.SendToSlot(0, "x", MsgType::NORMAL, response, {1s}));
  expect(ErrorCode::kClosed, host.GetZeroCopySlot(1s));
  expect(ErrorCode::kClosed, host.WaitForGuestCalls(1s));
  expect(ErrorCode::kClosed, host.ProcessGuestCalls(Echo));
  expect(ErrorCode::kClosed, host.Start(Echo));
}

// The memory a host creates is what SPECIFICATION.md says: sealed against resizing (even for a descriptor that
// may write), and a header that validates to the configured geometry, as an observer sees it.
TEST(HostName, SegmentIsSealedAndItsHeaderValidates) {
  const std::string name = shm_unit::UniqueName("sealed");
  auto c = HostConfigFor(name);
  c.payload_size = 100;
  c.guest_payload_size = 100;
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(c).ok());
  auto seg = shm::detail::Observe(name, shm::platform::DeadlineAfter(10000000000));
  ASSERT_TRUE(seg.ok()) << seg.error().ToString();
  EXPECT_FALSE(seg->writable());
  const int seals = ::fcntl(seg->file().fd(), F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_EQ(seals & F_SEAL_WRITE, 0);
  EXPECT_EQ(::fcntl(seg->file().fd(), F_GETFL) & O_ACCMODE, O_RDONLY) << "an observer gets a read-only descriptor";
  const auto& g = seg->geometry();
  EXPECT_EQ(g.host_slots, 2u);
  EXPECT_EQ(g.guest_slots, 1u);
  EXPECT_EQ(g.host_payload, 128u);
  EXPECT_EQ(g.guest_payload, 128u);
  // The memfd holds the segment, then the counters region (SPECIFICATION.md §5.4).
  EXPECT_EQ(seg->size(), shm::wire::SegmentSize(g) + shm::wire::CountersSize(g));
  EXPECT_TRUE(seg->has_counters());
  EXPECT_EQ(seg->header().host_pid.load(), static_cast<uint32_t>(::getpid()));
  // The host's own read-write descriptor cannot resize it either.
  const int rw = shm_test::OpenSegmentOf(::getpid(), name, O_RDWR);
  ASSERT_GE(rw, 0);
  for (off_t size : {off_t{0}, static_cast<off_t>(seg->size() / 2), static_cast<off_t>(seg->size() * 2)}) {
    errno = 0;
    EXPECT_EQ(::ftruncate(rw, size), -1) << "resized to " << size;
    EXPECT_EQ(errno, EPERM) << "resize to " << size;
  }
  ::close(rw);
}

// Who may attach follows the mode's classes (SPECIFICATION.md §4.1): a guest needs read and write, an observer
// read; root counts as the owner.
TEST(Admission, FollowsTheModesClasses) {
  shm::detail::AdmissionPolicy p;
  p.uid = 1000;
  p.gid = 2000;
  shm::platform::PeerCredentials owner{1, 1000, 1000, {}}, root{1, 0, 0, {}}, primary{1, 1001, 2000, {}},
      supplementary{1, 1002, 3000, {5, 2000}}, other{1, 1003, 3000, {5}};
  const auto guest = shm::wire::AttachRole::kGuest, observer = shm::wire::AttachRole::kObserver;
  p.mode = 0600;
  EXPECT_TRUE(p.Admits(owner, guest));
  EXPECT_TRUE(p.Admits(root, guest));
  EXPECT_FALSE(p.Admits(primary, observer));
  EXPECT_FALSE(p.MayAsk(other));
  p.mode = 0660;
  EXPECT_TRUE(p.Admits(primary, guest));
  EXPECT_TRUE(p.Admits(supplementary, guest));
  EXPECT_FALSE(p.Admits(other, observer));
  p.mode = 0640;
  EXPECT_TRUE(p.Admits(primary, observer));
  EXPECT_FALSE(p.Admits(primary, guest));
  p.mode = 0604;
  EXPECT_TRUE(p.Admits(other, observer));
  EXPECT_FALSE(p.Admits(other, guest));
  EXPECT_FALSE(p.Admits(primary, observer)) << "a group member is judged by the group bits, not the other bits";
}

}  // namespace

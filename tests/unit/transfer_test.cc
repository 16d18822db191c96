// SPDX-License-Identifier: Apache-2.0
// The server side of large messages (detail/transfer.h, SPECIFICATION.md §8.5) against slots in ordinary memory:
// every hostile chunk of the Go guest's table (go/transfer_test.go) answered with the same WireError and the
// transfer dropped after it, complete transfers, CHUNK_NEXT, the limit on partial transfers across slots, the
// idle sweep, the receive_buffer hook and a failing answer Source. No segment, no peer: a TransferTable and
// slots whose buffers are separate heap blocks (so that a sanitizer build sees any access outside them).
#include "shm/detail/transfer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "shm/config.h"
#include "shm/detail/slot.h"
#include "shm/platform/platform.h"
#include "shm/transfer.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"

namespace {

using shm::Bytes;
using shm::MsgType;
using shm::MutableBytes;
using shm::Source;
using shm::TransferLimits;
using shm::detail::ChunkVerdict;
using shm::detail::ReadChunkHeader;
using shm::detail::SlotView;
using shm::detail::TransferTable;
using shm::wire::ChunkHeader;
using shm::wire::SlotHeader;
using shm::wire::WireError;

constexpr uint32_t C = 256;                      // slot capacity
constexpr uint64_t kLimit = uint64_t{64} << 10;  // max_message_size, as in the Go table
constexpr int32_t kAuto = INT32_MAX;             // "the size the chunking rule gives"

// Slots in ordinary memory: a header and the two buffers of each, every one its own heap block.
struct FakeSlots {
  struct One {
    std::unique_ptr<SlotHeader> header = std::make_unique<SlotHeader>();
    std::vector<uint8_t> request = std::vector<uint8_t>(C);
    std::vector<uint8_t> response = std::vector<uint8_t>(C);
  };
  explicit FakeSlots(uint32_t n) : slots(n) {}
  SlotView View(uint32_t i) {
    SlotView v;
    v.header = slots[i].header.get();
    v.request = slots[i].request.data();
    v.response = slots[i].response.data();
    v.capacity = C;
    v.index = i;
    return v;
  }
  std::vector<One> slots;
};

// Byte i of a test message: not periodic in C, so that a chunk in the wrong place shows.
std::vector<uint8_t> Pattern(size_t n, uint8_t seed = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 + i / 251 + seed);
  return v;
}

ChunkHeader Ck(uint64_t id, uint64_t total, uint64_t offset, uint32_t type = 0) {
  return ChunkHeader{id, total, offset, type, 0};
}

uint32_t AutoSize(const ChunkHeader& c) {
  return c.offset < c.total ? shm::detail::ChunkLength(c.total, c.offset, C) : C;
}

// Publish chunk `c` on slot `s` (its data from `message` at c.offset when that lies in it, else filler) and
// hand it to the table as the server would, with wire size `size`.
ChunkVerdict Chunk(TransferTable& t, const SlotView& s, const ChunkHeader& c, int32_t size = kAuto,
                   const std::vector<uint8_t>* message = nullptr) {
  if (size == kAuto) size = static_cast<int32_t>(AutoSize(c));
  std::memset(s.request, 0xEE, C);
  if (message != nullptr && c.offset < message->size()) {
    const size_t n = std::min<size_t>(C, message->size() - static_cast<size_t>(c.offset));
    std::memcpy(s.request, message->data() + c.offset, n);
  }
  std::memcpy(s.header->inline_data, &c, sizeof c);
  return t.OnChunk(s, size);
}

// A CHUNK_NEXT asking for `offset` of stream `id`, of wire size `size`.
ChunkVerdict Next(TransferTable& t, const SlotView& s, uint64_t id, uint64_t offset, int32_t size = 16) {
  const uint64_t ask[2] = {id, offset};
  std::memset(s.header->inline_data, 0, sizeof s.header->inline_data);
  std::memcpy(s.header->inline_data, ask, sizeof ask);
  return t.OnNext(s, size);
}

// Send `message` whole as chunks of stream `id`; every chunk but the last must be acknowledged.
ChunkVerdict SendWhole(TransferTable& t, const SlotView& s, uint64_t id, const std::vector<uint8_t>& message,
                       uint32_t type = 0) {
  for (uint64_t offset = 0;; offset += C) {
    ChunkVerdict v = Chunk(t, s, Ck(id, message.size(), offset, type), kAuto, &message);
    if (offset + C >= message.size()) return v;
    EXPECT_EQ(v.kind, ChunkVerdict::kAck) << "chunk at " << offset;
    if (v.kind != ChunkVerdict::kAck) return v;
  }
}

TransferLimits Limits(uint32_t max_transfers = 16) {
  TransferLimits l;
  l.max_message_size = kLimit;
  l.max_transfers = max_transfers;
  return l;
}

::testing::AssertionResult IsError(const ChunkVerdict& v, WireError want) {
  if (v.kind == ChunkVerdict::kError && v.error == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "verdict kind " << v.kind << " error " << static_cast<uint32_t>(v.error)
                                       << ", want error " << static_cast<uint32_t>(want);
}

void ExpectRunOf(const ChunkVerdict& v, const std::vector<uint8_t>& message, MsgType type) {
  ASSERT_EQ(v.kind, ChunkVerdict::kRun);
  EXPECT_EQ(v.type, type);
  ASSERT_EQ(v.message.size(), message.size());
  EXPECT_EQ(0, std::memcmp(v.message.data(), message.data(), message.size()));
}

// ---- Hostile chunks: the Go table, case by case -----------------------------------------------------------

struct Step {
  ChunkHeader ck;
  int32_t size;
};
struct HostileCase {
  const char* name;
  std::vector<Step> steps;
  WireError want;
};

std::vector<HostileCase> HostileCases() {
  const uint32_t hb = static_cast<uint32_t>(MsgType::HEARTBEAT_REQ);
  const uint32_t se = static_cast<uint32_t>(MsgType::SYSTEM_ERROR);
  return {
      {"zero stream id", {{Ck(0, 3 * C, 0), kAuto}}, WireError::kStreamInvalid},
      {"total that fits the slot", {{Ck(1, C, 0), kAuto}}, WireError::kStreamInvalid},
      {"total above 1<<40", {{Ck(1, (uint64_t{1} << 40) + 1, 0), kAuto}}, WireError::kStreamInvalid},
      {"total above the limit", {{Ck(1, kLimit + 1, 0), kAuto}}, WireError::kRequestTooLarge},
      {"reserved type", {{Ck(1, 3 * C, 0, 5), kAuto}}, WireError::kReservedType},
      {"heartbeat type", {{Ck(1, 3 * C, 0, hb), kAuto}}, WireError::kReservedType},
      {"system error type", {{Ck(1, 3 * C, 0, se), kAuto}}, WireError::kReservedType},
      {"short first chunk", {{Ck(1, 3 * C, 0), C - 1}}, WireError::kStreamInvalid},
      {"negative size", {{Ck(1, 3 * C, 0), -static_cast<int32_t>(C)}}, WireError::kStreamInvalid},
      {"size above capacity", {{Ck(1, 3 * C, 0), C + 1}}, WireError::kStreamInvalid},
      {"zero size", {{Ck(1, 3 * C, 0), 0}}, WireError::kStreamInvalid},
      {"INT32_MIN size", {{Ck(1, 3 * C, 0), INT32_MIN}}, WireError::kStreamInvalid},
      {"continuation without a start", {{Ck(1, 3 * C, C), kAuto}}, WireError::kStreamInvalid},
      {"offset past the end", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, 3 * C), kAuto}}, WireError::kStreamInvalid},
      {"offset wrapping",
       {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, ~uint64_t{0} - C / 2), kAuto}},
       WireError::kStreamInvalid},
      {"lying total", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 4 * C, C), kAuto}}, WireError::kStreamInvalid},
      {"type changes", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, C, 2500), kAuto}}, WireError::kStreamInvalid},
      {"duplicate",
       {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, C), kAuto}, {Ck(1, 3 * C, C), kAuto}},
       WireError::kStreamInvalid},
      {"duplicate first chunk", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, 0), kAuto}}, WireError::kStreamInvalid},
      {"overlapping", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, C / 2), kAuto}}, WireError::kStreamInvalid},
      {"out of order", {{Ck(1, 3 * C, 0), kAuto}, {Ck(1, 3 * C, 2 * C), kAuto}}, WireError::kStreamInvalid},
      {"wrong stream id", {{Ck(1, 3 * C, 0), kAuto}, {Ck(2, 3 * C, C), kAuto}}, WireError::kStreamInvalid},
      {"wrong size of the last",
       {{Ck(1, 3 * C - 5, 0), kAuto}, {Ck(1, 3 * C - 5, C), kAuto}, {Ck(1, 3 * C - 5, 2 * C), C}},
       WireError::kStreamInvalid},
  };
}

TEST(Transfer, HostileChunksGiveTheGoTablesAnswersAndDropTheTransfer) {
  for (const HostileCase& k : HostileCases()) {
    SCOPED_TRACE(k.name);
    FakeSlots slots(1);
    TransferTable t;
    t.Init(1, Limits());
    const SlotView s = slots.View(0);
    ChunkVerdict v;
    for (size_t i = 0; i < k.steps.size(); ++i) {
      v = Chunk(t, s, k.steps[i].ck, k.steps[i].size);
      if (i + 1 < k.steps.size()) {
        ASSERT_EQ(v.kind, ChunkVerdict::kAck) << "step " << i;
        EXPECT_EQ(t.partial_requests(), 1u);
      }
    }
    EXPECT_TRUE(IsError(v, k.want));
    EXPECT_EQ(t.partial_requests(), 0u);
    EXPECT_EQ(t.live_slots(), 0u);
    // The transfer is gone: its next chunk is refused too.
    const uint64_t id = k.steps.size() > 1 ? k.steps[1].ck.stream_id : k.steps[0].ck.stream_id;
    EXPECT_TRUE(IsError(Chunk(t, s, Ck(id, 3 * C, C)), WireError::kStreamInvalid));
    EXPECT_EQ(t.partial_requests(), 0u);
    // And the slot takes a whole transfer after it.
    const auto message = Pattern(3 * C + 7);
    ExpectRunOf(SendWhole(t, s, 77, message), message, MsgType::NORMAL);
    EXPECT_EQ(t.partial_requests(), 0u);
    EXPECT_EQ(t.live_slots(), 0u);
  }
}

TEST(Transfer, CompleteTransfersRunOnTheExactBytes) {
  for (const uint64_t n : {uint64_t{C} + 1, uint64_t{3} * C, uint64_t{3} * C - 5, uint64_t{2} * C}) {
    SCOPED_TRACE(n);
    FakeSlots slots(1);
    TransferTable t;
    t.Init(1, Limits());
    const SlotView s = slots.View(0);
    const auto message = Pattern(static_cast<size_t>(n), static_cast<uint8_t>(n));
    const uint32_t type = static_cast<uint32_t>(MsgType::APP_START) + 3;
    ChunkVerdict v = SendWhole(t, s, 9, message, type);
    ExpectRunOf(v, message, static_cast<MsgType>(type));
    // The library's memory, handed over with the message.
    ASSERT_NE(v.owned, nullptr);
    EXPECT_EQ(v.message.data(), v.owned.get());
    EXPECT_EQ(t.partial_requests(), 0u);
    EXPECT_EQ(t.live_slots(), 0u);
    // The transfer is over: a chunk of it now is refused, and the same stream id can start again.
    EXPECT_TRUE(IsError(Chunk(t, s, Ck(9, n, C)), WireError::kStreamInvalid));
    ExpectRunOf(SendWhole(t, s, 9, message, type), message, static_cast<MsgType>(type));
  }
}

TEST(Transfer, APlainRequestOrAChunkNextEndsARequestInProgress) {
  FakeSlots slots(1);
  TransferTable t;
  t.Init(1, Limits());
  const SlotView s = slots.View(0);
  ASSERT_EQ(Chunk(t, s, Ck(1, 3 * C, 0)).kind, ChunkVerdict::kAck);
  t.Drop(0);  // what Serve does for a plain request
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, 3 * C, C)), WireError::kStreamInvalid));
  ASSERT_EQ(Chunk(t, s, Ck(2, 3 * C, 0)).kind, ChunkVerdict::kAck);
  EXPECT_TRUE(IsError(Next(t, s, 2, C), WireError::kStreamInvalid));
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_TRUE(IsError(Chunk(t, s, Ck(2, 3 * C, C)), WireError::kStreamInvalid));
  EXPECT_EQ(t.live_slots(), 0u);
}

TEST(Transfer, TransfersOnTwoSlotsInterleave) {
  FakeSlots slots(2);
  TransferTable t;
  t.Init(2, Limits());
  const auto a = Pattern(3 * C - 5, 3), b = Pattern(2 * C + 1, 4);
  const SlotView s0 = slots.View(0), s1 = slots.View(1);
  ASSERT_EQ(Chunk(t, s0, Ck(1, a.size(), 0), kAuto, &a).kind, ChunkVerdict::kAck);
  ASSERT_EQ(Chunk(t, s1, Ck(1, b.size(), 0), kAuto, &b).kind, ChunkVerdict::kAck);  // same id, other slot
  EXPECT_EQ(t.partial_requests(), 2u);
  ASSERT_EQ(Chunk(t, s0, Ck(1, a.size(), C), kAuto, &a).kind, ChunkVerdict::kAck);
  ASSERT_EQ(Chunk(t, s1, Ck(1, b.size(), C), kAuto, &b).kind, ChunkVerdict::kAck);
  ExpectRunOf(Chunk(t, s1, Ck(1, b.size(), 2 * C), kAuto, &b), b, MsgType::NORMAL);
  EXPECT_EQ(t.partial_requests(), 1u);
  ExpectRunOf(Chunk(t, s0, Ck(1, a.size(), 2 * C), kAuto, &a), a, MsgType::NORMAL);
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_EQ(t.live_slots(), 0u);
}

// ---- Large answers: StartAnswer and CHUNK_NEXT -------------------------------------------------------------

// The chunk slot `s` answers: checks its fields against the answer `message` at `offset`; returns its stream.
uint64_t ExpectAnswerChunk(const SlotView& s, const std::vector<uint8_t>& message, uint64_t offset, MsgType type) {
  const SlotHeader& h = *s.header;
  const ChunkHeader c = ReadChunkHeader(h);
  const uint32_t length = shm::detail::ChunkLength(message.size(), offset, C);
  EXPECT_EQ(h.resp_type.load(), static_cast<uint32_t>(MsgType::CHUNK));
  EXPECT_EQ(h.resp_size.load(), length);
  EXPECT_EQ(h.resp_error.load(), 0u);
  EXPECT_NE(c.stream_id, 0u);
  EXPECT_EQ(c.total, message.size());
  EXPECT_EQ(c.offset, offset);
  EXPECT_EQ(c.msg_type, static_cast<uint32_t>(type));
  EXPECT_EQ(0, std::memcmp(s.response, message.data() + offset, length)) << "at " << offset;
  return c.stream_id;
}

// Start answering `message` on slot `s`; returns the stream id of its first chunk.
uint64_t StartAnswer(TransferTable& t, const SlotView& s, const std::vector<uint8_t>& message, MsgType type) {
  const ChunkVerdict v = t.StartAnswer(s, Source::Of(Bytes(message.data(), message.size())), type);
  EXPECT_EQ(v.kind, ChunkVerdict::kAnswered);
  return ExpectAnswerChunk(s, message, 0, type);
}

TEST(Transfer, ALargeAnswerGoesOutChunkByChunk) {
  for (const size_t n : {size_t{C} + 1, size_t{3} * C, size_t{3} * C - 5}) {
    SCOPED_TRACE(n);
    FakeSlots slots(1);
    TransferTable t;
    t.Init(1, Limits());
    const SlotView s = slots.View(0);
    const auto message = Pattern(n, 9);
    const MsgType type = MsgType::APP_START;
    const uint64_t id = StartAnswer(t, s, message, type);
    EXPECT_EQ(t.live_slots(), 1u);
    for (uint64_t offset = C; offset < n; offset += C) {
      ASSERT_EQ(Next(t, s, id, offset).kind, ChunkVerdict::kAnswered);
      EXPECT_EQ(ExpectAnswerChunk(s, message, offset, type), id);
    }
    // Past the end: the answer is complete and held no more.
    EXPECT_EQ(t.live_slots(), 0u);
    EXPECT_TRUE(IsError(Next(t, s, id, n), WireError::kStreamInvalid));
    EXPECT_EQ(t.partial_requests(), 0u);
  }
}

TEST(Transfer, AHostileChunkNextEndsTheAnswer) {
  const auto message = Pattern(3 * C + 1, 5);
  struct Case {
    const char* name;
    bool fetch_one_first;  // take the chunk at C before the hostile ask
    uint64_t id_delta, offset;
    int32_t size;
  };
  for (const Case& k : std::vector<Case>{{"wrong stream", false, 1, C, 16},
                                         {"wrong offset", false, 0, 2 * C, 16},
                                         {"offset 0 again", false, 0, 0, 16},
                                         {"repeated offset", true, 0, C, 16},
                                         {"size 15", false, 0, C, 15},
                                         {"size 17", false, 0, C, 17},
                                         {"size 0", false, 0, C, 0},
                                         {"negative size", false, 0, C, -16},
                                         {"INT32_MIN size", false, 0, C, INT32_MIN},
                                         {"past the end", false, 0, 3 * C + 1, 16},
                                         {"offset wrapping", false, 0, ~uint64_t{0}, 16}}) {
    SCOPED_TRACE(k.name);
    FakeSlots slots(1);
    TransferTable t;
    t.Init(1, Limits());
    const SlotView s = slots.View(0);
    const uint64_t id = StartAnswer(t, s, message, MsgType::NORMAL);
    uint64_t next = C;
    if (k.fetch_one_first) {
      ASSERT_EQ(Next(t, s, id, C).kind, ChunkVerdict::kAnswered);
      next = 2 * C;
    }
    EXPECT_TRUE(IsError(Next(t, s, id + k.id_delta, k.offset, k.size), WireError::kStreamInvalid));
    EXPECT_EQ(t.live_slots(), 0u);
    // Ended: the right ask is refused now.
    EXPECT_TRUE(IsError(Next(t, s, id, next), WireError::kStreamInvalid));
    EXPECT_EQ(t.partial_requests(), 0u);
  }
}

TEST(Transfer, ChunkNextWithoutAnAnswerIsStreamInvalid) {
  FakeSlots slots(1);
  TransferTable t;
  t.Init(1, Limits());
  EXPECT_TRUE(IsError(Next(t, slots.View(0), 1, C), WireError::kStreamInvalid));
  EXPECT_EQ(t.live_slots(), 0u);
}

TEST(Transfer, ANewRequestEndsAnAnswerTheCallerStoppedFetching) {
  const auto message = Pattern(3 * C, 6);
  FakeSlots slots(1);
  TransferTable t;
  t.Init(1, Limits());
  const SlotView s = slots.View(0);
  uint64_t id = StartAnswer(t, s, message, MsgType::NORMAL);
  t.Drop(0);
  EXPECT_TRUE(IsError(Next(t, s, id, C), WireError::kStreamInvalid));
  id = StartAnswer(t, s, message, MsgType::NORMAL);
  EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, C / 2, 0)), WireError::kStreamInvalid));  // any CHUNK, even a broken one
  EXPECT_TRUE(IsError(Next(t, s, id, C), WireError::kStreamInvalid));
  // A second answer on the slot replaces the first (its stream id is new).
  const uint64_t first = StartAnswer(t, s, message, MsgType::NORMAL);
  const uint64_t second = StartAnswer(t, s, message, MsgType::NORMAL);
  EXPECT_NE(first, second);
  EXPECT_TRUE(IsError(Next(t, s, first, C), WireError::kStreamInvalid));
  EXPECT_EQ(t.live_slots(), 0u);
  EXPECT_EQ(t.partial_requests(), 0u);
}

TEST(Transfer, AFailingOrThrowingSourceIsHandlerFailed) {
  const auto message = Pattern(3 * C, 7);
  const uint64_t fail_at_values[] = {0, C, 2 * C};
  for (const bool throws : {false, true}) {
    for (const uint64_t fail_at : fail_at_values) {
      SCOPED_TRACE(std::string(throws ? "throws" : "fails") + " at " + std::to_string(fail_at));
      FakeSlots slots(1);
      TransferTable t;
      t.Init(1, Limits());
      const SlotView s = slots.View(0);
      Source source{message.size(), [&](uint64_t offset, MutableBytes into) -> bool {
                      if (offset == fail_at) {
                        if (throws) throw std::runtime_error("source failed");
                        return false;
                      }
                      std::memcpy(into.data(), message.data() + offset, into.size());
                      return true;
                    }};
      ChunkVerdict v = t.StartAnswer(s, source, MsgType::NORMAL);
      uint64_t id = 0, offset = 0;
      while (v.kind == ChunkVerdict::kAnswered) {
        id = ReadChunkHeader(*s.header).stream_id;
        offset += C;
        v = Next(t, s, id, offset);
      }
      EXPECT_EQ(offset, fail_at);
      EXPECT_TRUE(IsError(v, WireError::kHandlerFailed));
      EXPECT_EQ(t.live_slots(), 0u);
      if (id != 0) {
        EXPECT_TRUE(IsError(Next(t, s, id, offset), WireError::kStreamInvalid));
      }
    }
  }
  // A Source without a fill function fails at once.
  FakeSlots slots(1);
  TransferTable t;
  t.Init(1, Limits());
  EXPECT_TRUE(
      IsError(t.StartAnswer(slots.View(0), Source{3 * C, nullptr}, MsgType::NORMAL), WireError::kHandlerFailed));
  EXPECT_EQ(t.live_slots(), 0u);
}

// ---- Limits ------------------------------------------------------------------------------------------------

TEST(Transfer, MaxTransfersCountsAcrossSlots) {
  FakeSlots slots(4);
  TransferTable t;
  t.Init(4, Limits(2));
  ASSERT_EQ(Chunk(t, slots.View(0), Ck(1, 3 * C, 0)).kind, ChunkVerdict::kAck);
  ASSERT_EQ(Chunk(t, slots.View(1), Ck(2, 3 * C, 0)).kind, ChunkVerdict::kAck);
  EXPECT_EQ(t.partial_requests(), 2u);
  EXPECT_TRUE(IsError(Chunk(t, slots.View(2), Ck(3, 3 * C, 0)), WireError::kTooManyTransfers));
  EXPECT_EQ(t.partial_requests(), 2u);
  EXPECT_TRUE(IsError(Chunk(t, slots.View(2), Ck(3, 3 * C, C)), WireError::kStreamInvalid));  // nothing held
  // A new first chunk on a slot that holds one replaces it: still two.
  ASSERT_EQ(Chunk(t, slots.View(1), Ck(4, 2 * C, 0)).kind, ChunkVerdict::kAck);
  EXPECT_EQ(t.partial_requests(), 2u);
  EXPECT_TRUE(IsError(Chunk(t, slots.View(3), Ck(5, 3 * C, 0)), WireError::kTooManyTransfers));
  // Completing one frees a place.
  ASSERT_EQ(Chunk(t, slots.View(1), Ck(4, 2 * C, C)).kind, ChunkVerdict::kRun);
  EXPECT_EQ(t.partial_requests(), 1u);
  ASSERT_EQ(Chunk(t, slots.View(2), Ck(6, 3 * C, 0)).kind, ChunkVerdict::kAck);
  EXPECT_TRUE(IsError(Chunk(t, slots.View(3), Ck(7, 3 * C, 0)), WireError::kTooManyTransfers));
  // So does a broken chunk, and a plain request.
  EXPECT_TRUE(IsError(Chunk(t, slots.View(0), Ck(1, 3 * C, 2 * C)), WireError::kStreamInvalid));
  EXPECT_EQ(t.partial_requests(), 1u);
  t.Drop(2);
  EXPECT_EQ(t.partial_requests(), 0u);
  // Answers do not count: four slots answering, two requests still start.
  const auto message = Pattern(2 * C);
  for (uint32_t i = 0; i < 4; ++i) StartAnswer(t, slots.View(i), message, MsgType::NORMAL);
  EXPECT_EQ(t.live_slots(), 4u);
  EXPECT_EQ(t.partial_requests(), 0u);
  t.Sweep(0, 4, true);
  EXPECT_EQ(t.live_slots(), 0u);
}

TEST(Transfer, RejectedFirstChunksLeaveNothingReserved) {
  FakeSlots slots(1);
  TransferTable t;
  t.Init(1, Limits(1));
  const SlotView s = slots.View(0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, kLimit + 1, 0)), WireError::kRequestTooLarge));
    EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, 3 * C, 0, 5)), WireError::kReservedType));
  }
  EXPECT_EQ(t.partial_requests(), 0u);
  const auto message = Pattern(static_cast<size_t>(kLimit));  // exactly the limit
  ExpectRunOf(SendWhole(t, s, 3, message), message, MsgType::NORMAL);
  EXPECT_EQ(t.partial_requests(), 0u);
}

// ---- The idle sweep ----------------------------------------------------------------------------------------

TEST(Transfer, TheSweepDropsIdleTransfersOnly) {
  FakeSlots slots(3);
  TransferTable t;
  TransferLimits l = Limits();
  l.idle_timeout = std::chrono::milliseconds(20);
  t.Init(3, l);
  const auto message = Pattern(3 * C);
  ASSERT_EQ(Chunk(t, slots.View(0), Ck(1, 3 * C, 0)).kind, ChunkVerdict::kAck);
  const uint64_t id = StartAnswer(t, slots.View(1), message, MsgType::NORMAL);
  const int64_t last = shm::platform::MonotonicNs();  // after both entries' last chunk
  EXPECT_EQ(t.live_slots(), 2u);
  // A sweep of other slots leaves them.
  t.Sweep(2, 1, false);
  t.Sweep(2, 1, true);
  EXPECT_EQ(t.live_slots(), 2u);
  EXPECT_EQ(t.partial_requests(), 1u);
  // Once the idle timeout has passed for certain, a sweep drops both.
  const int64_t idle = std::chrono::duration_cast<std::chrono::nanoseconds>(l.idle_timeout).count();
  while (shm::platform::MonotonicNs() - last <= idle) std::this_thread::yield();
  t.Sweep(0, 3, false);
  EXPECT_EQ(t.live_slots(), 0u);
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_TRUE(IsError(Chunk(t, slots.View(0), Ck(1, 3 * C, C)), WireError::kStreamInvalid));
  EXPECT_TRUE(IsError(Next(t, slots.View(1), id, C), WireError::kStreamInvalid));
}

TEST(Transfer, TheSweepKeepsFreshTransfersUnlessAll) {
  FakeSlots slots(2);
  TransferTable t;
  TransferLimits l = Limits();
  l.idle_timeout = std::chrono::hours(1);
  t.Init(2, l);
  const auto message = Pattern(3 * C);
  const SlotView s0 = slots.View(0), s1 = slots.View(1);
  ASSERT_EQ(Chunk(t, s0, Ck(1, 3 * C, 0), kAuto, &message).kind, ChunkVerdict::kAck);
  const uint64_t id = StartAnswer(t, s1, message, MsgType::NORMAL);
  t.Sweep(0, 2, false);
  EXPECT_EQ(t.partial_requests(), 1u);
  EXPECT_EQ(t.live_slots(), 2u);
  // Both go on after the sweep.
  ASSERT_EQ(Chunk(t, s0, Ck(1, 3 * C, C), kAuto, &message).kind, ChunkVerdict::kAck);
  ASSERT_EQ(Next(t, s1, id, C).kind, ChunkVerdict::kAnswered);
  // The caller side's session ended: all of them go.
  t.Sweep(0, 2, true);
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_EQ(t.live_slots(), 0u);
  EXPECT_TRUE(IsError(Chunk(t, s0, Ck(1, 3 * C, 2 * C), kAuto, &message), WireError::kStreamInvalid));
  EXPECT_TRUE(IsError(Next(t, s1, id, 2 * C), WireError::kStreamInvalid));
  // A sweep of an empty table, or past its end, does nothing.
  t.Sweep(0, 2, true);
  t.Sweep(1, 100, true);
  EXPECT_EQ(t.live_slots(), 0u);
}

// ---- The receive_buffer hook -------------------------------------------------------------------------------

TEST(Transfer, TheReceiveBufferHookGivesTheMemory) {
  FakeSlots slots(2);
  TransferTable t;
  TransferLimits l = Limits();
  std::vector<uint8_t> mine;
  int calls = 0;
  uint64_t asked = 0;
  MsgType asked_type = MsgType::NORMAL;
  uint32_t asked_slot = 99;
  l.receive_buffer = [&](uint64_t size, MsgType type, uint32_t slot) {
    ++calls;
    asked = size;
    asked_type = type;
    asked_slot = slot;
    mine.assign(static_cast<size_t>(size) + 3, 0);  // more than asked is fine
    return MutableBytes(mine.data(), mine.size());
  };
  t.Init(2, l);
  const auto message = Pattern(3 * C - 5);
  const uint32_t type = static_cast<uint32_t>(MsgType::APP_START) + 1;
  ChunkVerdict v = SendWhole(t, slots.View(1), 5, message, type);
  ExpectRunOf(v, message, static_cast<MsgType>(type));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(asked, message.size());
  EXPECT_EQ(asked_type, static_cast<MsgType>(type));
  EXPECT_EQ(asked_slot, 1u);
  EXPECT_EQ(v.message.data(), mine.data());
  EXPECT_EQ(v.owned, nullptr);
  EXPECT_EQ(t.partial_requests(), 0u);
}

TEST(Transfer, AShortOrEmptyReceiveBufferIsIgnored) {
  for (const bool empty : {false, true}) {
    SCOPED_TRACE(empty ? "empty" : "short");
    FakeSlots slots(1);
    TransferTable t;
    TransferLimits l = Limits();
    std::vector<uint8_t> mine;
    l.receive_buffer = [&](uint64_t size, MsgType, uint32_t) {
      if (empty) return MutableBytes();
      mine.assign(static_cast<size_t>(size) - 1, 0);
      return MutableBytes(mine.data(), mine.size());
    };
    t.Init(1, l);
    const auto message = Pattern(2 * C + 9);
    ChunkVerdict v = SendWhole(t, slots.View(0), 5, message);
    ExpectRunOf(v, message, MsgType::NORMAL);
    ASSERT_NE(v.owned, nullptr);
    EXPECT_EQ(v.message.data(), v.owned.get());
    EXPECT_EQ(t.partial_requests(), 0u);
  }
}

TEST(Transfer, AThrowingReceiveBufferIsHandlerFailed) {
  FakeSlots slots(1);
  TransferTable t;
  TransferLimits l = Limits(1);
  bool fail = true;
  l.receive_buffer = [&](uint64_t, MsgType, uint32_t) -> MutableBytes {
    if (fail) throw std::bad_alloc();
    return MutableBytes();
  };
  t.Init(1, l);
  const SlotView s = slots.View(0);
  EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, 3 * C, 0)), WireError::kHandlerFailed));
  EXPECT_EQ(t.partial_requests(), 0u);
  EXPECT_EQ(t.live_slots(), 0u);
  EXPECT_TRUE(IsError(Chunk(t, s, Ck(1, 3 * C, C)), WireError::kStreamInvalid));
  // Its place among max_transfers (1) was given back.
  fail = false;
  const auto message = Pattern(3 * C);
  ExpectRunOf(SendWhole(t, s, 1, message), message, MsgType::NORMAL);
  EXPECT_EQ(t.partial_requests(), 0u);
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the receiving sides of large messages (SPECIFICATION.md §8.5), without a peer.
//
// Each input is a script of operations. Server side: a detail::TransferTable on a fake segment of kSlots slots
// (each slot's header, request buffer and response buffer its own heap block of exactly its size, so that ASan
// sees any access outside them) takes hostile CHUNK and CHUNK_NEXT requests (arbitrary header fields, sizes
// including 0, INT32_MIN and above the capacity), well-formed chunks that carry a transfer on, plain requests,
// sweeps and large answers (StartAnswer) from Sources that may fail or throw at any chunk. Caller side: the
// pure checks ReceiveMessage applies to a large answer's chunks (CheckFirstAnswerChunk, ContinuesAnswer), fed
// hostile answers and assembling what they accept into a buffer of exactly the announced size, as
// ReceiveMessage does.
//
// A model of §8.5 runs beside the table: every verdict must be the one the specification prescribes (the
// answer and its WireError), a kRun message must be exactly the bytes its chunks carried in order, an answer
// chunk exactly the Source's bytes at its offset; partial_requests() must equal the transfers the model holds
// and never exceed max_transfers; the memory held for partial requests (the totals the receive_buffer hook
// was asked for, or the library allocated) never exceeds max_transfers × max_message_size.
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "shm/detail/transfer.h"
#include "shm/detail/transfer_call.h"
#include "shm/transfer.h"

namespace {

using shm::MsgType;
using shm::MutableBytes;
using shm::detail::ChunkLength;
using shm::detail::ChunkVerdict;
using shm::detail::SlotView;
using shm::detail::TransferTable;
using shm::wire::ChunkHeader;
using shm::wire::SlotHeader;
using shm::wire::WireError;

constexpr uint32_t kSlots = 3, C = 128, kMaxTransfers = 2;
constexpr uint64_t kLimit = 9 * C + 37;  // max_message_size
constexpr uint64_t kMaxSize = shm::wire::kMaxMessageSize;

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_transfer: %s\n", what);
  std::abort();
}
void Check(bool ok, const char* what) {
  if (!ok) Fail(what);
}

struct Input {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t U8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{U8()} << (8 * i);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{U8()} << (8 * i);
    return v;
  }
};

// The byte at `offset` of a message with `seed`: every message's content is known from its seed alone.
uint8_t ByteAt(uint8_t seed, uint64_t offset) {
  return static_cast<uint8_t>(offset * 131 + (offset >> 8) * 7 + seed * 29 + 1);
}

// ---- The model of §8.5 -------------------------------------------------------------------------------------

struct InModel {  // the partial request the slot holds
  bool active = false;
  uint64_t id = 0, total = 0;
  uint32_t type = 0;
  std::vector<uint8_t> bytes;  // what its accepted chunks carried, in order
  bool own_buffer = false;     // the hook gave the memory (else the library's)
};
struct OutModel {  // the answer the slot is sending
  bool active = false;
  uint64_t id = 0, total = 0, sent = 0;
  uint32_t type = 0;
  uint8_t seed = 0;
  uint64_t fail_at = UINT64_MAX;  // the offset whose fill fails
  bool throws = false;
};

enum HookMode : uint8_t { kHookEmpty, kHookExact, kHookShort, kHookLarger, kHookThrow, kHookModes };

struct Harness {
  struct Slot {
    std::unique_ptr<SlotHeader> header = std::make_unique<SlotHeader>();
    std::unique_ptr<uint8_t[]> request{new uint8_t[C]()};
    std::unique_ptr<uint8_t[]> response{new uint8_t[C]()};
    std::unique_ptr<uint8_t[]> own;  // the hook's memory for this slot's request
    size_t own_size = 0;
    InModel in;
    OutModel out;
  };
  Slot slots[kSlots];
  TransferTable table;
  HookMode hook = kHookEmpty;  // what the hook does on its next call
  int hook_calls = 0;
  uint64_t last_out_id = 0;
  uint64_t next_id = 1;  // of GoodChunk's messages

  Harness() {
    shm::TransferLimits l;
    l.max_message_size = kLimit;
    l.max_transfers = kMaxTransfers;
    l.idle_timeout = std::chrono::hours(1);  // only Sweep(..., all) drops anything within a run
    l.receive_buffer = [this](uint64_t size, MsgType, uint32_t slot) { return Hook(size, slot); };
    table.Init(kSlots, l);
  }

  SlotView View(uint32_t i) {
    SlotView v;
    v.header = slots[i].header.get();
    v.request = slots[i].request.get();
    v.response = slots[i].response.get();
    v.capacity = C;
    v.index = i;
    return v;
  }

  MutableBytes Hook(uint64_t size, uint32_t slot) {
    ++hook_calls;
    Check(slot < kSlots, "receive_buffer asked for a slot outside the segment");
    Check(size > C && size <= kLimit, "receive_buffer asked for a size outside (capacity, max_message_size]");
    Check(table.partial_requests() <= kMaxTransfers, "receive_buffer called beyond max_transfers");
    Slot& s = slots[slot];
    const size_t n = static_cast<size_t>(size);
    switch (hook) {
      case kHookEmpty: return MutableBytes();
      case kHookThrow: throw std::runtime_error("no memory");
      case kHookExact:
      case kHookShort:
      case kHookLarger: {
        const size_t give = hook == kHookShort ? n - 1 : hook == kHookLarger ? n + 5 : n;
        s.own.reset(new uint8_t[give]);  // not zeroed, as the library's
        s.own_size = give;
        return MutableBytes(s.own.get(), give);
      }
      default: Fail("hook mode");
    }
  }

  void ClearIn(uint32_t i) { slots[i].in = InModel{}; }
  void ClearOut(uint32_t i) { slots[i].out = OutModel{}; }

  void Invariants() {
    uint32_t partial = 0, live = 0;
    uint64_t held = 0;
    for (const Slot& s : slots) {
      partial += s.in.active ? 1 : 0;
      live += s.in.active || s.out.active ? 1 : 0;
      held += s.in.active ? s.in.total : 0;
    }
    Check(table.partial_requests() == partial, "partial_requests() differs from the transfers held");
    Check(table.partial_requests() <= kMaxTransfers, "more partial requests than max_transfers");
    Check(held <= uint64_t{kMaxTransfers} * kLimit, "partial requests hold more than max_transfers x limit");
    Check(table.live_slots() == live, "live_slots() differs from the slots holding a transfer");
  }

  // What §8.5 prescribes for CHUNK `c` of `size` on slot `i`, given the model (before the call).
  ChunkVerdict::Kind Expected(uint32_t i, const ChunkHeader& c, int32_t size, WireError* e) const {
    const InModel& m = slots[i].in;
    *e = WireError::kStreamInvalid;
    const bool well_formed = c.stream_id != 0 && c.total != 0 && c.total <= kMaxSize && c.offset < c.total &&
                             size >= 1 && static_cast<uint32_t>(size) == ChunkLength(c.total, c.offset, C);
    if (!well_formed) return ChunkVerdict::kError;
    if (c.offset == 0) {
      if ((m.active && m.id == c.stream_id) || c.total <= C) return ChunkVerdict::kError;
      if (c.total > kLimit) {
        *e = WireError::kRequestTooLarge;
        return ChunkVerdict::kError;
      }
      const auto t = static_cast<MsgType>(c.msg_type);
      if (!shm::IsUserRequestType(t) || t == MsgType::HEARTBEAT_REQ) {
        *e = WireError::kReservedType;
        return ChunkVerdict::kError;
      }
      const uint32_t others = table.partial_requests() - (m.active ? 1 : 0);
      if (others >= kMaxTransfers) {
        *e = WireError::kTooManyTransfers;
        return ChunkVerdict::kError;
      }
      if (hook == kHookThrow) {
        *e = WireError::kHandlerFailed;
        return ChunkVerdict::kError;
      }
      return ChunkVerdict::kAck;  // total > C: never the last chunk
    }
    if (!m.active || c.stream_id != m.id || c.total != m.total || c.msg_type != m.type || c.offset != m.bytes.size()) {
      return ChunkVerdict::kError;
    }
    return c.offset + static_cast<uint64_t>(size) == c.total ? ChunkVerdict::kRun : ChunkVerdict::kAck;
  }

  // Publish chunk `c` (data from `seed`) on slot `i` with wire size `size` and take it.
  void Chunk(uint32_t i, const ChunkHeader& c, int32_t size, uint8_t seed, HookMode mode) {
    Slot& s = slots[i];
    for (uint32_t k = 0; k < C; ++k) s.request[k] = ByteAt(seed, c.offset + k);
    std::memcpy(s.header->inline_data, &c, sizeof c);
    hook = mode;
    WireError want_error;
    const ChunkVerdict::Kind want = Expected(i, c, size, &want_error);
    const int calls_before = hook_calls;
    ChunkVerdict v = table.OnChunk(View(i), size);
    ClearOut(i);  // any CHUNK ends the slot's answer
    if (v.kind != want) Fail("OnChunk's verdict is not the one §8.5 prescribes");
    if (want == ChunkVerdict::kError) {
      if (v.error != want_error) Fail("OnChunk answered another WireError than §8.5 prescribes");
      const int want_calls = want_error == WireError::kHandlerFailed ? 1 : 0;
      Check(hook_calls == calls_before + want_calls, "receive_buffer called for a refused first chunk");
      ClearIn(i);
      return;
    }
    // Accepted: the chunk is in order, within the buffers, and the model takes its bytes.
    const uint32_t n = static_cast<uint32_t>(size);
    if (c.offset == 0) {
      Check(hook_calls == calls_before + 1, "receive_buffer not called once for a first chunk");
      s.in = InModel{};
      s.in.active = true;
      s.in.id = c.stream_id;
      s.in.total = c.total;
      s.in.type = c.msg_type;
      s.in.own_buffer = mode == kHookExact || mode == kHookLarger;
    } else {
      Check(hook_calls == calls_before, "receive_buffer called for a later chunk");
    }
    s.in.bytes.insert(s.in.bytes.end(), s.request.get(), s.request.get() + n);
    if (v.kind == ChunkVerdict::kAck) {
      Check(v.message.size() == 0 && v.owned == nullptr, "an acknowledged chunk carries a message");
      return;
    }
    // kRun: exactly the bytes the chunks carried, in order, and the type of the first.
    Check(v.message.size() == s.in.total && s.in.bytes.size() == s.in.total, "kRun of the wrong size");
    Check(std::memcmp(v.message.data(), s.in.bytes.data(), s.in.bytes.size()) == 0, "kRun of other bytes");
    Check(static_cast<uint32_t>(v.type) == s.in.type, "kRun of another type");
    if (s.in.own_buffer) {
      Check(v.message.data() == s.own.get() && v.owned == nullptr, "kRun not in the hook's memory");
    } else {
      Check(v.owned != nullptr && v.message.data() == v.owned.get(), "kRun not in the library's memory");
    }
    ClearIn(i);
  }

  // The next chunk of slot i's request as a well-behaved caller sends it; a new message when there is none.
  void GoodChunk(uint32_t i, Input& in) {
    const uint8_t seed = in.U8();
    const HookMode mode = static_cast<HookMode>(in.U8() % kHookModes);
    InModel& m = slots[i].in;
    ChunkHeader c{};
    if (m.active) {
      c = ChunkHeader{m.id, m.total, m.bytes.size(), m.type, 0};
    } else {
      const uint32_t spread = in.U8() | uint32_t{in.U8()} << 8;
      const uint32_t type = in.U8() & 1 ? static_cast<uint32_t>(MsgType::APP_START) : 0;
      c = ChunkHeader{next_id++, C + 1 + spread % (kLimit + 16 - C), 0, type, 0};
    }
    Chunk(i, c, static_cast<int32_t>(ChunkLength(c.total, c.offset, C)), seed, mode);
  }

  // A CHUNK_NEXT of wire size `size` asking for `offset` of stream `id` on slot i.
  void Next(uint32_t i, uint64_t id, uint64_t offset, int32_t size) {
    Slot& s = slots[i];
    const uint64_t ask[2] = {id, offset};
    std::memcpy(s.header->inline_data, ask, sizeof ask);
    s.header->resp_type.store(0);
    ClearIn(i);  // any CHUNK_NEXT ends the slot's request
    const bool asks_next = size == 16 && s.out.active && id == s.out.id && offset == s.out.sent;
    ChunkVerdict v = table.OnNext(View(i), size);
    if (!asks_next) {
      Check(v.kind == ChunkVerdict::kError && v.error == WireError::kStreamInvalid,
            "a CHUNK_NEXT that does not ask for the next chunk was not StreamInvalid");
      ClearOut(i);
      return;
    }
    AnswerChunk(i, v);
  }

  // The verdict of writing slot i's next answer chunk (StartAnswer or CHUNK_NEXT), checked against the model.
  void AnswerChunk(uint32_t i, const ChunkVerdict& v) {
    Slot& s = slots[i];
    OutModel& o = s.out;
    if (o.sent == o.fail_at) {
      Check(v.kind == ChunkVerdict::kError && v.error == WireError::kHandlerFailed,
            "a failing Source did not give HandlerFailed");
      ClearOut(i);
      return;
    }
    Check(v.kind == ChunkVerdict::kAnswered, "an answer chunk was not written");
    const ChunkHeader c = shm::detail::ReadChunkHeader(*s.header);
    const uint32_t length = ChunkLength(o.total, o.sent, C);
    Check(s.header->resp_type.load() == static_cast<uint32_t>(MsgType::CHUNK), "answer chunk of another type");
    Check(s.header->resp_size.load() == length, "answer chunk of the wrong size");
    Check(s.header->resp_error.load() == 0, "answer chunk with an error code");
    if (o.sent == 0) {
      Check(c.stream_id != 0 && c.stream_id != last_out_id, "an answer's stream id is 0 or not new");
      o.id = last_out_id = c.stream_id;
    }
    Check(c.stream_id == o.id && c.total == o.total && c.offset == o.sent && c.msg_type == o.type,
          "answer chunk header breaks the chunking rule");
    for (uint32_t k = 0; k < length; ++k) {
      if (s.response[k] != ByteAt(o.seed, o.sent + k)) Fail("answer chunk of other bytes");
    }
    o.sent += length;
    if (o.sent == o.total) ClearOut(i);
  }

  void StartAnswer(uint32_t i, uint64_t total, uint32_t type, uint8_t seed, uint64_t fail_at, bool throws) {
    Slot& s = slots[i];
    ClearIn(i);
    s.out = OutModel{};
    s.out.active = true;
    s.out.total = total;
    s.out.type = type;
    s.out.seed = seed;
    s.out.fail_at = fail_at;
    s.out.throws = throws;
    const SlotView view = View(i);
    // The Source checks how it is called: in order, into the response buffer, one chunk's length at a time.
    auto expected = std::make_shared<uint64_t>(0);
    shm::Source source{total, [=](uint64_t offset, MutableBytes into) -> bool {
                         Check(offset == *expected && offset < total, "Source filled out of order");
                         Check(into.data() == view.response && into.size() == ChunkLength(total, offset, C),
                               "Source asked to fill outside the chunk");
                         if (offset == fail_at) {
                           if (throws) throw std::runtime_error("source failed");
                           return false;
                         }
                         for (size_t k = 0; k < into.size(); ++k) into.data()[k] = ByteAt(seed, offset + k);
                         *expected = offset + into.size();
                         return true;
                       }};
    s.header->resp_type.store(0);
    ChunkVerdict v = table.StartAnswer(view, std::move(source), static_cast<MsgType>(type));
    AnswerChunk(i, v);
  }

  void Sweep(uint32_t first, uint32_t n, bool all) {
    table.Sweep(first, n, all);
    if (!all) return;  // the idle timeout is an hour: nothing is idle
    for (uint32_t i = first; i < first + n && i < kSlots; ++i) {
      ClearIn(i);
      ClearOut(i);
    }
  }
};

// Values on the edges of what a receiver must reject; some taken from the slot's model.
uint64_t PickU64(Input& in, const Harness::Slot& s) {
  static const uint64_t kValues[] = {0,
                                     1,
                                     C - 1,
                                     C,
                                     C + 1,
                                     2 * C,
                                     3 * C - 5,
                                     3 * C,
                                     kLimit,
                                     kLimit + 1,
                                     kMaxSize,
                                     kMaxSize + 1,
                                     ~uint64_t{0},
                                     ~uint64_t{0} - C / 2,
                                     uint64_t{1} << 63,
                                     16};
  const uint8_t p = in.U8();
  if (p < 16) return kValues[p];
  switch (p) {
    case 16: return s.in.id;
    case 17: return s.in.total;
    case 18: return s.in.bytes.size();
    case 19: return s.in.id + 1;
    case 20: return s.out.id;
    case 21: return s.out.sent;
    case 22: return s.out.total;
    case 23: return s.in.bytes.size() + C;
    default: return in.U64();
  }
}

uint32_t PickType(Input& in) {
  static const uint32_t kValues[] = {0, 1, 2, 3, 4, 5, 6, 127, 128, 129, 10, 11, 0xFFFFFFFFu, 126, 100, 2500};
  const uint8_t p = in.U8();
  return p < 16 ? kValues[p] : in.U32();
}

// A wire size: edges, `usual` (the size a well-behaved peer gives), or any int32.
int32_t PickSize(Input& in, int32_t usual) {
  static const int32_t kValues[] = {0,         1,         C - 1, C,  C + 1, -1,  -static_cast<int32_t>(C),
                                    INT32_MIN, INT32_MAX, 15,    16, 17,    -16, 2 * C};
  const uint8_t p = in.U8();
  if (p < 14) return kValues[p];
  if (p < 200) return usual;
  return static_cast<int32_t>(in.U32());
}

// The caller side: a large answer's chunks through ReceiveMessage's checks, assembled as ReceiveMessage does.
void CallerSide(Input& in) {
  static const uint64_t kMax[] = {0, C, C + 1, 3 * C, 4096, 65536, 3 * C - 5, 2 * C};
  const uint8_t mp = in.U8();
  const uint64_t max_size = mp < 8 ? kMax[mp] : in.U32() % 65537;
  std::unique_ptr<uint8_t[]> response(new uint8_t[C]);
  // Each answer: its response buffer holds the bytes of the message at the header's offset.
  auto answer = [&](ChunkHeader* c, bool good, uint64_t received, const ChunkHeader* first) -> int64_t {
    static const Harness::Slot none;  // no model: its values are 0
    if (first != nullptr) {
      // A later chunk: the one expected, or that one with the fields a mask picks replaced (a hostile chunk
      // that differs from the expected one in one field, or several).
      *c = ChunkHeader{first->stream_id, first->total, received, first->msg_type, 0};
      if (!good) {
        const uint8_t mask = in.U8();
        if (mask & 1) c->stream_id = (mask & 0x10) ? c->stream_id + 1 : PickU64(in, none);
        if (mask & 2) c->total = (mask & 0x20) ? c->total + C : PickU64(in, none);
        if (mask & 4) {
          static const int64_t kDelta[] = {0,     C,     -static_cast<int64_t>(C),    1, -1,
                                           2 * C, 3 * C, -2 * static_cast<int64_t>(C)};
          const uint8_t d = in.U8() % 8;
          c->offset = d == 0 ? PickU64(in, none) : received + static_cast<uint64_t>(kDelta[d]);
        }
        if (mask & 8) c->msg_type = PickType(in);
        c->reserved = in.U32();
      }
    } else {
      c->stream_id = PickU64(in, none);
      c->total = PickU64(in, none);
      if (in.U8() & 1) c->total = C + 1 + in.U32() % 70000;
      c->offset = good ? 0 : PickU64(in, none);
      c->msg_type = PickType(in);
      c->reserved = in.U32();
    }
    const int64_t size =
        good ? (c->offset < c->total ? ChunkLength(c->total, c->offset, C) : 0)
             : static_cast<int64_t>(
                   PickSize(in, static_cast<int32_t>(c->offset < c->total ? ChunkLength(c->total, c->offset, C) : C)));
    for (uint32_t k = 0; k < C; ++k) response[k] = ByteAt(0x5A, c->offset + k);
    return size;
  };
  ChunkHeader first{};
  const int64_t first_size = answer(&first, (in.U8() & 3) != 0, 0, nullptr);
  const auto check = shm::detail::CheckFirstAnswerChunk(first, first_size, C, max_size);
  if (check != shm::detail::FirstAnswerChunk::kOk) return;
  Check(first.stream_id != 0 && first.offset == 0 && first.total > C && first.total <= max_size &&
            first.total <= kMaxSize && first_size == ChunkLength(first.total, 0, C) &&
            shm::IsUserResponseType(static_cast<MsgType>(first.msg_type)),
        "CheckFirstAnswerChunk accepted a first chunk that breaks the chunking rule");
  // The Sink's memory: exactly the announced size (ASan sees a byte beyond it).
  std::unique_ptr<uint8_t[]> to(new uint8_t[static_cast<size_t>(first.total)]);
  std::memcpy(to.get(), response.get(), static_cast<size_t>(first_size));
  uint64_t received = static_cast<uint64_t>(first_size);
  while (received < first.total && !in.empty()) {
    const uint8_t how = in.U8();
    ChunkHeader c{};
    const bool good = (how & 3) != 0;
    const int64_t size = answer(&c, good, received, &first);
    const MsgType type = (how & 4) ? static_cast<MsgType>(PickType(in)) : MsgType::CHUNK;
    const bool ok = shm::detail::ContinuesAnswer(first, received, type, c, size, C);
    if (good && type == MsgType::CHUNK) Check(ok, "ContinuesAnswer refused the next chunk");
    if (!ok) return;  // ReceiveMessage fails the call with kProtocol
    Check(c.offset == received && size == ChunkLength(first.total, received, C),
          "ContinuesAnswer accepted a chunk out of place");
    std::memcpy(to.get() + received, response.get(), static_cast<size_t>(size));
    received += static_cast<uint64_t>(size);
  }
  Check(received <= first.total, "the assembled answer overran its size");
  for (uint64_t k = 0; k < received; ++k) {
    if (to[k] != ByteAt(0x5A, k)) Fail("the assembled answer is not the chunks' bytes in order");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  Harness h;
  for (int ops = 0; ops < 4000 && !in.empty(); ++ops) {
    const uint8_t op = in.U8() % 8;
    const uint32_t i = in.U8() % kSlots;
    Harness::Slot& s = h.slots[i];
    switch (op) {
      case 0: {  // a hostile CHUNK
        ChunkHeader c{};
        c.stream_id = PickU64(in, s);
        c.total = PickU64(in, s);
        c.offset = PickU64(in, s);
        c.msg_type = PickType(in);
        c.reserved = in.U8();
        const int32_t n =
            PickSize(in, static_cast<int32_t>(c.offset < c.total ? ChunkLength(c.total, c.offset, C) : C));
        const uint8_t seed = in.U8();
        h.Chunk(i, c, n, seed, static_cast<HookMode>(in.U8() % kHookModes));
        break;
      }
      case 1: h.GoodChunk(i, in); break;
      case 2: {  // a hostile CHUNK_NEXT
        const uint64_t id = PickU64(in, s);
        const uint64_t offset = PickU64(in, s);
        h.Next(i, id, offset, PickSize(in, 16));
        break;
      }
      case 3: h.Next(i, s.out.id, s.out.sent, 16); break;  // the next chunk, as a good caller asks
      case 4:                                              // a plain request on the slot
        h.table.Drop(i);
        h.ClearIn(i);
        h.ClearOut(i);
        break;
      case 5: {
        const uint32_t first = in.U8() % (kSlots + 1);
        const uint32_t n = in.U8() % (kSlots + 2);
        h.Sweep(first, n, in.U8() & 1);
        break;
      }
      case 6: {  // the handler answers with a Source larger than the slot
        uint64_t total = PickU64(in, s);
        if (total <= C) total = C + 1 + total % (4 * C);
        if (total > kMaxSize) total = kMaxSize;
        static const uint32_t kTypes[] = {0, 10, 11, 128, 0xFFFFFFFFu, 1000, 129, 0};
        const uint32_t type = kTypes[in.U8() % 8];
        const uint8_t seed = in.U8();
        const uint8_t f = in.U8();
        const uint32_t k = f & 0x3F;  // fails at chunk k < 8 (by throwing: bit 0x40), else never
        const uint64_t fail_at = k < 8 ? uint64_t{k} * C : UINT64_MAX;
        h.StartAnswer(i, total, type, seed, fail_at, (f & 0x40) != 0);
        break;
      }
      case 7: CallerSide(in); break;
    }
    h.Invariants();
  }
  // Ending the session drops everything (the table's memory is checked for leaks by ASan at exit).
  h.Sweep(0, kSlots, true);
  h.Invariants();
  return 0;
}

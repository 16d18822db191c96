// SPDX-License-Identifier: Apache-2.0
// Messages larger than a slot (SPECIFICATION.md §8.5), caller side: send a request of any size on a slot the
// caller owns, as one plain request or a run of chunks, and take an answer of any size into a Sink. The server
// side is in transfer.h.
#pragma once

#include <cstring>
#include <string>

#include "shm/detail/endpoint.h"
#include "shm/detail/transfer.h"
#include "shm/transfer.h"

namespace shm {
namespace detail {

/// Runs source.fill for [offset, offset + into.size()); a throwing or missing fill is a failed one.
inline bool FillFrom(const Source& source, uint64_t offset, MutableBytes into) {
  if (into.size() == 0) return true;
  if (!source.fill) return false;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
  try {
    return source.fill(offset, into);
  } catch (...) {
    return false;
  }
#else
  return source.fill(offset, into);
#endif
}

inline Error SourceFailed(uint64_t offset) {
  return Error(ErrorCode::kInvalidArgs,
               "the request's Source failed to fill the bytes at offset " + std::to_string(offset));
}

/// Send `source` of type `type` on slot `s`, owned at *seq: a plain request when it fits the slot, else its
/// chunks in order (each acknowledged). Returns the answer to the whole request, still unread (a plain answer,
/// an error, or a large answer's first CHUNK). *owned as for Endpoint::Call. The type is the caller's to check.
/// `started`: Endpoint::CallClock() at the call's start.
inline Result<Answer> SendMessage(Endpoint& ep, const SlotView& s, uint32_t* seq, const Source& source, MsgType type,
                                  bool end_aligned, int64_t deadline, bool* owned, int64_t started) {
  *owned = true;
  const uint32_t capacity = s.capacity;
  if (source.size <= capacity) {
    const uint32_t n = static_cast<uint32_t>(source.size);
    const int32_t wire_size = end_aligned ? -static_cast<int32_t>(n) : static_cast<int32_t>(n);
    uint32_t length = 0;
    uint8_t* to = MessageBytes(*s.header, s.request, capacity, wire_size, &length);
    if (!FillFrom(source, 0, MutableBytes(to, n))) return SourceFailed(0);
    return ep.Call(s, seq, wire_size, type, deadline, owned, started);
  }
  const uint64_t id = NextStreamId();
  for (uint64_t offset = 0;;) {
    const uint32_t length = ChunkLength(source.size, offset, capacity);
    if (!FillFrom(source, offset, MutableBytes(s.request, length))) return SourceFailed(offset);
    WriteChunkHeader(*s.header, id, source.size, offset, type);
    auto a = ep.Transact(s, seq, static_cast<int32_t>(length), MsgType::CHUNK, deadline, owned, started);
    if (!a) return a;
    offset += length;
    if (offset == source.size) return a;
    if (a->type != MsgType::CHUNK_ACK) {
      ep.CountProtocol(s.index);
      return Error(ErrorCode::kProtocol, "peer answered the chunk at offset " + std::to_string(offset - length) +
                                             " of a large request with type " +
                                             std::to_string(static_cast<uint32_t>(a->type)) + " instead of CHUNK_ACK");
    }
  }
}

/// How the first chunk of a large answer (header `first`, `size` data bytes) stands: well formed for a slot of
/// `capacity` and the start of a user response larger than the slot (kBroken otherwise), and within the call's
/// `max_size` (kTooLarge otherwise). Pure: ReceiveMessage's check of the first chunk, also fuzzed on its own.
enum class FirstAnswerChunk { kOk, kBroken, kTooLarge };
inline FirstAnswerChunk CheckFirstAnswerChunk(const wire::ChunkHeader& first, int64_t size, uint32_t capacity,
                                              uint64_t max_size) noexcept {
  if (!ChunkIsWellFormed(first, size, capacity) || first.offset != 0 || first.total <= capacity ||
      !IsUserResponseType(static_cast<MsgType>(first.msg_type))) {
    return FirstAnswerChunk::kBroken;
  }
  return first.total > max_size ? FirstAnswerChunk::kTooLarge : FirstAnswerChunk::kOk;
}

/// Whether an answer of type `type` carrying chunk header `c` and `size` data bytes is the chunk at `received`
/// of the large answer that `first` began (which CheckFirstAnswerChunk accepted). Pure: ReceiveMessage's check
/// of every later chunk; when it holds, the chunk's bytes lie in [received, first.total) of the message.
inline bool ContinuesAnswer(const wire::ChunkHeader& first, uint64_t received, MsgType type, const wire::ChunkHeader& c,
                            int64_t size, uint32_t capacity) noexcept {
  return type == MsgType::CHUNK && ChunkIsWellFormed(c, size, capacity) && c.stream_id == first.stream_id &&
         c.total == first.total && c.msg_type == first.msg_type && c.offset == received;
}

inline Error RefusedBySink(uint64_t size) {
  return Error(ErrorCode::kTooLarge,
               "the call's Sink gave no room for the answer of " + std::to_string(size) + " bytes");
}

/// Take answer `a` to a whole request on slot `s` (owned at *seq) into `sink`: a plain answer at once, a large
/// one chunk by chunk (CHUNK_NEXT for each after the first), each chunk header read once and checked against
/// the first. Answers above `max_size` fail with kTooLarge; any broken chunk with kProtocol. A large answer
/// is counted as one call (Endpoint::CountCall) from `started` when its last chunk is in.
inline Result<Received> ReceiveMessage(Endpoint& ep, const SlotView& s, uint32_t* seq, const Answer& a,
                                       const Sink& sink, uint64_t max_size, int64_t deadline, bool* owned,
                                       int64_t started) {
  if (a.type == MsgType::CHUNK_ACK) {
    ep.CountProtocol(s.index);
    return Error(ErrorCode::kProtocol,
                 "peer acknowledged a chunk of slot " + std::to_string(s.index) + " that was the whole request");
  }
  if (a.type != MsgType::CHUNK) {
    if (a.length > max_size) {
      return Error(ErrorCode::kTooLarge, "the answer of " + std::to_string(a.length) + " bytes exceeds the " +
                                             std::to_string(max_size) + " this call accepts");
    }
    const MutableBytes to = sink.destination ? sink.destination(a.length, a.type) : MutableBytes();
    if (to.size() < a.length || (a.length != 0 && to.data() == nullptr)) return RefusedBySink(a.length);
    platform::CopyBytes(to.data(), a.data, a.length);
    return Received{a.type, a.length};
  }
  const uint32_t capacity = s.capacity;
  const wire::ChunkHeader first = ReadChunkHeader(*s.header);  // read once
  const auto type = static_cast<MsgType>(first.msg_type);
  const FirstAnswerChunk check = CheckFirstAnswerChunk(first, a.length, capacity, max_size);
  if (check == FirstAnswerChunk::kBroken) {
    ep.CountProtocol(s.index);
    return Error(ErrorCode::kProtocol, "peer began a large answer on slot " + std::to_string(s.index) +
                                           " with a chunk that breaks the chunking rule");
  }
  if (check == FirstAnswerChunk::kTooLarge) {
    return Error(ErrorCode::kTooLarge, "the answer of " + std::to_string(first.total) + " bytes exceeds the " +
                                           std::to_string(max_size) + " this call accepts");
  }
  const MutableBytes to = sink.destination ? sink.destination(first.total, type) : MutableBytes();
  if (to.data() == nullptr || to.size() < first.total) return RefusedBySink(first.total);
  platform::CopyBytes(to.data(), s.response, a.length);
  uint64_t received = a.length;
  while (received < first.total) {
    const uint64_t ask[2] = {first.stream_id, received};
    uint32_t length = 0;
    std::memcpy(MessageBytes(*s.header, s.request, capacity, wire::kChunkNextSize, &length), ask, sizeof ask);
    auto b =
        ep.Transact(s, seq, static_cast<int32_t>(wire::kChunkNextSize), MsgType::CHUNK_NEXT, deadline, owned, started);
    if (!b) return std::move(b).error();
    const wire::ChunkHeader c = ReadChunkHeader(*s.header);
    if (!ContinuesAnswer(first, received, b->type, c, b->length, capacity)) {
      ep.CountProtocol(s.index);
      return Error(ErrorCode::kProtocol, "peer answered the chunk at offset " + std::to_string(received) +
                                             " of a large answer on slot " + std::to_string(s.index) +
                                             " with one that breaks the chunking rule");
    }
    platform::CopyBytes(to.data() + received, s.response, b->length);
    received += b->length;
  }
  ep.CountCall(s.index, first.total, started);
  return Received{type, first.total};
}

}  // namespace detail
}  // namespace shm

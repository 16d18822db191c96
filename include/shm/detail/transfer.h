// SPDX-License-Identifier: Apache-2.0
// Messages larger than a slot (SPECIFICATION.md §8.5), server side: what a server holds of the transfers on the
// slots it serves, and how it takes a CHUNK or answers a CHUNK_NEXT. The caller side is in transfer_call.h.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>

#include "shm/config.h"
#include "shm/detail/slot.h"
#include "shm/platform/platform.h"
#include "shm/transfer.h"
#include "shm/wire/layout.h"

namespace shm {
namespace detail {

/// The chunk header of slot `h`, copied out once (the receiver validates the copy, never the shared bytes).
inline wire::ChunkHeader ReadChunkHeader(const SlotHeader& h) noexcept {
  wire::ChunkHeader c;
  std::memcpy(&c, h.inline_data, sizeof c);
  return c;
}

inline void WriteChunkHeader(SlotHeader& h, uint64_t stream_id, uint64_t total, uint64_t offset,
                             MsgType type) noexcept {
  const wire::ChunkHeader c{stream_id, total, offset, static_cast<uint32_t>(type), 0};
  std::memcpy(h.inline_data, &c, sizeof c);
}

/// The data length of the chunk at `offset` of a `total`-byte message in slots of `capacity` (the chunking rule).
/// Precondition: offset < total.
inline uint32_t ChunkLength(uint64_t total, uint64_t offset, uint32_t capacity) noexcept {
  return static_cast<uint32_t>((std::min)(static_cast<uint64_t>(capacity), total - offset));
}

/// Whether a chunk header's numbers obey the chunking rule for a chunk of `size` data bytes.
inline bool ChunkIsWellFormed(const wire::ChunkHeader& c, int64_t size, uint32_t capacity) noexcept {
  return c.stream_id != 0 && c.total != 0 && c.total <= wire::kMaxMessageSize && c.offset < c.total &&
         size == static_cast<int64_t>(ChunkLength(c.total, c.offset, capacity));
}

/// A stream id for a transfer this process starts: unique within the process, never 0.
inline uint64_t NextStreamId() noexcept {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

/// What the server does with a CHUNK or CHUNK_NEXT it took.
struct ChunkVerdict {
  enum Kind {
    kAck,       ///< Answer CHUNK_ACK: more chunks are expected.
    kError,     ///< Answer SYSTEM_ERROR `error`.
    kAnswered,  ///< A response chunk is written (fields included).
    kRun,       ///< The request is complete: run the handler on `message`.
  } kind = kError;
  wire::WireError error = wire::WireError::kStreamInvalid;
  Bytes message;                     // kRun: the whole request
  MsgType type = MsgType::NORMAL;    // kRun: its type
  std::unique_ptr<uint8_t[]> owned;  // kRun: the library's memory behind `message`, if it is the library's
};

inline ChunkVerdict ErrorVerdict(wire::WireError e) {
  ChunkVerdict v;
  v.error = e;
  return v;
}

/// The transfers a server holds, one entry per slot of the segment (entries of slots this side calls on stay
/// empty). Thread safety: each entry is used by whoever serves its slot (the slot's control word orders
/// successive servers) and by the idle sweep; its mutex separates the two. live_slots() is one relaxed load,
/// so that servers of small messages pay nothing.
class TransferTable {
 public:
  void Init(uint32_t slots, const TransferLimits& limits) {
    slots_.reset(new Entry[slots]);
    count_ = slots;
    limits_ = limits;
  }
  const TransferLimits& limits() const noexcept { return limits_; }

  /// How many slots hold any transfer state. 0: nothing to drop, nothing to sweep.
  uint32_t live_slots() const noexcept { return live_.load(std::memory_order_relaxed); }

  /// End whatever slot `i` holds: its next request is a plain one (§8.5: a new request ends any transfer).
  void Drop(uint32_t i) {
    Entry& e = slots_[i];
    std::lock_guard<std::mutex> lock(e.mu);
    ClearIn(e);
    ClearOut(e);
  }

  /// A CHUNK request taken on slot `s` with data size `size` (read once by the caller of this function).
  ChunkVerdict OnChunk(const SlotView& s, int32_t size) {
    const wire::ChunkHeader c = ReadChunkHeader(*s.header);  // read once; only `c` is used from here on
    Entry& e = slots_[s.index];
    std::lock_guard<std::mutex> lock(e.mu);
    ClearOut(e);  // a new request ends an answer the caller stopped fetching
    ChunkVerdict v;
    if (!ChunkIsWellFormed(c, size, s.capacity)) {
      ClearIn(e);
      return v;  // kError, StreamInvalid
    }
    const auto type = static_cast<MsgType>(c.msg_type);
    if (c.offset == 0) {
      const bool duplicate = e.in && e.in_id == c.stream_id;
      ClearIn(e);
      if (duplicate || c.total <= s.capacity) return v;  // a first chunk twice; a message for the plain path
      if (c.total > limits_.max_message_size) return ErrorVerdict(wire::WireError::kRequestTooLarge);
      if (!IsUserRequestType(type) || type == MsgType::HEARTBEAT_REQ)
        return ErrorVerdict(wire::WireError::kReservedType);
      // Reserve a place among the partial transfers first: servers of other slots count at the same time.
      if (partial_.fetch_add(1, std::memory_order_relaxed) >= limits_.max_transfers) {
        partial_.fetch_sub(1, std::memory_order_relaxed);
        return ErrorVerdict(wire::WireError::kTooManyTransfers);
      }
      uint8_t* to = nullptr;
      if (limits_.receive_buffer) {
        MutableBytes mine;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
        try {
          mine = limits_.receive_buffer(c.total, type, s.index);
        } catch (...) {
          partial_.fetch_sub(1, std::memory_order_relaxed);
          return ErrorVerdict(wire::WireError::kHandlerFailed);
        }
#else
        mine = limits_.receive_buffer(c.total, type, s.index);
#endif
        if (mine.data() != nullptr && mine.size() >= c.total) to = mine.data();
      }
      if (to == nullptr && c.total <= SIZE_MAX) {
        e.in_owned.reset(new (std::nothrow) uint8_t[static_cast<size_t>(c.total)]);  // not zeroed
        to = e.in_owned.get();
      }
      if (to == nullptr) {  // no memory for it
        partial_.fetch_sub(1, std::memory_order_relaxed);
        return ErrorVerdict(wire::WireError::kRequestTooLarge);
      }
      e.in = true;
      e.in_id = c.stream_id;
      e.in_total = c.total;
      e.in_received = 0;
      e.in_type = c.msg_type;
      e.in_data = to;
      MarkLive(e);
    } else if (!e.in || c.stream_id != e.in_id || c.total != e.in_total || c.msg_type != e.in_type ||
               c.offset != e.in_received) {
      ClearIn(e);
      return v;  // out of order, duplicate, overlapping, another stream's, or no transfer at all
    }
    platform::CopyBytes(e.in_data + c.offset, s.request, static_cast<size_t>(size));
    e.in_received += static_cast<uint64_t>(size);
    e.last_ns = platform::MonotonicNs();
    if (e.in_received < e.in_total) {
      v.kind = ChunkVerdict::kAck;
      return v;
    }
    v.kind = ChunkVerdict::kRun;
    v.message = Bytes(e.in_data, static_cast<size_t>(e.in_total));
    v.type = static_cast<MsgType>(e.in_type);
    v.owned = std::move(e.in_owned);
    ClearIn(e);
    return v;
  }

  /// A CHUNK_NEXT request of `size` taken on slot `s`: answer the next chunk of the slot's outgoing answer.
  ChunkVerdict OnNext(const SlotView& s, int32_t size) {
    Entry& e = slots_[s.index];
    std::lock_guard<std::mutex> lock(e.mu);
    ClearIn(e);                // a new request ends a request in progress
    uint64_t ask[2] = {0, 0};  // stream_id, offset: read once
    if (size == static_cast<int32_t>(wire::kChunkNextSize)) std::memcpy(ask, s.header->inline_data, sizeof ask);
    if (size != static_cast<int32_t>(wire::kChunkNextSize) || !e.out || ask[0] != e.out_id || ask[1] != e.out_sent) {
      ClearOut(e);
      return ChunkVerdict{};  // StreamInvalid
    }
    return WriteNextChunk(s, e);
  }

  /// The handler answered slot `s` with `source` of more than the slot's capacity: keep it and answer chunk 0.
  ChunkVerdict StartAnswer(const SlotView& s, Source source, MsgType type) {
    Entry& e = slots_[s.index];
    std::lock_guard<std::mutex> lock(e.mu);
    ClearIn(e);
    ClearOut(e);
    e.out = true;
    e.out_id = NextStreamId();
    e.out_total = source.size;
    e.out_sent = 0;
    e.out_type = type;
    e.out_source = std::move(source);
    MarkLive(e);
    return WriteNextChunk(s, e);
  }

  /// Drop the transfers of slots [first, first + n) that had no chunk for the idle timeout, or all of them
  /// (`all`: their caller is gone). A slot whose server is using its entry right now is left for next time.
  void Sweep(uint32_t first, uint32_t n, bool all) {
    if (live_slots() == 0) return;
    const int64_t now = platform::MonotonicNs();
    const int64_t idle = limits_.idle_timeout.count();
    const uint64_t end = (std::min)(uint64_t{first} + n, uint64_t{count_});  // no wrap for any range
    for (uint64_t i = first; i < end; ++i) {
      Entry& e = slots_[i];
      if (!e.live.load(std::memory_order_relaxed)) continue;
      std::unique_lock<std::mutex> lock(e.mu, std::try_to_lock);
      if (!lock.owns_lock()) continue;
      if (all || now - e.last_ns > idle) {
        ClearIn(e);
        ClearOut(e);
      }
    }
  }

  /// Partial incoming transfers held now (tests and Stats).
  uint32_t partial_requests() const noexcept { return partial_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::mutex mu;
    std::atomic<bool> live{false};  // in || out
    int64_t last_ns = 0;            // CLOCK_MONOTONIC of the last chunk taken or sent
    // The request being received.
    bool in = false;
    uint64_t in_id = 0, in_total = 0, in_received = 0;
    uint32_t in_type = 0;
    uint8_t* in_data = nullptr;
    std::unique_ptr<uint8_t[]> in_owned;
    // The answer being sent.
    bool out = false;
    uint64_t out_id = 0, out_total = 0, out_sent = 0;
    MsgType out_type = MsgType::NORMAL;
    Source out_source;
  };

  ChunkVerdict WriteNextChunk(const SlotView& s, Entry& e) {
    const uint64_t offset = e.out_sent;
    const uint32_t length = ChunkLength(e.out_total, offset, s.capacity);
    bool filled = false;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
      filled = e.out_source.fill && e.out_source.fill(offset, MutableBytes(s.response, length));
    } catch (...) {
      filled = false;
    }
#else
    filled = e.out_source.fill && e.out_source.fill(offset, MutableBytes(s.response, length));
#endif
    if (!filled) {
      ClearOut(e);
      return ErrorVerdict(wire::WireError::kHandlerFailed);
    }
    SlotHeader& h = *s.header;
    WriteChunkHeader(h, e.out_id, e.out_total, offset, e.out_type);
    h.resp_type.store(static_cast<uint32_t>(MsgType::CHUNK), std::memory_order_relaxed);
    h.resp_size.store(length, std::memory_order_relaxed);
    h.resp_error.store(0, std::memory_order_relaxed);
    e.out_sent = offset + length;
    e.last_ns = platform::MonotonicNs();
    if (e.out_sent == e.out_total) ClearOut(e);  // the last chunk: the answer is complete
    ChunkVerdict v;
    v.kind = ChunkVerdict::kAnswered;
    return v;
  }

  void MarkLive(Entry& e) noexcept {
    if (!e.live.exchange(true, std::memory_order_relaxed)) live_.fetch_add(1, std::memory_order_relaxed);
  }
  void Settle(Entry& e) noexcept {
    if (!e.in && !e.out && e.live.exchange(false, std::memory_order_relaxed)) {
      live_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  void ClearIn(Entry& e) noexcept {
    if (e.in) partial_.fetch_sub(1, std::memory_order_relaxed);
    e.in = false;
    e.in_owned.reset();
    e.in_data = nullptr;
    Settle(e);
  }
  void ClearOut(Entry& e) noexcept {
    e.out = false;
    e.out_source = Source{};
    Settle(e);
  }

  std::unique_ptr<Entry[]> slots_;
  uint32_t count_ = 0;
  TransferLimits limits_;
  std::atomic<uint32_t> live_{0};
  std::atomic<uint32_t> partial_{0};
};

}  // namespace detail
}  // namespace shm

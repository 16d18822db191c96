// SPDX-License-Identifier: Apache-2.0
// The slot state machine: every transition of a slot's control word, in one place.
//
//   caller                              server
//   FREE ──claim──▶ CLAIMED ──publish(seq+1)──▶ REQUEST ──take──▶ SERVING ──complete──▶ RESPONSE
//                     ▲  ▲◀──────withdraw───────────┘                │ ▲                    │
//                     │  └──────recover (server dead)────────────────┘ │                    │
//                     │                                      abandon ▼ │                    │
//   FREE ◀──release───┴──────────────────────────────── ABANDONED ─────┘(late complete frees)│
//     ▲                         RESPONSE ──publish(seq+1)──▶ REQUEST (a held slot sends again)
//     └────────────────────────release─────────────────────────────────────────────────────┘
//
// Ownership: the caller owns the request buffer and header fields in CLAIMED and RESPONSE; the server owns the
// response buffer and fields in SERVING and ABANDONED. Nobody owns a FREE or REQUEST slot's buffers. Because a
// slot leaves SERVING/ABANDONED only through its server, a late responder always writes into the transaction it
// took: never into a slot that has moved on.
//
// A caller that finds a slot of its own in a word it cannot explain quarantines it (Endpoint) and frees it
// later with ReclaimQuarantined (T12), once its server is gone.
//
// Every transition is a CAS on the whole control word, so it checks state and seq together; a CAS that fails
// because only the kWaiting bit moved is retried. A transition clears kWaiting and, if it was set, stamps the
// time and wakes every sleeper on the word (SPECIFICATION.md §Wake-ups).
#pragma once

#include <climits>
#include <cstdint>

#include "shm/platform/platform.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"

namespace shm {
namespace detail {

using wire::SlotHeader;
using wire::SlotState;

/// A slot with its buffers, resolved from a validated geometry. Cheap value; does not own.
struct SlotView {
  SlotHeader* header = nullptr;
  uint8_t* request = nullptr;   // capacity bytes
  uint8_t* response = nullptr;  // capacity bytes
  uint32_t capacity = 0;
  uint32_t index = 0;
};

/// Where a wire size puts its bytes in a buffer of `capacity`.
struct Placement {
  uint32_t offset = 0;
  uint32_t length = 0;
};

/// Resolve a wire size (negative = end-aligned). false when |size| > capacity or size == INT32_MIN: the
/// value is then rejected, never used.
inline bool ResolveSize(int32_t size, uint32_t capacity, Placement* out) noexcept {
  if (size == INT32_MIN) return false;
  const uint32_t length = static_cast<uint32_t>(size < 0 ? -size : size);
  if (length > capacity) return false;
  out->length = length;
  out->offset = size < 0 ? capacity - length : 0;
  return true;
}

/// Where the bytes of a message of wire size `size` lie (SPECIFICATION.md §8.1): in the slot header's
/// inline_data when |size| <= wire::kInlineSize, else in `buffer` (the slot's request or response buffer, of
/// `capacity` bytes). nullptr when the size is invalid for the capacity.
inline uint8_t* MessageBytes(SlotHeader& h, uint8_t* buffer, uint32_t capacity, int32_t size,
                             uint32_t* length) noexcept {
  Placement p;
  if (!ResolveSize(size, capacity, &p)) return nullptr;
  *length = p.length;
  if (p.length <= wire::kInlineSize) return h.inline_data + (size < 0 ? wire::kInlineSize - p.length : 0);
  return buffer + p.offset;
}

/// Wake every sleeper on a word whose value `replaced` (waiting bit set) the caller has just replaced, stamping
/// the moment for spin tuning (advisory).
inline void WakeSleepers(SlotHeader& h, uint32_t replaced) noexcept {
  h.wake_stamp_ns.store(static_cast<uint64_t>(platform::MonotonicNs()), std::memory_order_relaxed);
  platform::FutexWakeAll(&h.ctl, replaced);
}

/// CAS the control word from (from, seq) to (to, to_seq). Returns false, with *observed set, when the word is
/// not in (from, seq). Clears kWaiting and wakes sleepers when it was set (then *woke = true).
/// SYNC POINT WRITE/READ: ctl (acq_rel): publishes what the transitioning side wrote before, and acquires what
/// the other side wrote before its last transition.
inline bool Transition(SlotHeader& h, SlotState from, uint32_t seq, SlotState to, uint32_t to_seq,
                       uint32_t* observed = nullptr, bool* woke = nullptr) noexcept {
  uint32_t cur = h.ctl.load(std::memory_order_acquire);
  const uint32_t next = wire::MakeCtl(to, to_seq);
  for (;;) {
    if (!wire::CtlIs(cur, from) || wire::CtlSeq(cur) != (seq & wire::kSeqMask)) {
      if (observed) *observed = cur;
      return false;
    }
    if (h.ctl.compare_exchange_weak(cur, next, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  if (cur & wire::kWaiting) {
    WakeSleepers(h, cur);
    if (woke) *woke = true;
  }
  return true;
}

// ---- Caller side -------------------------------------------------------------------------------------------

/// FREE -> CLAIMED. On success the caller owns the slot; *seq is its current sequence number.
inline bool TryClaim(SlotHeader& h, uint32_t* seq) noexcept {
  uint32_t cur = h.ctl.load(std::memory_order_relaxed);
  if (!wire::CtlIs(cur, SlotState::kFree)) return false;
  if (!Transition(h, SlotState::kFree, wire::CtlSeq(cur), SlotState::kClaimed, wire::CtlSeq(cur))) return false;
  *seq = wire::CtlSeq(cur);
  return true;
}

/// CLAIMED or RESPONSE (owned, at `seq`) -> REQUEST(seq+1). The request fields and bytes must be written.
/// Returns the new seq, or false if the caller no longer owns the slot (a peer broke the protocol). *woke: a
/// server was asleep on the slot and has been woken.
inline bool Publish(SlotHeader& h, uint32_t seq, uint32_t* new_seq, bool* woke = nullptr) noexcept {
  const uint32_t next = wire::NextSeq(seq);
  if (Transition(h, SlotState::kClaimed, seq, SlotState::kRequest, next, nullptr, woke) ||
      Transition(h, SlotState::kResponse, seq, SlotState::kRequest, next, nullptr, woke)) {
    *new_seq = next;
    return true;
  }
  return false;
}

enum class CancelOutcome {
  kWithdrawn,  ///< The server had not taken it: back to CLAIMED, the caller still owns the slot.
  kAbandoned,  ///< The server is serving it: ABANDONED, the server frees the slot when done.
  kAnswered,   ///< The response arrived meanwhile: RESPONSE, read it.
  kLost,       ///< The slot is in no state this caller can explain (a broken peer): give it up.
};

/// Give up on the request published at `seq` (timeout, shutdown).
inline CancelOutcome Cancel(SlotHeader& h, uint32_t seq) noexcept {
  for (;;) {
    uint32_t cur = 0;
    if (Transition(h, SlotState::kRequest, seq, SlotState::kClaimed, seq, &cur)) return CancelOutcome::kWithdrawn;
    if (wire::CtlSeq(cur) != (seq & wire::kSeqMask)) return CancelOutcome::kLost;
    if (wire::CtlIs(cur, SlotState::kServing)) {
      if (Transition(h, SlotState::kServing, seq, SlotState::kAbandoned, seq, &cur)) {
        return CancelOutcome::kAbandoned;
      }
      continue;  // it moved on: look again
    }
    if (wire::CtlIs(cur, SlotState::kResponse)) return CancelOutcome::kAnswered;
    if (!wire::CtlIs(cur, SlotState::kRequest)) return CancelOutcome::kLost;
  }
}

/// SERVING(seq) -> CLAIMED(seq) after proving the server dead (gone, SPECIFICATION.md §2). The caller owns
/// the slot again; the request is answered with kPeerDead.
inline bool RecoverFromDeadServer(SlotHeader& h, uint32_t seq) noexcept {
  return Transition(h, SlotState::kServing, seq, SlotState::kClaimed, seq);
}

/// CLAIMED or RESPONSE (owned, at `seq`) -> FREE. false if the word was neither: a broken peer moved it.
inline bool Release(SlotHeader& h, uint32_t seq) noexcept {
  return Transition(h, SlotState::kClaimed, seq, SlotState::kFree, seq) ||
         Transition(h, SlotState::kResponse, seq, SlotState::kFree, seq);
}

/// ABANDONED -> FREE, for a caller that proved the server dead (nobody will ever finish it).
inline bool ReclaimAbandoned(SlotHeader& h) noexcept {
  uint32_t cur = h.ctl.load(std::memory_order_acquire);
  return wire::CtlIs(cur, SlotState::kAbandoned) &&
         Transition(h, SlotState::kAbandoned, wire::CtlSeq(cur), SlotState::kFree, wire::CtlSeq(cur));
}

/// T12: a slot the caller quarantined (a broken peer moved it) -> FREE, from the word `seen` (read before the
/// caller judged the server's liveness), with that word's seq. Unless `server_dead`, a SERVING or ABANDONED
/// slot is left alone: a live server may be serving it. A word other than `seen` (W aside) is left alone too:
/// it may belong to a server that came after the judgement. Returns whether the slot is FREE now.
inline bool ReclaimQuarantined(SlotHeader& h, uint32_t seen, bool server_dead) noexcept {
  if (wire::CtlIs(seen, SlotState::kFree)) return true;
  if (!server_dead && (wire::CtlIs(seen, SlotState::kServing) || wire::CtlIs(seen, SlotState::kAbandoned))) {
    return false;
  }
  uint32_t cur = h.ctl.load(std::memory_order_acquire);
  while ((cur & ~wire::kWaiting) == (seen & ~wire::kWaiting)) {
    if (h.ctl.compare_exchange_weak(cur, wire::MakeCtl(SlotState::kFree, wire::CtlSeq(cur)), std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      if (cur & wire::kWaiting) WakeSleepers(h, cur);
      return true;
    }
  }
  return false;
}

// ---- Server side -------------------------------------------------------------------------------------------

/// REQUEST(s) -> SERVING(s). On success this server owns the response buffer; *seq = s. Exactly one of any
/// number of competing servers succeeds.
inline bool TryTake(SlotHeader& h, uint32_t* seq) noexcept {
  uint32_t cur = h.ctl.load(std::memory_order_acquire);
  if (!wire::CtlIs(cur, SlotState::kRequest)) return false;
  if (!Transition(h, SlotState::kRequest, wire::CtlSeq(cur), SlotState::kServing, wire::CtlSeq(cur))) return false;
  *seq = wire::CtlSeq(cur);
  return true;
}

enum class CompleteOutcome {
  kDelivered,  ///< RESPONSE published.
  kDiscarded,  ///< The caller had abandoned it: the slot is FREE again and the response is dropped.
  kLost,       ///< The slot was taken from this server (its successor swept it): nothing to do.
};

/// SERVING(seq) -> RESPONSE(seq), or ABANDONED(seq) -> FREE. The response fields must be written. *woke: the
/// caller was asleep on the slot and has been woken.
inline CompleteOutcome Complete(SlotHeader& h, uint32_t seq, bool* woke = nullptr) noexcept {
  if (Transition(h, SlotState::kServing, seq, SlotState::kResponse, seq, nullptr, woke)) {
    return CompleteOutcome::kDelivered;
  }
  if (Transition(h, SlotState::kAbandoned, seq, SlotState::kFree, seq)) return CompleteOutcome::kDiscarded;
  return CompleteOutcome::kLost;
}

/// Write the response fields of an error answer. Only the owner of the response side may call it.
inline void WriteErrorResponse(SlotHeader& h, wire::WireError e) noexcept {
  h.resp_type.store(static_cast<uint32_t>(MsgType::SYSTEM_ERROR), std::memory_order_relaxed);
  h.resp_size.store(0, std::memory_order_relaxed);
  h.resp_error.store(static_cast<uint32_t>(e), std::memory_order_relaxed);
}

// ---- Recovery by a new guest ---------------------------------------------------------------------------------
// A guest that has just taken the guest seat knows every earlier guest is dead, so it inherits their roles.

/// Host slot (this guest is the server): a transaction the dead guest was serving is answered with
/// SYSTEM_ERROR kPeerRestarted (then it returns true); one it had abandoned is freed.
inline bool SweepAsNewServer(SlotHeader& h) noexcept {
  const uint32_t cur = h.ctl.load(std::memory_order_acquire);
  const uint32_t seq = wire::CtlSeq(cur);
  if (wire::CtlIs(cur, SlotState::kServing)) {
    WriteErrorResponse(h, wire::WireError::kPeerRestarted);
    (void)Complete(h, seq);
    return true;
  }
  if (wire::CtlIs(cur, SlotState::kAbandoned)) {
    (void)Transition(h, SlotState::kAbandoned, seq, SlotState::kFree, seq);
  }
  return false;
}

/// Guest slot (this guest is the caller): whatever the dead guest held is given back; a call the host is
/// serving is abandoned, so the host frees it when done.
inline void SweepAsNewCaller(SlotHeader& h) noexcept {
  const uint32_t cur = h.ctl.load(std::memory_order_acquire);
  const uint32_t seq = wire::CtlSeq(cur);
  switch (static_cast<SlotState>(wire::CtlState(cur))) {
    case SlotState::kClaimed:
    case SlotState::kResponse: Release(h, seq); break;
    case SlotState::kRequest: (void)Transition(h, SlotState::kRequest, seq, SlotState::kFree, seq); break;
    case SlotState::kServing: (void)Transition(h, SlotState::kServing, seq, SlotState::kAbandoned, seq); break;
    default: break;
  }
}

}  // namespace detail
}  // namespace shm

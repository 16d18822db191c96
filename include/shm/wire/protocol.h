// SPDX-License-Identifier: Apache-2.0
// shm wire protocol — message types, wire error codes, and the slot control word.
//
// This file and layout.h are the C++ rendering of SPECIFICATION.md; the document is normative. Any change to a
// value here is a protocol change and follows the version rule in SPECIFICATION.md §Versioning.
#pragma once

#include <cstdint>

namespace shm {

/// Type of a message, carried in the slot header next to the size. Values below 128 are reserved for the
/// protocol; applications use APP_START (128) and above. See IsUserRequestType / IsUserResponseType.
enum class MsgType : uint32_t {
  NORMAL = 0,          ///< Opaque bytes.
  HEARTBEAT_REQ = 1,   ///< Liveness probe; the serving runtime answers it, the handler never sees it.
  HEARTBEAT_RESP = 2,  ///< The answer to HEARTBEAT_REQ (size 0).
  SHUTDOWN = 3,        ///< Reserved: shutdown is signalled through the segment header, not as a message.
  CHUNK = 4,           ///< Runtime only: a piece of a message larger than the slot (SPECIFICATION.md §8.5).
  CHUNK_ACK = 5,       ///< Runtime only: a chunk of a large request was taken; send the next.
  CHUNK_NEXT = 6,      ///< Runtime only: asks for the next chunk of a large response.
  FLATBUFFER = 10,     ///< A FlatBuffer, usually end-aligned (negative size).
  GUEST_CALL = 11,     ///< A guest-to-host call.
  SYSTEM_ERROR = 127,  ///< A protocol-level error answer; the slot's resp_error holds a WireError.
  APP_START = 128,     ///< First application-defined type.
};

/// Whether a caller may send `t` as a request (NORMAL, HEARTBEAT_REQ, FLATBUFFER, GUEST_CALL, >= APP_START).
constexpr bool IsUserRequestType(MsgType t) noexcept {
  const uint32_t v = static_cast<uint32_t>(t);
  return t == MsgType::NORMAL || t == MsgType::HEARTBEAT_REQ || t == MsgType::FLATBUFFER || t == MsgType::GUEST_CALL ||
         v >= static_cast<uint32_t>(MsgType::APP_START);
}

/// Whether a handler may answer with `t` (NORMAL, FLATBUFFER, GUEST_CALL, >= APP_START).
constexpr bool IsUserResponseType(MsgType t) noexcept { return t != MsgType::HEARTBEAT_REQ && IsUserRequestType(t); }

namespace wire {

/// Error code carried in SlotHeader::resp_error when resp_type == SYSTEM_ERROR. Part of the wire protocol.
enum class WireError : uint32_t {
  kNone = 0,
  kRequestTooLarge = 1,   ///< The request size exceeds the slot's capacity (or is INT32_MIN).
  kResponseTooLarge = 2,  ///< The handler's response size exceeds the response capacity.
  kReservedType = 3,      ///< A reserved MsgType was used as a request or response type.
  kHandlerFailed = 4,     ///< The handler threw or reported failure.
  kShuttingDown = 5,      ///< The server is shutting down and did not run the handler.
  kNoHandler = 6,         ///< Nobody is registered to serve this kind of call.
  kPeerRestarted = 7,     ///< The server died while serving; its successor answered for it.
  kStreamInvalid = 8,     ///< A chunk of a large message broke the rules of SPECIFICATION.md §8.5.
  kTooManyTransfers = 9,  ///< The server already holds as many partial large requests as it allows.
};

/// Name of a wire error ("RequestTooLarge"); "Unknown" for values this version does not define.
inline const char* ToString(WireError e) noexcept {
  switch (e) {
    case WireError::kNone: return "None";
    case WireError::kRequestTooLarge: return "RequestTooLarge";
    case WireError::kResponseTooLarge: return "ResponseTooLarge";
    case WireError::kReservedType: return "ReservedType";
    case WireError::kHandlerFailed: return "HandlerFailed";
    case WireError::kShuttingDown: return "ShuttingDown";
    case WireError::kNoHandler: return "NoHandler";
    case WireError::kPeerRestarted: return "PeerRestarted";
    case WireError::kStreamInvalid: return "StreamInvalid";
    case WireError::kTooManyTransfers: return "TooManyTransfers";
  }
  return "Unknown";
}

// ---- The slot control word --------------------------------------------------------------------------------
// One 32-bit word per slot, the futex word for both sides:
//
//   31                                   8   7   6   5   4   3      0
//  +---------------------------------------+---+---+---+---+--------+
//  |            seq (24 bits)              | 0 | 0 | 0 | W |  state |
//  +---------------------------------------+---+---+---+---+--------+
//
// state: SlotState below. W (kWaiting): some thread sleeps, or is about to sleep, in FUTEX_WAIT on this word;
// whoever changes the word while W is set clears W and calls FUTEX_WAKE. seq: transaction number, incremented
// (mod 2^24) each time a request is published. Bits 5-7 are reserved and zero.

/// Slot states. The transition table is in SPECIFICATION.md §State machine and detail/slot.h.
enum class SlotState : uint32_t {
  kFree = 0,       ///< Nobody owns the slot.
  kClaimed = 1,    ///< The caller owns it and is writing a request (or holds it between calls).
  kRequest = 2,    ///< A request is published; a server may take it.
  kServing = 3,    ///< A server took the request and owns the response buffer.
  kResponse = 4,   ///< The response is published; the caller owns the slot again.
  kAbandoned = 5,  ///< The caller gave up while the server was serving; the server frees the slot.
};
constexpr uint32_t kStateCount = 6;  ///< Number of SlotState values; a state at or above it is a protocol error.

// The control word: bits 0-3 the SlotState, bit 4 kWaiting, bits 5-7 reserved (0), bits 8-31 the seq.
constexpr uint32_t kStateMask = 0x0Fu;        ///< The SlotState bits of a control word.
constexpr uint32_t kWaiting = 0x10u;          ///< Set in a control word while someone sleeps on it.
constexpr uint32_t kReservedCtlBits = 0xE0u;  ///< Must be 0 in a control word.
constexpr uint32_t kSeqShift = 8;             ///< Position of the seq in a control word.
constexpr uint32_t kSeqMask = 0x00FFFFFFu;    ///< The seq's bits, after shifting.

/// The state bits of control word `ctl` (may be an invalid state: check against kStateCount).
constexpr uint32_t CtlState(uint32_t ctl) noexcept { return ctl & kStateMask; }
/// The seq of control word `ctl`.
constexpr uint32_t CtlSeq(uint32_t ctl) noexcept { return ctl >> kSeqShift; }
/// A control word of state `s` and seq `seq` (truncated to 24 bits), kWaiting clear.
constexpr uint32_t MakeCtl(SlotState s, uint32_t seq) noexcept {
  return static_cast<uint32_t>(s) | ((seq & kSeqMask) << kSeqShift);
}
/// Whether control word `ctl` is in state `s`, whatever its kWaiting bit and seq.
constexpr bool CtlIs(uint32_t ctl, SlotState s) noexcept { return CtlState(ctl) == static_cast<uint32_t>(s); }
/// The seq after `seq`, wrapping within 24 bits.
constexpr uint32_t NextSeq(uint32_t seq) noexcept { return (seq + 1) & kSeqMask; }

// ---- The guest-call doorbell ------------------------------------------------------------------------------
// A 32-bit futex word in the segment header. bit 0: kWaiting (a host processor sleeps on it); bits 1-31: a
// counter that every guest caller increments (by 2) after publishing a request in a guest slot.
constexpr uint32_t kDoorbellWaiting = 0x1u;    ///< Doorbell bit 0: a host processor sleeps on the doorbell.
constexpr uint32_t kDoorbellIncrement = 0x2u;  ///< What a guest caller adds to the doorbell after publishing.

// ---- Host state word ---------------------------------------------------------------------------------------
/// SegmentHeader::host_state values.
enum class HostState : uint32_t {
  kRunning = 0,
  kShuttingDown = 1,  ///< SendShutdown() or Shutdown() was called: guest workers exit, new calls are refused.
};

}  // namespace wire
}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// The copying calls used by DirectHost::Send/SendToSlot/Call and DirectGuest::SendGuestCall/GuestCall: own a
// slot, copy the request in, call, copy the answer out, park or release the slot.
#pragma once

#include <cstring>
#include <memory>
#include <vector>

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/detail/endpoint.h"
#include "shm/detail/transfer_call.h"
#include "shm/transfer.h"

namespace shm {
namespace detail {

/// The slot this thread parked after its last copying call, and on which endpoint.
struct ParkedByThread {
  uint64_t endpoint = 0;  // Endpoint::id(); 0 = none
  uint32_t index = 0;
};
inline ParkedByThread& ThisThreadsParkedSlot() noexcept {
  thread_local ParkedByThread parked;
  return parked;
}

/// Own a slot for a call: `slot` < 0: any free slot of the caller's kind, the thread's parked slot first;
/// `slot` >= 0: that slot, parked or free. *seq gets the slot's seq.
inline Result<uint32_t> OwnSlotForCall(Endpoint& ep, int64_t slot, int64_t deadline, uint32_t* seq) {
  ParkedByThread& parked = ThisThreadsParkedSlot();
  if (ep.closing()) {
    // Free the slot a racing Park() left behind (Endpoint::Park), then fail as Call would.
    if (parked.endpoint == ep.id()) ep.ReleaseParked(parked.index);
    return Endpoint::ClosedError();
  }
  if (slot < 0 && parked.endpoint == ep.id() && ep.Unpark(parked.index, seq)) return parked.index;
  if (slot < 0) return ep.ClaimAny(deadline, seq);
  const auto index = static_cast<uint32_t>(slot);
  if (auto r = ep.ClaimOne(index, deadline, seq); !r) return std::move(r).error();
  return index;
}

/// After a call on slot `index`: park it for the thread's next call if it went well and is still owned
/// (Endpoint: parked slots), else free it if still owned.
inline void EndCall(Endpoint& ep, uint32_t index, uint32_t seq, bool owned, bool ok) {
  if (owned && ok) {
    ep.Park(index, seq);
    ThisThreadsParkedSlot() = ParkedByThread{ep.id(), index};
  } else if (owned) {
    ep.ReleaseOwned(index, seq);
  }
}

/// The answer limit of a call: its own, else the endpoint's.
inline uint64_t MaxResponse(Endpoint& ep, const CallOptions& options) {
  return options.max_response_size != 0 ? options.max_response_size : ep.transfers().limits().max_message_size;
}

/// A call of any size (SPECIFICATION.md §8.5): the request from `source`, the answer into `sink`. `slot` as in
/// OwnSlotForCall; after a successful call the slot is parked for the thread's next call.
inline Result<Received> MessageCall(Endpoint& ep, int64_t slot, const Source& source, MsgType type, const Sink& sink,
                                    const CallOptions& options) {
  if (!source.fill && source.size != 0) {
    return Error(ErrorCode::kInvalidArgs,
                 "the request's Source has no fill function for its " + std::to_string(source.size) + " bytes");
  }
  const uint32_t capacity = ep.capacity(ep.role());
  if (ep.slot_count(ep.role()) != 0) {
    if (!IsUserRequestType(type) || (type == MsgType::HEARTBEAT_REQ && source.size > capacity)) {
      return Endpoint::ReservedTypeError(type);
    }
    if (source.size > wire::kMaxMessageSize) {
      return Error(ErrorCode::kTooLarge, "a message of " + std::to_string(source.size) + " bytes exceeds the " +
                                             std::to_string(wire::kMaxMessageSize) + "-byte limit of a transfer");
    }
  }
  const int64_t deadline = ep.Deadline(options.timeout);
  uint32_t seq = 0;
  auto index = OwnSlotForCall(ep, slot, deadline, &seq);
  if (!index) return std::move(index).error();
  const SlotView s = ep.segment().Slot(*index);
  bool owned = true;
  const int64_t started = ep.CallClock();
  auto answer = SendMessage(ep, s, &seq, source, type, options.end_aligned, deadline, &owned, started);
  Result<Received> got =
      answer ? ReceiveMessage(ep, s, &seq, *answer, sink, MaxResponse(ep, options), deadline, &owned, started)
             : Result<Received>(std::move(answer).error());
  EndCall(ep, *index, seq, owned, static_cast<bool>(got));
  return got;
}

/// The copying call of DirectHost::Send and DirectGuest::SendGuestCall: `request` in, the answer's bytes into
/// `out` (resized). Requests and answers larger than the slot take MessageCall's transfer; the rest is one
/// transaction, with no more work than the wire needs.
inline Result<MsgType> CopyCall(Endpoint& ep, int64_t slot, Bytes request, MsgType type, std::vector<uint8_t>& out,
                                const CallOptions& options) {
  if (request.data() == nullptr && request.size() != 0) {
    return Error(ErrorCode::kInvalidArgs,
                 "request is a null pointer with a size of " + std::to_string(request.size()) + " bytes");
  }
  // What can never be sent is refused before claiming: at once, not after waiting for a slot. (Without slots
  // to call on, claiming says so.)
  const uint32_t capacity = ep.capacity(ep.role());
  if (ep.slot_count(ep.role()) != 0) {
    if (!IsUserRequestType(type)) return Endpoint::ReservedTypeError(type);
    if (request.size() > capacity) {
      auto got = MessageCall(ep, slot, Source::Of(request), type, Sink::Into(out), options);
      if (!got) return std::move(got).error();
      return got->type;
    }
  }
  const int64_t deadline = ep.Deadline(options.timeout);
  uint32_t seq = 0, index = 0;
  ParkedByThread& parked = ThisThreadsParkedSlot();
  if (slot < 0 && parked.endpoint == ep.id() && !ep.closing() && ep.Unpark(parked.index, &seq)) {
    index = parked.index;  // the thread's parked slot: publish at once
  } else {
    auto owned_slot = OwnSlotForCall(ep, slot, deadline, &seq);
    if (!owned_slot) return std::move(owned_slot).error();
    index = *owned_slot;
  }
  const SlotView s = ep.segment().Slot(index);
  const uint32_t n = static_cast<uint32_t>(request.size());
  const int32_t wire_size = options.end_aligned ? -static_cast<int32_t>(n) : static_cast<int32_t>(n);
  // Straight into the request's area: the header for a small one, else the buffer (SPECIFICATION.md §8.1).
  uint32_t length = 0;
  uint8_t* to = MessageBytes(*s.header, s.request, s.capacity, wire_size, &length);
  platform::CopyBytes(to, request.data(), n);
  bool owned = true;
  const int64_t started = ep.CallClock();
  auto answer = ep.Call(s, &seq, wire_size, type, deadline, &owned, started);
  if (answer && answer->type != MsgType::CHUNK && answer->type != MsgType::CHUNK_ACK &&
      (options.max_response_size == 0 || answer->length <= options.max_response_size)) {
    // The common case: one plain answer. A large one is copied with CopyBytes (memcpy is slow into a heap
    // block at some distances from the slot); resize() zeroes only what the vector did not have.
    if (answer->length > platform::kCopyLoopMin) {
      out.resize(answer->length);
      platform::CopyBytes(out.data(), answer->data, answer->length);
    } else {
      out.assign(answer->data, answer->data + answer->length);
    }
    if (owned) {
      ep.Park(index, seq);
      parked = ParkedByThread{ep.id(), index};
    }
    return answer->type;
  }
  if (!answer) {
    EndCall(ep, index, seq, owned, false);
    return std::move(answer).error();
  }
  // A large answer, or one to refuse: the transfer's caller side takes it.
  auto got = ReceiveMessage(ep, s, &seq, *answer, Sink::Into(out), MaxResponse(ep, options), deadline, &owned, started);
  EndCall(ep, index, seq, owned, static_cast<bool>(got));
  if (!got) return std::move(got).error();
  return got->type;
}

}  // namespace detail
}  // namespace shm

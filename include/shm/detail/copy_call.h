// SPDX-License-Identifier: Apache-2.0
// The copying call used by DirectHost::Send/SendToSlot and DirectGuest::SendGuestCall: claim, copy the request
// in, call, copy the answer out, release.
#pragma once

#include <cstring>
#include <memory>
#include <vector>

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/detail/endpoint.h"

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

/// `slot` < 0: any free slot of the caller's kind, the thread's parked slot first; `slot` >= 0: that slot,
/// parked or free. After a successful call the slot is parked for the thread's next call (Endpoint: parked
/// slots). The answer's bytes are copied into `out` (resized).
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
    if (request.size() > capacity) return Endpoint::TooLargeError(static_cast<int64_t>(request.size()), capacity);
    if (!IsUserRequestType(type)) return Endpoint::ReservedTypeError(type);
  }
  const int64_t deadline = ep.Deadline(options.timeout);
  uint32_t seq = 0, index = 0;
  ParkedByThread& parked = ThisThreadsParkedSlot();
  if (ep.closing()) {
    // Free the slot a racing Park() left behind (Endpoint::Park), then fail as Call would.
    if (parked.endpoint == ep.id()) ep.ReleaseParked(parked.index);
    return Endpoint::ClosedError();
  }
  if (slot < 0 && parked.endpoint == ep.id() && ep.Unpark(parked.index, &seq)) {
    index = parked.index;
  } else if (slot < 0) {
    auto claimed = ep.ClaimAny(deadline, &seq);
    if (!claimed) return std::move(claimed).error();
    index = *claimed;
  } else {
    index = static_cast<uint32_t>(slot);
    if (auto r = ep.ClaimOne(index, deadline, &seq); !r) return std::move(r).error();
  }
  const SlotView s = ep.segment().Slot(index);
  const uint32_t n = static_cast<uint32_t>(request.size());
  const int32_t wire_size = options.end_aligned ? -static_cast<int32_t>(n) : static_cast<int32_t>(n);
  // Straight into the request's area: the header for a small one, else the buffer (SPECIFICATION.md §8.1).
  uint32_t length = 0;
  uint8_t* to = MessageBytes(*s.header, s.request, s.capacity, wire_size, &length);
  if (n != 0) std::memcpy(to, request.data(), n);
  bool owned = true;
  auto answer = ep.Call(s, &seq, wire_size, type, deadline, &owned);
  if (answer) {
    out.assign(answer->data, answer->data + answer->length);
  }
  if (owned && answer) {
    ep.Park(index, seq);
    parked = ParkedByThread{ep.id(), index};
  } else if (owned) {
    ep.ReleaseOwned(index, seq);
  }
  if (!answer) return std::move(answer).error();
  return answer->type;
}

}  // namespace detail
}  // namespace shm

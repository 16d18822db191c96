// SPDX-License-Identifier: Apache-2.0
// shm — what a serving handler sees and returns. Shared by guest workers and host guest-call processors.
#pragma once

#include <cstdint>
#include <functional>

#include "shm/bytes.h"
#include "shm/wire/protocol.h"

namespace shm {

/// A request as a handler sees it: a view into shared memory (the slot's request buffer, or its header for a
/// request of at most 32 bytes, SPECIFICATION.md §8.1). The peer can still write those bytes: a handler
/// parses them as untrusted input (e.g. with a FlatBuffers Verifier). Valid only during the handler call.
struct Message {
  Bytes data;                      ///< The request payload (already placed: end-aligned payloads too).
  MsgType type = MsgType::NORMAL;  ///< The request's type, as the caller sent it.
  bool end_aligned = false;        ///< The wire size was negative (always false for an empty payload: -0 == 0).
  uint32_t slot = 0;               ///< Index of the slot it arrived on.
};

/// A handler's answer. The response bytes are already in the response buffer the handler was given.
struct Reply {
  /// Bytes written: positive = at the start of the response buffer, negative = the last |size| bytes
  /// (end-aligned, as a FlatBufferBuilder leaves them). |size| larger than the buffer is answered with
  /// SYSTEM_ERROR kResponseTooLarge, never truncated.
  int32_t size = 0;
  /// NORMAL, FLATBUFFER, GUEST_CALL or >= APP_START. Other reserved types are answered with SYSTEM_ERROR
  /// kReservedType.
  MsgType type = MsgType::NORMAL;

  /// A failure answer: the caller receives ErrorCode::kRemote with WireError::kHandlerFailed.
  static Reply Failure() noexcept { return Reply{0, MsgType::SYSTEM_ERROR}; }
};

/// Serves one request: reads `request`, writes at most response.size() bytes into `response`, returns the
/// Reply. May throw: the call is then answered with SYSTEM_ERROR kHandlerFailed and the worker goes on.
/// Built without exceptions (-fno-exceptions), the library catches nothing (there is nothing to throw) and
/// everything else works the same; a handler then fails a call by returning Reply::Failure().
/// Called concurrently from several worker threads (one per slot); must be thread-safe.
///
/// What a handler may call on the DirectGuest or DirectHost that runs it:
/// - Calls of its own: DirectGuest::SendGuestCall and AcquireGuestSlot (and the ZeroCopySlot it gets), on the
///   host Send, SendToSlot, GetZeroCopySlot, ReleaseParkedSlots, and every accessor. Such a call needs a free
///   slot of its own; one that waits for an answer only this very handler could give ends at its deadline.
/// - Ending the object: DirectGuest::Close, DirectHost::SendShutdown, Stop and Shutdown. They do not wait for
///   the calling handler's own worker (it is serving this call): it ends once the handler returns, and the
///   destructor, the next Start or a Close/Stop from another thread joins it. A guest's Close still waits for
///   its other workers' handlers, and keeps the guest lock until this handler's answer is delivered.
/// It must not destroy the object that runs it, call Connect, Init or Start on it (Start says kInvalidArgs),
/// or Wait for its workers (they include this one).
using Handler = std::function<Reply(const Message& request, MutableBytes response)>;

}  // namespace shm

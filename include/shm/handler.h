// SPDX-License-Identifier: Apache-2.0
// shm — what a serving handler sees and returns. Shared by guest workers and host guest-call processors.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "shm/bytes.h"
#include "shm/transfer.h"
#include "shm/wire/protocol.h"

namespace shm {

/// A request as a handler sees it: a view into shared memory (the slot's request buffer, or its header for a
/// request of at most 32 bytes, SPECIFICATION.md §8.1). The peer can still write those bytes: a handler
/// parses them as untrusted input (e.g. with a FlatBuffers Verifier). A request larger than the slot
/// (§8.5) arrives whole, in this process's memory (the library's, or TransferLimits::receive_buffer's): still
/// the peer's bytes, but no longer writable by it. Valid only during the handler call.
struct Message {
  Bytes data;                      ///< The request payload (already placed: end-aligned payloads too).
  MsgType type = MsgType::NORMAL;  ///< The request's type, as the caller sent it.
  bool end_aligned = false;        ///< The wire size was negative (always false for an empty payload: -0 == 0).
  uint32_t slot = 0;               ///< Index of the slot it arrived on.
};

/// A handler's answer. The response bytes are already in the response buffer the handler was given, or come
/// from `large`. Written as `Reply{size, type}`, `Reply::Failure()`, `Reply::Large(...)`, `Reply::Owned(...)`.
struct Reply {
  /// Bytes written: positive = at the start of the response buffer, negative = the last |size| bytes
  /// (end-aligned, as a FlatBufferBuilder leaves them). |size| larger than the buffer is answered with
  /// SYSTEM_ERROR kResponseTooLarge, never truncated.
  int32_t size = 0;
  /// NORMAL, FLATBUFFER, GUEST_CALL or >= APP_START. Other reserved types are answered with SYSTEM_ERROR
  /// kReservedType.
  MsgType type = MsgType::NORMAL;
  /// An answer of any size, produced by a Source instead of the response buffer (`size` is then ignored): one
  /// that fits the buffer is sent as usual, a larger one in chunks (SPECIFICATION.md §8.5), read from the
  /// Source while the caller fetches them, after the handler has returned. Set with Large or Owned.
  Source large{};  // (braces: aggregate initialisation that names only size and type stays warning-free)

  /// A failure answer: the caller receives ErrorCode::kRemote with WireError::kHandlerFailed.
  static Reply Failure() noexcept { return Reply{0, MsgType::SYSTEM_ERROR}; }
  /// An answer read from `source`, which must stay valid until the caller has fetched it all or the transfer
  /// ends (a Source that owns what it reads, such as Source::Owning, is the simple way).
  static Reply Large(Source source, MsgType type = MsgType::NORMAL) { return Reply{0, type, std::move(source)}; }
  /// An answer of the bytes `bytes`, kept by the library until they are sent.
  static Reply Owned(std::vector<uint8_t> bytes, MsgType type = MsgType::NORMAL) {
    return Large(Source::Owning(std::move(bytes)), type);
  }
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

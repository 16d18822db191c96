// SPDX-License-Identifier: Apache-2.0
// shm — typed errors and Result<T>.
//
// Every fallible call in the library returns a Result. No exception crosses the hot path; an Error carries a
// code to branch on and a message for people. A failure that the peer reported on the wire (a SYSTEM_ERROR
// answer) arrives as ErrorCode::kRemote with the wire code in Error::remote().
#pragma once

#include <cstdint>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "shm/wire/protocol.h"

namespace shm {

/// What went wrong, to branch on. Stable names; values are not part of the wire protocol.
enum class ErrorCode : uint32_t {
  kInvalidArgs = 1,        ///< A bad configuration or argument (the message names it).
  kHostAlreadyRunning,     ///< Another live host holds this name (the message names its pid).
  kGuestAlreadyConnected,  ///< Another live guest is attached to this segment.
  kNotFound,               ///< No segment of this name appeared before the deadline.
  kBadMagic,               ///< The file is not an shm segment.
  kVersionMismatch,        ///< The segment speaks another protocol version.
  kBadGeometry,            ///< The header describes an impossible layout.
  kTruncated,              ///< The file is smaller than its header claims.
  kTimeout,                ///< The deadline passed before the call ended.
  kNoFreeSlot,             ///< Every slot stayed busy until the deadline.
  kSlotBusy,               ///< The requested slot is held by someone else.
  kSlotLost,               ///< A zero-copy slot lost its slot (an earlier call timed out while served).
  kPeerDead,               ///< The guest serving this call died.
  kHostGone,               ///< The host died or removed the segment.
  kShuttingDown,           ///< The host is shutting down: SendShutdown() was called (on the host: not yet
                           ///< followed by its own Shutdown()).
  kClosed,                 ///< Not initialised or connected, or this side's own Shutdown()/Close() has run
                           ///< (calls in flight then end with it too).
  kRemote,                 ///< The peer answered SYSTEM_ERROR; see Error::remote().
  kProtocol,               ///< The peer broke the protocol (impossible size, state or type).
  kTooLarge,               ///< A size exceeds the slot's capacity (checked locally, before sending).
  kBufferTooSmall,         ///< A caller-provided buffer cannot hold the data.
  kPermissionDenied,       ///< The segment exists but this user may not open it (its mode excludes us).
  kSystem,                 ///< A system call failed; see Error::sys_errno().
};

/// Human-readable name of an ErrorCode ("Timeout", ...). Never allocates. Thread-safe.
inline const char* ToString(ErrorCode c) noexcept {
  switch (c) {
    case ErrorCode::kInvalidArgs: return "InvalidArgs";
    case ErrorCode::kHostAlreadyRunning: return "HostAlreadyRunning";
    case ErrorCode::kGuestAlreadyConnected: return "GuestAlreadyConnected";
    case ErrorCode::kNotFound: return "NotFound";
    case ErrorCode::kBadMagic: return "BadMagic";
    case ErrorCode::kVersionMismatch: return "VersionMismatch";
    case ErrorCode::kBadGeometry: return "BadGeometry";
    case ErrorCode::kTruncated: return "Truncated";
    case ErrorCode::kTimeout: return "Timeout";
    case ErrorCode::kNoFreeSlot: return "NoFreeSlot";
    case ErrorCode::kSlotBusy: return "SlotBusy";
    case ErrorCode::kSlotLost: return "SlotLost";
    case ErrorCode::kPeerDead: return "PeerDead";
    case ErrorCode::kHostGone: return "HostGone";
    case ErrorCode::kShuttingDown: return "ShuttingDown";
    case ErrorCode::kClosed: return "Closed";
    case ErrorCode::kRemote: return "Remote";
    case ErrorCode::kProtocol: return "Protocol";
    case ErrorCode::kTooLarge: return "TooLarge";
    case ErrorCode::kBufferTooSmall: return "BufferTooSmall";
    case ErrorCode::kPermissionDenied: return "PermissionDenied";
    case ErrorCode::kSystem: return "System";
  }
  return "Unknown";
}

/// An error: a code, a message, and for kRemote the wire code the peer sent, for kSystem the errno.
/// Value type; copying allocates (the message). Not for the hot success path, which never builds one.
class Error {
 public:
  /// An error with `code` and `message`; `remote` only with kRemote, `sys_errno` only with kSystem.
  Error(ErrorCode code, std::string message, wire::WireError remote = wire::WireError::kNone, int sys_errno = 0)
      : code_(code), remote_(remote), errno_(sys_errno), message_(std::move(message)) {}

  /// What went wrong, to branch on.
  ErrorCode code() const noexcept { return code_; }
  /// The peer's wire error code; kNone unless code() == kRemote.
  wire::WireError remote() const noexcept { return remote_; }
  /// The errno of the failed system call; 0 unless code() == kSystem.
  int sys_errno() const noexcept { return errno_; }
  /// What happened, for people (names the argument, slot or peer involved). Not stable: do not parse it.
  const std::string& message() const noexcept { return message_; }
  /// "Timeout: call on slot 2 did not finish within 1000 ms".
  std::string ToString() const { return std::string(shm::ToString(code_)) + ": " + message_; }

 private:
  ErrorCode code_;
  wire::WireError remote_;
  int errno_;
  std::string message_;
};

/// Either a value of type T or an Error. Check ok() (or operator bool) before value().
/// Value type; thread-compatible (like any value: no internal synchronisation).
template <typename T>
class [[nodiscard]] Result {
 public:
  /// A success holding `value`.
  Result(T value) : ok_(true) { new (&storage_.value) T(std::move(value)); }  // NOLINT: implicit by design
  /// A failure holding `error`.
  Result(Error error) : ok_(false) { new (&storage_.error) Error(std::move(error)); }  // NOLINT
  /// Copies o's value or error.
  Result(const Result& o) : ok_(o.ok_) {
    if (ok_)
      new (&storage_.value) T(o.storage_.value);
    else
      new (&storage_.error) Error(o.storage_.error);
  }
  /// Moves o's value or error; o stays a result of the same kind, its content moved from.
  Result(Result&& o) noexcept(std::is_nothrow_move_constructible<T>::value) : ok_(o.ok_) {
    if (ok_)
      new (&storage_.value) T(std::move(o.storage_.value));
    else
      new (&storage_.error) Error(std::move(o.storage_.error));
  }
  /// Replaces this result's content with o's.
  Result& operator=(Result o) {
    this->~Result();
    new (this) Result(std::move(o));
    return *this;
  }
  ~Result() {
    if (ok_)
      storage_.value.~T();
    else
      storage_.error.~Error();
  }

  /// Whether this holds a value (true) or an error (false).
  bool ok() const noexcept { return ok_; }
  /// The same as ok().
  explicit operator bool() const noexcept { return ok_; }
  /// The value. Precondition: ok() (not checked).
  T& value() & { return storage_.value; }
  /// The value. Precondition: ok() (not checked).
  const T& value() const& { return storage_.value; }
  /// The value, to move out. Precondition: ok() (not checked).
  T&& value() && { return std::move(storage_.value); }
  /// Member access to the value. Precondition: ok() (not checked).
  T* operator->() { return &storage_.value; }
  /// Member access to the value. Precondition: ok() (not checked).
  const T* operator->() const { return &storage_.value; }
  /// The value. Precondition: ok() (not checked).
  T& operator*() & { return storage_.value; }
  /// The value. Precondition: ok() (not checked).
  const T& operator*() const& { return storage_.value; }
  /// The error. Precondition: !ok() (not checked).
  const Error& error() const& { return storage_.error; }
  /// The error, to move out (`return std::move(r).error();`). Precondition: !ok() (not checked).
  Error&& error() && { return std::move(storage_.error); }

 private:
  union Storage {
    Storage() {}
    ~Storage() {}
    T value;
    Error error;
  } storage_;
  bool ok_;
};

/// Result of a call that returns nothing on success.
template <>
class [[nodiscard]] Result<void> {
 public:
  /// A success (what Ok() returns).
  Result() = default;
  /// A failure holding `error`.
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  /// Whether the call succeeded.
  bool ok() const noexcept { return ok_; }
  /// The same as ok().
  explicit operator bool() const noexcept { return ok_; }
  /// The error. Precondition: !ok() (not checked).
  const Error& error() const& { return error_; }
  /// The error, to move out (`return std::move(r).error();`). Precondition: !ok() (not checked).
  Error&& error() && { return std::move(error_); }

 private:
  Error error_{ErrorCode::kInvalidArgs, ""};  // unused when ok_
  bool ok_ = true;
};

/// Success value for Result<void>.
inline Result<void> Ok() { return {}; }

}  // namespace shm

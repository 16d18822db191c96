// SPDX-License-Identifier: Apache-2.0
// shm — configuration of hosts and guests, and its validation.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "shm/bytes.h"
#include "shm/error.h"
#include "shm/platform/platform.h"
#include "shm/wire/counters.h"
#include "shm/wire/layout.h"

namespace shm {

/// A duration for deadlines. kUseDefault (negative) means "the configured default_timeout".
using Duration = std::chrono::nanoseconds;
constexpr Duration kUseDefault{-1};  ///< "Use the configured default_timeout" (see Duration).

/// Per-call options. Aggregate: `host.Send(data, type, out, {std::chrono::milliseconds(5)})`.
struct CallOptions {
  Duration timeout = kUseDefault;  ///< How long the whole call may take, slot acquisition included.
  bool end_aligned = false;        ///< Place the request at the end of the slot buffer (negative wire size).
  /// The largest answer this call accepts (kTooLarge beyond it); 0 = the configured
  /// TransferLimits::max_message_size.
  uint64_t max_response_size = 0;
};

/// What one side accepts of messages larger than a slot (SPECIFICATION.md §8.5): the bound on the memory a
/// peer can make it hold. Plain value.
struct TransferLimits {
  /// The largest large request this side's servers assemble (RequestTooLarge beyond it), and the default
  /// largest answer its calls accept. At most 2^40.
  uint64_t max_message_size = uint64_t{1} << 30;
  /// Partial large requests this side's servers hold at once (TooManyTransfers beyond). At most one per
  /// slot is possible anyway; the memory a peer can pin is at most max_transfers × max_message_size.
  uint32_t max_transfers = 16;
  /// A transfer (an incoming request, or an answer the caller stopped fetching) with no chunk for this long
  /// is dropped and its memory freed.
  Duration idle_timeout = std::chrono::seconds(30);
  /// Optional: memory for a large request of `size` bytes and `type` arriving on `slot`, instead of the
  /// library's own (never zeroed either way). A view shorter than `size` means "use the library's". The
  /// memory must stay valid until the handler for that request returns. Called on a serving thread; one that
  /// throws answers the call SYSTEM_ERROR HandlerFailed.
  std::function<MutableBytes(uint64_t size, MsgType type, uint32_t slot)> receive_buffer{};
};

/// Configuration of a DirectHost. Plain value.
struct HostConfig {
  /// Segment name: 1-100 characters of [A-Za-z0-9._-], not "." or "..". Guests find the host by it (on Linux
  /// the abstract Unix socket "\0shm/<name>"; no file is created).
  std::string name;
  /// Host-to-guest slots: how many host calls can be in flight at once. One guest worker serves each.
  uint32_t host_slots = 4;
  /// Guest-to-host slots (0 disables guest calls).
  uint32_t guest_slots = 2;
  /// Capacity in bytes of each host slot's request buffer and of its response buffer. At least 64; rounded
  /// up to a multiple of 64.
  uint32_t payload_size = 64 * 1024;
  /// Same for guest slots. Independent of payload_size: a host that sizes its own slots for large requests
  /// does not multiply that by guest_slots unless it asks to. 0 means "the same as payload_size".
  uint32_t guest_payload_size = 64 * 1024;
  /// Who may attach, as permission bits of owner / group / other: a guest needs read and write in its class,
  /// an observer (a read-only tool) read. 0600: only this user (and root). 0660 lets `group` attach too.
  uint32_t mode = 0600;
  /// The group the group bits of `mode` admit (a guest whose primary or supplementary group it is).
  /// kOwnGroup: the host's effective group.
  static constexpr uint32_t kOwnGroup = 0xFFFFFFFFu;
  uint32_t group = kOwnGroup;  ///< A group id, or kOwnGroup.
  /// Deadline of a call whose CallOptions say kUseDefault.
  Duration default_timeout = std::chrono::seconds(10);
  /// Keep a histogram of the latency of this host's successful calls, for Stats().latency. Off by default:
  /// it costs two clock reads and a few atomic operations per call.
  bool latency_histogram = false;
  /// Messages larger than a slot: what the host's guest-call servers accept, and its calls' answer limit.
  TransferLimits transfers{};
};

/// Configuration of a DirectGuest. Plain value.
struct GuestConfig {
  std::string name;                                         ///< The host's segment name.
  Duration connect_timeout = std::chrono::seconds(10);      ///< How long Connect waits for the host to appear.
  Duration retry_interval = std::chrono::milliseconds(10);  ///< Pause between Connect attempts.
  Duration default_timeout = std::chrono::seconds(10);      ///< Deadline of guest calls using kUseDefault.
  /// When the host dies, keep serving: attach to the next host that takes the name (retrying every
  /// retry_interval until Close()) and restart the workers with the same handler. A host's SendShutdown still
  /// ends the workers for good.
  bool reconnect = false;
  /// Keep a histogram of the latency of this guest's successful guest calls, for Stats().latency. Off by
  /// default: it costs two clock reads and a few atomic operations per call.
  bool latency_histogram = false;
  /// Messages larger than a slot: what the guest's workers accept, and its guest calls' answer limit.
  TransferLimits transfers{};
};

/// Check a segment name. Thread-safe.
inline Result<void> ValidateName(std::string_view name) {
  if (name.empty()) return Error(ErrorCode::kInvalidArgs, "segment name is empty");
  if (name.size() > platform::kMaxNameLength) {
    return Error(ErrorCode::kInvalidArgs, "segment name is " + std::to_string(name.size()) +
                                              " characters; the limit is " + std::to_string(platform::kMaxNameLength));
  }
  if (name == "." || name == "..") return Error(ErrorCode::kInvalidArgs, "segment name cannot be '.' or '..'");
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) {
      return Error(ErrorCode::kInvalidArgs,
                   "segment name '" + std::string(name) + "' has a character outside [A-Za-z0-9._-]");
    }
  }
  return Ok();
}

/// Check that a timeout `d` is positive; kInvalidArgs naming `what` otherwise. Thread-safe.
inline Result<void> ValidateTimeout(Duration d, const char* what) {
  if (d <= Duration::zero()) return Error(ErrorCode::kInvalidArgs, std::string(what) + " must be positive");
  return Ok();
}

/// Check the limits on large messages; kInvalidArgs naming the field otherwise. Thread-safe.
inline Result<void> ValidateTransferLimits(const TransferLimits& t) {
  if (t.max_message_size == 0 || t.max_message_size > wire::kMaxMessageSize) {
    return Error(ErrorCode::kInvalidArgs, "transfers.max_message_size is " + std::to_string(t.max_message_size) +
                                              "; it must be 1.." + std::to_string(wire::kMaxMessageSize));
  }
  if (t.max_transfers == 0) return Error(ErrorCode::kInvalidArgs, "transfers.max_transfers is 0; it must be >= 1");
  return ValidateTimeout(t.idle_timeout, "transfers.idle_timeout");
}

/// Check a host configuration and derive the segment geometry. Every failure is kInvalidArgs with a message
/// naming the field. Thread-safe.
inline Result<wire::Geometry> ValidateHostConfig(const HostConfig& c) {
  if (auto r = ValidateName(c.name); !r) return std::move(r).error();
  if (auto r = ValidateTransferLimits(c.transfers); !r) return std::move(r).error();
  if (auto r = ValidateTimeout(c.default_timeout, "default_timeout"); !r) return std::move(r).error();
  auto bad = [](const std::string& m) { return Error(ErrorCode::kInvalidArgs, m); };
  if (c.host_slots == 0) return bad("host_slots is 0; a host needs at least one slot");
  if (c.host_slots > wire::kMaxSlots) {
    return bad("host_slots is " + std::to_string(c.host_slots) + "; the limit is " + std::to_string(wire::kMaxSlots));
  }
  if (c.guest_slots > wire::kMaxSlots) {
    return bad("guest_slots is " + std::to_string(c.guest_slots) + "; the limit is " + std::to_string(wire::kMaxSlots));
  }
  auto payload = [&](uint32_t v, const char* field) -> Result<uint32_t> {
    if (v < wire::kMinPayload) {
      return bad(std::string(field) + " is " + std::to_string(v) + " bytes; the minimum is " +
                 std::to_string(wire::kMinPayload));
    }
    if (v > wire::kMaxPayload) {
      return bad(std::string(field) + " is " + std::to_string(v) + " bytes; the maximum is " +
                 std::to_string(wire::kMaxPayload));
    }
    return static_cast<uint32_t>(wire::AlignUp(v, wire::kPayloadAlign));
  };
  wire::Geometry g;
  g.host_slots = c.host_slots;
  g.guest_slots = c.guest_slots;
  auto hp = payload(c.payload_size, "payload_size");
  if (!hp) return std::move(hp).error();
  g.host_payload = *hp;
  if (c.guest_slots > 0) {
    auto gp = payload(c.guest_payload_size == 0 ? c.payload_size : c.guest_payload_size, "guest_payload_size");
    if (!gp) return std::move(gp).error();
    g.guest_payload = *gp;
  }
  if (c.mode > 0777 || (c.mode & 0600) != 0600) {
    return bad("mode must be permission bits within 0777 that include owner read-write (0600)");
  }
  const uint64_t size = wire::SegmentSize(g) + wire::CountersSize(g);  // the memfd: segment, then counters
  if (size > wire::kMaxSegmentSize) {
    return bad("host_slots x payload_size (+ guest_slots x guest_payload_size) makes a segment of " +
               std::to_string(size) + " bytes; the limit is " + std::to_string(wire::kMaxSegmentSize));
  }
  // The segment's pages are reserved at creation: more than the memory still available would push the
  // machine into reclaim, or the cgroup into its OOM killer.
  const uint64_t available = platform::MemoryAvailable();
  if (size > available) {
    return bad("host_slots x payload_size (+ guest_slots x guest_payload_size) makes a segment of " +
               std::to_string(size) + " bytes but only " + std::to_string(available) +
               " bytes of memory are available (MemAvailable and the cgroup limit)");
  }
  return g;
}

}  // namespace shm

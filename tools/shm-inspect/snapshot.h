// SPDX-License-Identifier: Apache-2.0
// shm-inspect's model of a segment: one read of every field of a mapped segment (or of any bytes claiming to
// be one), validated, into plain values. Portable: no system call, no OS header. The memory is hostile input
// (a live peer may be writing it, or anyone may have forged it): every field is loaded exactly once, and
// nothing read is used as an offset or a count before it was checked against the size of the memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shm/detail/segment.h"
#include "shm/wire/counters.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"

namespace shm_inspect {

namespace wire = shm::wire;

/// One slot as read: its header fields, and both sides' counter blocks (zero without a counters region).
struct SlotInfo {
  uint32_t index = 0;
  bool host_slot = true;  ///< A host slot (host calls, guest serves); else a guest slot.
  uint32_t ctl = 0;
  uint32_t req_type = 0;
  int32_t req_size = 0;
  uint32_t resp_type = 0;
  int32_t resp_size = 0;
  uint32_t resp_error = 0;
  uint64_t wake_stamp_ns = 0;
  uint64_t host_block[wire::kCountersPerBlock] = {};
  uint64_t guest_block[wire::kCountersPerBlock] = {};

  uint32_t state() const noexcept { return wire::CtlState(ctl); }
  uint32_t seq() const noexcept { return wire::CtlSeq(ctl); }
  bool waiting() const noexcept { return (ctl & wire::kWaiting) != 0; }
  /// The block of the side that calls on this slot, and of the side that serves it.
  const uint64_t* caller_block() const noexcept { return host_slot ? host_block : guest_block; }
  const uint64_t* server_block() const noexcept { return host_slot ? guest_block : host_block; }
};

/// Everything shm-inspect knows of a segment at one moment.
struct Snapshot {
  uint64_t size = 0;        ///< Bytes of memory that were readable (the memfd's size).
  bool header_ok = false;   ///< The header passed the attach validation (SPECIFICATION.md §4.2 step 5).
  std::string error;        ///< Why not, when !header_ok.
  uint64_t magic = 0;       ///< As read (also when invalid), if the memory holds at least 8 bytes.
  uint32_t version = 0;     ///< As read, if the memory holds at least 12 bytes.
  wire::Geometry geometry;  ///< Valid only with header_ok.
  uint64_t total_size = 0;
  uint32_t host_state = 0;
  uint32_t host_pid = 0;
  uint32_t guest_pid = 0;
  uint32_t guest_session = 0;
  uint32_t doorbell = 0;
  bool counters = false;  ///< A counters region of a known version follows the segment.
  uint32_t counters_version = 0;
  uint64_t host_since_ns = 0;
  uint64_t guest_since_ns = 0;
  uint32_t guest_attached = 0;  ///< The host's view of the guest seat (counters header), if counters.
  std::vector<SlotInfo> slots;  ///< Every slot, host slots first; empty unless header_ok.
};

namespace internal {
// Loads of shared memory: 32/64-bit atomic loads at natural alignment, as the protocol requires of every
// field. The caller checks that [off, off + width) lies within the memory and that `base` is 8-byte aligned.
inline uint32_t Load32(const uint8_t* base, uint64_t off) noexcept {
  return __atomic_load_n(reinterpret_cast<const uint32_t*>(base + off), __ATOMIC_RELAXED);
}
inline uint64_t Load64(const uint8_t* base, uint64_t off) noexcept {
  return __atomic_load_n(reinterpret_cast<const uint64_t*>(base + off), __ATOMIC_RELAXED);
}
// A copy of n bytes at off (n a multiple of 4, within the memory), word by word.
inline void Copy(const uint8_t* base, uint64_t off, uint8_t* out, size_t n) noexcept {
  for (size_t i = 0; i < n; i += 4) {
    const uint32_t w = Load32(base, off + i);
    std::memcpy(out + i, &w, 4);
  }
}
}  // namespace internal

/// Read the segment in `mem` (`size` bytes, 8-byte aligned; a mapping is page-aligned). Never reads outside
/// [mem, mem + size), whatever the bytes say; never writes.
inline Snapshot Parse(const uint8_t* mem, uint64_t size) {
  using internal::Load32;
  using internal::Load64;
  Snapshot s;
  s.size = size;
  if (mem == nullptr) size = s.size = 0;
  if (size >= 8) s.magic = Load64(mem, 0);
  if (size >= 12) s.version = Load32(mem, 8);
  // The header: copied once, validated as a guest would, then only the copy is used.
  uint8_t header[wire::kSegmentHeaderSize] = {};
  const size_t have = size < sizeof header ? static_cast<size_t>(size) / 4 * 4 : sizeof header;
  internal::Copy(mem, 0, header, have);
  auto g = shm::detail::ValidateHeader(header, have, size);
  if (!g) {
    s.error = g.error().message();
    return s;
  }
  s.header_ok = true;
  s.geometry = *g;
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, header + off, 4);
    return v;
  };
  s.total_size = wire::SegmentSize(s.geometry);
  s.host_state = u32(offsetof(wire::SegmentHeader, host_state));
  s.host_pid = u32(offsetof(wire::SegmentHeader, host_pid));
  s.guest_pid = u32(offsetof(wire::SegmentHeader, guest_pid));
  s.guest_session = u32(offsetof(wire::SegmentHeader, guest_session));
  s.doorbell = u32(offsetof(wire::SegmentHeader, doorbell));

  // The counters region: its header copied once and checked; then it lies within the memory.
  uint8_t counters[wire::kCountersHeaderSize] = {};
  if (size >= s.total_size + sizeof counters) internal::Copy(mem, s.total_size, counters, sizeof counters);
  s.counters = shm::detail::CountersPresent(counters, sizeof counters, s.geometry, size);
  if (s.counters) {
    std::memcpy(&s.counters_version, counters + offsetof(wire::CountersHeader, version), 4);
    std::memcpy(&s.host_since_ns, counters + offsetof(wire::CountersHeader, host_since_ns), 8);
    std::memcpy(&s.guest_since_ns, counters + offsetof(wire::CountersHeader, guest_since_ns), 8);
    std::memcpy(&s.guest_attached, counters + offsetof(wire::CountersHeader, guest_attached), 4);
  }

  // The slots: the validated geometry guarantees the slot headers (and, with counters, the blocks) lie
  // within the memory (total_size <= size was checked).
  const uint32_t n = s.geometry.host_slots + s.geometry.guest_slots;
  s.slots.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    SlotInfo& slot = s.slots[i];
    const uint64_t at = wire::kSegmentHeaderSize + uint64_t{wire::kSlotHeaderSize} * i;
    slot.index = i;
    slot.host_slot = i < s.geometry.host_slots;
    slot.ctl = Load32(mem, at + offsetof(wire::SlotHeader, ctl));
    slot.req_type = Load32(mem, at + offsetof(wire::SlotHeader, req_type));
    slot.req_size = static_cast<int32_t>(Load32(mem, at + offsetof(wire::SlotHeader, req_size)));
    slot.resp_type = Load32(mem, at + offsetof(wire::SlotHeader, resp_type));
    slot.resp_size = static_cast<int32_t>(Load32(mem, at + offsetof(wire::SlotHeader, resp_size)));
    slot.resp_error = Load32(mem, at + offsetof(wire::SlotHeader, resp_error));
    slot.wake_stamp_ns = Load64(mem, at + offsetof(wire::SlotHeader, wake_stamp_ns));
    if (!s.counters) continue;
    const uint64_t hb = wire::HostBlockOffset(s.geometry, i), gb = wire::GuestBlockOffset(s.geometry, i);
    for (uint32_t c = 0; c < wire::kCountersPerBlock; ++c) {
      slot.host_block[c] = Load64(mem, hb + 8ull * c);
      slot.guest_block[c] = Load64(mem, gb + 8ull * c);
    }
  }
  return s;
}

/// Name of a slot state ("FREE"), or "INVALID(n)" for a value §6 does not define.
inline std::string StateName(uint32_t state) {
  static const char* const kNames[] = {"FREE", "CLAIMED", "REQUEST", "SERVING", "RESPONSE", "ABANDONED"};
  if (state < wire::kStateCount) return kNames[state];
  return "INVALID(" + std::to_string(state) + ")";
}

/// Name of a message type ("NORMAL", "APP+5" for 133, "RESERVED(9)").
inline std::string TypeName(uint32_t t) {
  switch (static_cast<shm::MsgType>(t)) {
    case shm::MsgType::NORMAL: return "NORMAL";
    case shm::MsgType::HEARTBEAT_REQ: return "HEARTBEAT_REQ";
    case shm::MsgType::HEARTBEAT_RESP: return "HEARTBEAT_RESP";
    case shm::MsgType::SHUTDOWN: return "SHUTDOWN";
    case shm::MsgType::FLATBUFFER: return "FLATBUFFER";
    case shm::MsgType::GUEST_CALL: return "GUEST_CALL";
    case shm::MsgType::SYSTEM_ERROR: return "SYSTEM_ERROR";
    default: break;
  }
  if (t >= static_cast<uint32_t>(shm::MsgType::APP_START)) {
    return "APP+" + std::to_string(t - static_cast<uint32_t>(shm::MsgType::APP_START));
  }
  return "RESERVED(" + std::to_string(t) + ")";
}

/// Who holds a slot in its current state (SPECIFICATION.md §6, Ownership): "nobody", "caller", "server",
/// "queued" (a request no server took yet), or "invalid". With the roles named: the host calls on host
/// slots, the guest on guest slots.
inline std::string Holder(const SlotInfo& s) {
  switch (s.state()) {
    case 0: return "nobody";
    case 1: return "caller";
    case 2: return "queued";
    case 3: return "server";
    case 4: return "caller";
    case 5: return "server";
    default: return "invalid";
  }
}

/// Which process that is: "host", "guest", or "" for nobody.
inline std::string HolderSide(const SlotInfo& s) {
  const std::string h = Holder(s);
  if (h == "caller") return s.host_slot ? "host" : "guest";
  if (h == "server") return s.host_slot ? "guest" : "host";
  return "";
}

/// Counters of one direction (host to guest: the host slots; guest to host: the guest slots), summed over
/// its slots: what the caller counted, and what the server counted.
struct Direction {
  uint64_t caller[wire::kCountersPerBlock] = {};
  uint64_t server[wire::kCountersPerBlock] = {};
  uint64_t caller_errors() const noexcept {
    uint64_t n = 0;
    for (uint32_t i = wire::kTimeouts; i <= wire::kEnded; ++i) n += caller[i];
    for (uint32_t i = wire::kRemoteBase; i < wire::kCountersPerBlock; ++i) n += caller[i];
    return n;
  }
  uint64_t remote_errors() const noexcept {
    uint64_t n = 0;
    for (uint32_t i = wire::kRemoteBase; i < wire::kCountersPerBlock; ++i) n += caller[i];
    return n;
  }
  uint64_t answered_errors() const noexcept {
    uint64_t n = 0;
    for (uint32_t i = wire::kAnsweredBase + 1; i < wire::kCountersPerBlock; ++i) n += server[i];
    return n;
  }
};

/// The two directions' sums; wrapping adds (a hostile peer may write anything into its blocks).
inline Direction SumDirection(const Snapshot& s, bool host_slots) {
  Direction d;
  for (const SlotInfo& slot : s.slots) {
    if (slot.host_slot != host_slots) continue;
    for (uint32_t c = 0; c < wire::kCountersPerBlock; ++c) {
      d.caller[c] += slot.caller_block()[c];
      d.server[c] += slot.server_block()[c];
    }
  }
  return d;
}

}  // namespace shm_inspect

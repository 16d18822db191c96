// SPDX-License-Identifier: Apache-2.0
// shm counters region — the per-slot statistics each side keeps after the segment. Normative text:
// SPECIFICATION.md §5.4. Versioned by kCountersVersion, independently of wire::kVersion.
//
// memfd = segment (total_size bytes) | CountersHeader (128 B) | host blocks x (H+G) | guest blocks x (H+G) | pad
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "shm/wire/layout.h"

namespace shm {
namespace wire {

/// Counters layout version. Changes when the region's layout or a counter's meaning changes; wire::kVersion
/// does not change with it (SPECIFICATION.md §13).
constexpr uint32_t kCountersVersion = 1;
/// "SHMCNT01" read as a little-endian u64.
constexpr uint64_t kCountersMagic = 0x3130544E434D4853ull;
constexpr uint32_t kCountersHeaderSize = 128;  ///< sizeof(CountersHeader).
constexpr uint32_t kCounterBlockSize = 128;    ///< sizeof(CounterBlock): two cache lines.
constexpr uint32_t kCountersPerBlock = 16;     ///< u64 counters in a block.

/// Counters of a caller block (the host's block of a host slot, the guest's block of a guest slot).
enum CallerCounter : uint32_t {
  kCalls = 0,          ///< calls that ended with an accepted answer
  kCallBytesOut = 1,   ///< request bytes of every published request
  kCallBytesIn = 2,    ///< response bytes of the accepted answers
  kTimeouts = 3,       ///< calls that ended at their deadline
  kPeerDead = 4,       ///< calls that ended because the server died (host gone, for a guest)
  kProtocol = 5,       ///< calls that ended with a protocol violation by the peer
  kEnded = 6,          ///< calls ended by the host's shutdown or the caller's close
  kRemoteUnknown = 8,  ///< SYSTEM_ERROR answers with a WireError this version does not define
  kRemoteBase = 8,     ///< SYSTEM_ERROR answers with WireError e (1..7) at kRemoteBase + e
};

/// Counters of a server block (the guest's block of a host slot, the host's block of a guest slot).
enum ServerCounter : uint32_t {
  kServed = 0,         ///< requests taken and finished (late and lost ones included)
  kServeBytesIn = 1,   ///< request bytes handed to the handler
  kServeBytesOut = 2,  ///< response bytes written
  kLate = 3,           ///< answers discarded: the caller had abandoned the request (T7)
  kLost = 4,           ///< answers dropped: the slot had been taken from this server
  kHeartbeats = 5,     ///< HEARTBEAT_REQ answered by the runtime
  kAnsweredBase = 8,   ///< SYSTEM_ERROR answers sent with WireError e (1..7) at kAnsweredBase + e
};

/// The highest WireError value a block counts by name; others go to kRemoteUnknown.
constexpr uint32_t kCountedWireErrors = 7;

/// The header of the counters region, 128 bytes at offset total_size. Bytes 0..63 are the host's (written
/// before the segment's magic), bytes 64..127 the guest's.
struct CountersHeader {
  A64 magic;              ///< kCountersMagic
  A32 version;            ///< kCountersVersion
  A32 header_size;        ///< kCountersHeaderSize
  A32 block_size;         ///< kCounterBlockSize
  A32 slot_count;         ///< host_slots + guest_slots
  A64 counters_size;      ///< CountersSize(geometry)
  A64 host_since_ns;      ///< CLOCK_MONOTONIC ns of the segment's creation
  A32 guest_attached;     ///< 1 while the host holds a guest's connection (the guest seat), else 0
  uint8_t reserved0[20];  ///< Reserved, 0.
  A64 guest_since_ns;     ///< CLOCK_MONOTONIC ns at which the current guest attached; 0 before
  uint8_t reserved1[56];  ///< Reserved, 0.
};
static_assert(sizeof(CountersHeader) == kCountersHeaderSize, "CountersHeader is 128 bytes");
static_assert(offsetof(CountersHeader, magic) == 0, "layout");
static_assert(offsetof(CountersHeader, version) == 8, "layout");
static_assert(offsetof(CountersHeader, header_size) == 12, "layout");
static_assert(offsetof(CountersHeader, block_size) == 16, "layout");
static_assert(offsetof(CountersHeader, slot_count) == 20, "layout");
static_assert(offsetof(CountersHeader, counters_size) == 24, "layout");
static_assert(offsetof(CountersHeader, host_since_ns) == 32, "layout");
static_assert(offsetof(CountersHeader, guest_attached) == 40, "layout");
static_assert(offsetof(CountersHeader, guest_since_ns) == 64, "layout");

/// One side's counters of one slot: 16 u64 atomics, written by that side only (SPECIFICATION.md §5.4).
struct alignas(kCacheLine) CounterBlock {
  A64 c[kCountersPerBlock];  ///< Indexed by CallerCounter or ServerCounter, as the writer's role in the slot.
};
static_assert(sizeof(CounterBlock) == kCounterBlockSize, "CounterBlock is two cache lines");

/// Size of the counters region of geometry g (valid), a multiple of the page size.
constexpr uint64_t CountersSize(const Geometry& g) noexcept {
  return AlignUp(kCountersHeaderSize + 2ull * kCounterBlockSize * (uint64_t{g.host_slots} + g.guest_slots), kPage);
}
/// Offset in the memfd of the host's block of slot `index`.
constexpr uint64_t HostBlockOffset(const Geometry& g, uint32_t index) noexcept {
  return SegmentSize(g) + kCountersHeaderSize + uint64_t{kCounterBlockSize} * index;
}
/// Offset in the memfd of the guest's block of slot `index`.
constexpr uint64_t GuestBlockOffset(const Geometry& g, uint32_t index) noexcept {
  return SegmentSize(g) + kCountersHeaderSize +
         uint64_t{kCounterBlockSize} * (uint64_t{g.host_slots} + g.guest_slots + index);
}

}  // namespace wire
}  // namespace shm

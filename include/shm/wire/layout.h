// SPDX-License-Identifier: Apache-2.0
// shm wire layout — the bytes of a segment. Normative text: SPECIFICATION.md §Layout.
//
// Segment = SegmentHeader (256 B) | SlotHeader x (host_slots + guest_slots) | pad to 4096 | buffers | pad.
// All integers are little-endian; every field that both processes touch is a 32/64-bit atomic.
// SYNC POINT WRITE/READ comments in detail/ name the release/acquire pairs on these fields.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "shm/wire/protocol.h"

namespace shm {
namespace wire {

/// Protocol version. Bump rule (SPECIFICATION.md §Versioning): any change to an offset, size, meaning or
/// allowed value of a field, to a state or transition, or to the geometry formula bumps it; peers accept only
/// an exact match. Adding a new WireError or MsgType value inside a reserved range does not.
constexpr uint32_t kVersion = 3;

/// "SHMSEG01" read as a little-endian u64. Written last, with release order, when the segment is ready.
constexpr uint64_t kMagic = 0x31304745534D4853ull;

constexpr uint32_t kCacheLine = 64;           ///< Alignment of every slot header (one cache line each).
constexpr uint32_t kPage = 4096;              ///< The data buffers start on a page boundary.
constexpr uint32_t kSegmentHeaderSize = 256;  ///< sizeof(SegmentHeader).
constexpr uint32_t kSlotHeaderSize = 64;      ///< sizeof(SlotHeader).
/// Capacities are multiples of this, so an end-aligned payload ends on a 64-byte boundary.
constexpr uint32_t kPayloadAlign = 64;
/// A request or response of at most this many bytes travels in SlotHeader::inline_data, the cache line the
/// control word moves anyway, instead of in the slot's buffers (SPECIFICATION.md §8.1).
constexpr uint32_t kInlineSize = 32;
constexpr uint32_t kMinPayload = 64;              ///< Smallest slot capacity, in bytes.
constexpr uint32_t kMaxPayload = 1u << 30;        ///< Largest slot capacity, in bytes (sizes travel as int32).
constexpr uint32_t kMaxSlots = 4096;              ///< Most slots of each kind (host, guest).
constexpr uint64_t kMaxSegmentSize = 1ull << 40;  ///< Largest whole segment, in bytes.

using A32 = std::atomic<uint32_t>;  ///< A 32-bit field of shared memory (lock-free, so it works across processes).
using A64 = std::atomic<uint64_t>;  ///< A 64-bit field of shared memory (lock-free, so it works across processes).
static_assert(A32::is_always_lock_free && A64::is_always_lock_free,
              "atomics in shared memory must be lock-free to work across processes");
static_assert(sizeof(A32) == 4 && sizeof(A64) == 8, "atomics must have the size of their value");

// SegmentHeader, 256 bytes at offset 0.
//
//  0        8        12       16       20       24       28       32       36       40               48
//  +--------+--------+--------+--------+--------+--------+--------+--------+--------+----------------+
//  | magic  |version |hdr_size|slothdr |host_   |guest_  |host_   |guest_  |flags=0 | total_size     |
//  | u64    |  u32   |  u32   |size u32|slots   |slots   |payload |payload |  u32   |   u64          |
//  +--------+--------+--------+--------+--------+--------+--------+--------+--------+----------------+
//  48..63 reserved 0
//  64: host_state u32 | 68: host_pid u32 | 72: guest_pid u32 | 76: guest_session u32 | 80..127 reserved 0
//  128: doorbell u32 | 132..255 reserved 0
/// The segment header as it lies in shared memory (SPECIFICATION.md). Both peers read and write it through
/// atomics; a peer validates a copy of it before use (the peer is untrusted). Not constructed by users.
struct SegmentHeader {
  A64 magic;              ///< kMagic once ready; 0 while initialising. Immutable after.
  A32 version;            ///< kVersion
  A32 header_size;        ///< kSegmentHeaderSize
  A32 slot_header_size;   ///< kSlotHeaderSize
  A32 host_slots;         ///< number of host->guest slots, 1..kMaxSlots
  A32 guest_slots;        ///< number of guest->host slots, 0..kMaxSlots
  A32 host_payload;       ///< capacity in bytes of each host slot's request and response buffer
  A32 guest_payload;      ///< same for guest slots (0 when guest_slots == 0)
  A32 flags;              ///< reserved, 0
  A64 total_size;         ///< bytes of the whole segment; must equal SegmentSize(geometry) and the file size
  uint8_t reserved0[16];  ///< Reserved, 0.

  A32 host_state;         ///< HostState. Written by the host.
  A32 host_pid;           ///< pid of the host, for messages only (liveness comes from the rendezvous, §2)
  A32 guest_pid;          ///< pid of the last guest that attached, for messages only
  A32 guest_session;      ///< incremented by every guest that attaches
  uint8_t reserved1[48];  ///< Reserved, 0.

  A32 doorbell;            ///< guest-call doorbell (protocol.h), alone in its cache line: written by every guest call
  uint8_t reserved2[124];  ///< Reserved, 0.
};
static_assert(sizeof(SegmentHeader) == kSegmentHeaderSize, "SegmentHeader is 256 bytes");
static_assert(offsetof(SegmentHeader, magic) == 0, "layout");
static_assert(offsetof(SegmentHeader, version) == 8, "layout");
static_assert(offsetof(SegmentHeader, header_size) == 12, "layout");
static_assert(offsetof(SegmentHeader, slot_header_size) == 16, "layout");
static_assert(offsetof(SegmentHeader, host_slots) == 20, "layout");
static_assert(offsetof(SegmentHeader, guest_slots) == 24, "layout");
static_assert(offsetof(SegmentHeader, host_payload) == 28, "layout");
static_assert(offsetof(SegmentHeader, guest_payload) == 32, "layout");
static_assert(offsetof(SegmentHeader, flags) == 36, "layout");
static_assert(offsetof(SegmentHeader, total_size) == 40, "layout");
static_assert(offsetof(SegmentHeader, host_state) == 64, "layout");
static_assert(offsetof(SegmentHeader, host_pid) == 68, "layout");
static_assert(offsetof(SegmentHeader, guest_pid) == 72, "layout");
static_assert(offsetof(SegmentHeader, guest_session) == 76, "layout");
static_assert(offsetof(SegmentHeader, doorbell) == 128, "layout");

// SlotHeader, 64 bytes (one cache line), at 256 + 64 * index. Host slots first, then guest slots.
//
//  0        4        8        12       16       20       24                32                      64
//  +--------+--------+--------+--------+--------+--------+-----------------+------------------------+
//  | ctl    |req_type|req_size|resp_   |resp_   |resp_   | wake_stamp_ns   | inline_data: a payload |
//  | u32    |  u32   |  i32   |type u32|size i32|error   |   u64           | of <= 32 bytes         |
//  +--------+--------+--------+--------+--------+--------+-----------------+------------------------+
/// A slot's header as it lies in shared memory (SPECIFICATION.md): the control word and the fields of the
/// transaction in flight. Every field is read once into a local and validated before use.
struct alignas(kCacheLine) SlotHeader {
  A32 ctl;            ///< control word: state | kWaiting | seq (protocol.h). The futex word.
  A32 req_type;       ///< MsgType of the request. Written by the caller before publishing.
  A32 req_size;       ///< int32 request size; negative = end-aligned. Written by the caller.
  A32 resp_type;      ///< MsgType of the response. Written by the server before publishing.
  A32 resp_size;      ///< int32 response size; negative = end-aligned. 0 with SYSTEM_ERROR.
  A32 resp_error;     ///< WireError when resp_type == SYSTEM_ERROR, else 0.
  A64 wake_stamp_ns;  ///< CLOCK_MONOTONIC ns at which a notifier issued FUTEX_WAKE; advisory, for spin tuning
  /// The bytes of a request or response of at most kInlineSize bytes (SPECIFICATION.md §8.1): written by the
  /// caller before it publishes, then by the server before it completes. Plain bytes, ordered by ctl.
  uint8_t inline_data[kInlineSize];
};
static_assert(sizeof(SlotHeader) == kSlotHeaderSize, "SlotHeader is one cache line");
static_assert(alignof(SlotHeader) == kCacheLine, "SlotHeader is cache-line aligned");
static_assert(offsetof(SlotHeader, ctl) == 0, "layout");
static_assert(offsetof(SlotHeader, req_type) == 4, "layout");
static_assert(offsetof(SlotHeader, req_size) == 8, "layout");
static_assert(offsetof(SlotHeader, resp_type) == 12, "layout");
static_assert(offsetof(SlotHeader, resp_size) == 16, "layout");
static_assert(offsetof(SlotHeader, resp_error) == 20, "layout");
static_assert(offsetof(SlotHeader, wake_stamp_ns) == 24, "layout");
static_assert(offsetof(SlotHeader, inline_data) == 32 && kInlineSize == kSlotHeaderSize - 32, "layout");

/// The chunk header of a CHUNK message, in SlotHeader::inline_data (SPECIFICATION.md §8.5). Plain bytes in shared
/// memory: a receiver copies it out once (ReadChunkHeader) and validates the copy.
struct ChunkHeader {
  uint64_t stream_id;  ///< Names the transfer, != 0.
  uint64_t total;      ///< The whole message's size, 1..kMaxMessageSize.
  uint64_t offset;     ///< Where this chunk's data lies in the message.
  uint32_t msg_type;   ///< The whole message's MsgType.
  uint32_t reserved;   ///< Written as 0, ignored.
};
static_assert(sizeof(ChunkHeader) == kInlineSize, "a chunk header fills the inline field");
static_assert(offsetof(ChunkHeader, stream_id) == 0, "layout");
static_assert(offsetof(ChunkHeader, total) == 8, "layout");
static_assert(offsetof(ChunkHeader, offset) == 16, "layout");
static_assert(offsetof(ChunkHeader, msg_type) == 24, "layout");
static_assert(offsetof(ChunkHeader, reserved) == 28, "layout");
/// The largest message a transfer can carry (SPECIFICATION.md §8.5).
constexpr uint64_t kMaxMessageSize = uint64_t{1} << 40;
/// The size of a CHUNK_NEXT request: stream_id u64, offset u64, in the inline field.
constexpr uint32_t kChunkNextSize = 16;

/// The numbers that define a segment. Everything else (offsets, total size) derives from them.
struct Geometry {
  uint32_t host_slots = 0;     ///< Host-to-guest slots, 1..kMaxSlots.
  uint32_t guest_slots = 0;    ///< Guest-to-host slots, 0..kMaxSlots.
  uint32_t host_payload = 0;   ///< multiple of kPayloadAlign
  uint32_t guest_payload = 0;  ///< multiple of kPayloadAlign, or 0 when guest_slots == 0
};

/// `v` rounded up to a multiple of `a` (a > 0).
constexpr uint64_t AlignUp(uint64_t v, uint64_t a) noexcept { return (v + a - 1) / a * a; }

/// Offset of the first data buffer: after the slot headers, rounded up to a page.
constexpr uint64_t BuffersOffset(const Geometry& g) noexcept {
  return AlignUp(kSegmentHeaderSize + uint64_t{kSlotHeaderSize} * (uint64_t{g.host_slots} + g.guest_slots), kPage);
}

/// Whether g is a geometry this version can describe (bounds only; sizes fit easily in 64 bits under them).
constexpr bool GeometryValid(const Geometry& g) noexcept {
  return g.host_slots >= 1 && g.host_slots <= kMaxSlots && g.guest_slots <= kMaxSlots &&
         g.host_payload >= kMinPayload && g.host_payload <= kMaxPayload && g.host_payload % kPayloadAlign == 0 &&
         (g.guest_slots == 0 ? g.guest_payload == 0
                             : (g.guest_payload >= kMinPayload && g.guest_payload <= kMaxPayload &&
                                g.guest_payload % kPayloadAlign == 0));
}

/// Total segment size in bytes for a valid geometry (at most ~16 TiB under the bounds, so no overflow).
constexpr uint64_t SegmentSize(const Geometry& g) noexcept {
  return AlignUp(BuffersOffset(g) + 2ull * g.host_payload * g.host_slots + 2ull * g.guest_payload * g.guest_slots,
                 kPage);
}

/// Offset of slot `index`'s request buffer; its response buffer follows at + capacity. index < host+guest.
constexpr uint64_t RequestBufferOffset(const Geometry& g, uint32_t index) noexcept {
  return index < g.host_slots ? BuffersOffset(g) + 2ull * g.host_payload * index
                              : BuffersOffset(g) + 2ull * g.host_payload * g.host_slots +
                                    2ull * g.guest_payload * (index - g.host_slots);
}

/// Capacity of slot `index`'s request (and response) buffer.
constexpr uint32_t SlotCapacity(const Geometry& g, uint32_t index) noexcept {
  return index < g.host_slots ? g.host_payload : g.guest_payload;
}

// ---- The attach handshake (SPECIFICATION.md §4) --------------------------------------------------------------
// Two records on the rendezvous socket: the hello a guest sends, and the host's reply (with the segment's
// descriptor when accepted). Plain integers, copied in and out with memcpy: they never live in shared memory.

/// "SHMHELLO" read as a little-endian u64.
constexpr uint64_t kHelloMagic = 0x4F4C4C45484D4853ull;
constexpr uint32_t kHelloSize = 16;  ///< sizeof(Hello).
constexpr uint32_t kReplySize = 16;  ///< sizeof(AttachReply).

/// What a connecting process asks for.
enum class AttachRole : uint32_t {
  kGuest = 1,     ///< Serve the host and take the guest seat; gets a read-write descriptor.
  kObserver = 2,  ///< Read the segment only (tools); gets a read-only descriptor, never takes the seat.
};

/// The host's answer to a hello.
enum class AttachStatus : uint32_t {
  kAccepted = 0,         ///< The descriptor is attached.
  kBusy = 1,             ///< Another guest holds the seat; detail = its pid.
  kDenied = 2,           ///< The peer's credentials are not admitted by the segment's mode.
  kVersionMismatch = 3,  ///< The hello's version is not the host's; detail = the host's version.
  kBadHello = 4,         ///< The hello was malformed.
  kShuttingDown = 5,     ///< The host is shutting down.
};

/// The attach hello a guest or an observer sends the host over the rendezvous socket, 16 bytes.
struct Hello {
  uint64_t magic = kHelloMagic;  ///< kHelloMagic.
  uint32_t version = kVersion;   ///< The sender's protocol version.
  uint32_t role = 0;             ///< AttachRole
};
static_assert(sizeof(Hello) == kHelloSize, "layout");
static_assert(offsetof(Hello, magic) == 0 && offsetof(Hello, version) == 8 && offsetof(Hello, role) == 12, "layout");

/// The host's answer to a Hello, 16 bytes; the segment's descriptor comes with it when status is kAccepted.
struct AttachReply {
  uint32_t status = 0;    ///< AttachStatus
  uint32_t host_pid = 0;  ///< informational
  uint32_t detail = 0;    ///< kBusy: the attached guest's pid; kVersion: the host's version
  uint32_t reserved = 0;  ///< 0
};
static_assert(sizeof(AttachReply) == kReplySize, "layout");
static_assert(offsetof(AttachReply, status) == 0 && offsetof(AttachReply, host_pid) == 4 &&
                  offsetof(AttachReply, detail) == 8 && offsetof(AttachReply, reserved) == 12,
              "layout");

}  // namespace wire
}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// Prints every offset, size and constant of the wire protocol as the C++ headers define them, one
// `key=value` line each (values in decimal). go/layout_test.go compares the Go package's own values with this
// output, so the Go layout cannot drift from the C++ one. Keys are stable: renaming one breaks that test.
#include <fcntl.h>
#include <linux/futex.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "shm/detail/slot.h"
#include "shm/detail/wait.h"
#include "shm/platform/platform.h"
#include "shm/wire/counters.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"

namespace {

using shm::MsgType;
using shm::wire::Geometry;
using shm::wire::SegmentHeader;
using shm::wire::SlotHeader;
using shm::wire::SlotState;
using shm::wire::WireError;

void Put(const std::string& key, uint64_t value) {
  std::printf("%s=%llu\n", key.c_str(), static_cast<unsigned long long>(value));
}

void PutGeometry(const std::string& key, const Geometry& g) {
  const bool valid = shm::wire::GeometryValid(g);
  Put(key + ".valid", valid ? 1 : 0);
  if (!valid) return;
  Put(key + ".buffers_offset", shm::wire::BuffersOffset(g));
  Put(key + ".total_size", shm::wire::SegmentSize(g));
  const uint32_t n = g.host_slots + g.guest_slots;
  const uint32_t probes[] = {0, g.host_slots - 1, g.host_slots, n - 1};
  for (uint32_t i : probes) {
    if (i >= n) continue;
    Put(key + ".slot" + std::to_string(i) + ".request_offset", shm::wire::RequestBufferOffset(g, i));
    Put(key + ".slot" + std::to_string(i) + ".capacity", shm::wire::SlotCapacity(g, i));
    Put(key + ".slot" + std::to_string(i) + ".host_block_offset", shm::wire::HostBlockOffset(g, i));
    Put(key + ".slot" + std::to_string(i) + ".guest_block_offset", shm::wire::GuestBlockOffset(g, i));
  }
  Put(key + ".counters_size", shm::wire::CountersSize(g));
}

}  // namespace

int main() {
#define SEG_FIELD(f) Put("segment_header." #f ".offset", offsetof(SegmentHeader, f))
#define SEG_FIELD_SIZE(f) Put("segment_header." #f ".size", sizeof(SegmentHeader::f))
  Put("segment_header.size", sizeof(SegmentHeader));
  SEG_FIELD(magic);
  SEG_FIELD(version);
  SEG_FIELD(header_size);
  SEG_FIELD(slot_header_size);
  SEG_FIELD(host_slots);
  SEG_FIELD(guest_slots);
  SEG_FIELD(host_payload);
  SEG_FIELD(guest_payload);
  SEG_FIELD(flags);
  SEG_FIELD(total_size);
  SEG_FIELD(reserved0);
  SEG_FIELD_SIZE(reserved0);
  SEG_FIELD(host_state);
  SEG_FIELD(host_pid);
  SEG_FIELD(guest_pid);
  SEG_FIELD(guest_session);
  SEG_FIELD(reserved1);
  SEG_FIELD_SIZE(reserved1);
  SEG_FIELD(doorbell);
  SEG_FIELD(reserved2);
  SEG_FIELD_SIZE(reserved2);
  SEG_FIELD_SIZE(magic);
  SEG_FIELD_SIZE(total_size);
  SEG_FIELD_SIZE(doorbell);

#define SLOT_FIELD(f) Put("slot_header." #f ".offset", offsetof(SlotHeader, f))
  Put("slot_header.size", sizeof(SlotHeader));
  SLOT_FIELD(ctl);
  SLOT_FIELD(req_type);
  SLOT_FIELD(req_size);
  SLOT_FIELD(resp_type);
  SLOT_FIELD(resp_size);
  SLOT_FIELD(resp_error);
  SLOT_FIELD(wake_stamp_ns);
  SLOT_FIELD(inline_data);
  Put("slot_header.inline_data.size", sizeof(SlotHeader::inline_data));
  Put("slot_header.ctl.size", sizeof(SlotHeader::ctl));
  Put("slot_header.wake_stamp_ns.size", sizeof(SlotHeader::wake_stamp_ns));

  using shm::wire::ChunkHeader;
#define CHUNK_FIELD(f) Put("chunk_header." #f ".offset", offsetof(ChunkHeader, f))
  Put("chunk_header.size", sizeof(ChunkHeader));
  CHUNK_FIELD(stream_id);
  CHUNK_FIELD(total);
  CHUNK_FIELD(offset);
  CHUNK_FIELD(msg_type);
  CHUNK_FIELD(reserved);
#undef CHUNK_FIELD

  namespace w = shm::wire;
  Put("const.version", w::kVersion);
  Put("const.magic", w::kMagic);
  Put("const.cache_line", w::kCacheLine);
  Put("const.page", w::kPage);
  Put("const.segment_header_size", w::kSegmentHeaderSize);
  Put("const.slot_header_size", w::kSlotHeaderSize);
  Put("const.payload_align", w::kPayloadAlign);
  Put("const.inline_size", w::kInlineSize);
  Put("const.min_payload", w::kMinPayload);
  Put("const.max_payload", w::kMaxPayload);
  Put("const.max_slots", w::kMaxSlots);
  Put("const.max_segment_size", w::kMaxSegmentSize);
  Put("const.max_message_size", w::kMaxMessageSize);
  Put("const.chunk_next_size", w::kChunkNextSize);
  Put("const.liveness_slice_ns", static_cast<uint64_t>(shm::detail::kLivenessSliceNs));

#define MSG(n) Put("msg_type." #n, static_cast<uint32_t>(MsgType::n))
  MSG(NORMAL);
  MSG(HEARTBEAT_REQ);
  MSG(HEARTBEAT_RESP);
  MSG(SHUTDOWN);
  MSG(CHUNK);
  MSG(CHUNK_ACK);
  MSG(CHUNK_NEXT);
  MSG(FLATBUFFER);
  MSG(GUEST_CALL);
  MSG(SYSTEM_ERROR);
  MSG(APP_START);
  // Which types may be sent and answered (every value below 300, and the extremes).
  auto types = [](auto&& put) {
    for (uint32_t v = 0; v < 300; ++v) put(v);
    for (uint32_t v : {0xFFFFu, 0x7FFFFFFFu, 0xFFFFFFFFu}) put(v);
  };
  types([](uint32_t v) {
    Put("is_request_type." + std::to_string(v), shm::IsUserRequestType(static_cast<MsgType>(v)) ? 1 : 0);
    Put("is_response_type." + std::to_string(v), shm::IsUserResponseType(static_cast<MsgType>(v)) ? 1 : 0);
  });

  for (uint32_t v = 0; v <= 9; ++v) {
    std::printf("wire_error.%u=%s\n", v, w::ToString(static_cast<WireError>(v)));
  }
  Put("wire_error.count", 10);

#define STATE(n, k) Put("slot_state." #n, static_cast<uint32_t>(SlotState::k))
  STATE(FREE, kFree);
  STATE(CLAIMED, kClaimed);
  STATE(REQUEST, kRequest);
  STATE(SERVING, kServing);
  STATE(RESPONSE, kResponse);
  STATE(ABANDONED, kAbandoned);
  Put("slot_state.count", w::kStateCount);
  Put("ctl.state_mask", w::kStateMask);
  Put("ctl.waiting", w::kWaiting);
  Put("ctl.reserved_bits", w::kReservedCtlBits);
  Put("ctl.seq_shift", w::kSeqShift);
  Put("ctl.seq_mask", w::kSeqMask);
  Put("ctl.make.request.0x123456", w::MakeCtl(SlotState::kRequest, 0x123456));
  Put("ctl.make.free.0x1000000", w::MakeCtl(SlotState::kFree, 0x1000000));
  Put("ctl.next_seq.0xFFFFFF", w::NextSeq(0xFFFFFF));
  Put("doorbell.waiting", w::kDoorbellWaiting);
  Put("doorbell.increment", w::kDoorbellIncrement);
  Put("host_state.RUNNING", static_cast<uint32_t>(w::HostState::kRunning));
  Put("host_state.SHUTTING_DOWN", static_cast<uint32_t>(w::HostState::kShuttingDown));

  // The attach handshake (SPECIFICATION.md §4) and the Linux binding's names and seals (§1, §3).
  Put("handshake.hello_magic", w::kHelloMagic);
  Put("handshake.hello_size", w::kHelloSize);
  Put("handshake.reply_size", w::kReplySize);
  Put("attach_role.GUEST", static_cast<uint32_t>(w::AttachRole::kGuest));
  Put("attach_role.OBSERVER", static_cast<uint32_t>(w::AttachRole::kObserver));
#define ATTACH_STATUS(n, k) Put("attach_status." #n, static_cast<uint32_t>(w::AttachStatus::k))
  ATTACH_STATUS(ACCEPTED, kAccepted);
  ATTACH_STATUS(BUSY, kBusy);
  ATTACH_STATUS(DENIED, kDenied);
  ATTACH_STATUS(VERSION, kVersionMismatch);
  ATTACH_STATUS(BAD_HELLO, kBadHello);
  ATTACH_STATUS(SHUTTING_DOWN, kShuttingDown);
  Put("seal.F_SEAL_SEAL", F_SEAL_SEAL);
  Put("seal.F_SEAL_SHRINK", F_SEAL_SHRINK);
  Put("seal.F_SEAL_GROW", F_SEAL_GROW);
  Put("seal.F_SEAL_WRITE", F_SEAL_WRITE);
  Put("seal.F_SEAL_FUTURE_WRITE", F_SEAL_FUTURE_WRITE);
  Put("fcntl.F_ADD_SEALS", F_ADD_SEALS);
  Put("fcntl.F_GET_SEALS", F_GET_SEALS);
  Put("const.max_name_length", shm::platform::kMaxNameLength);
  Put("futex.FUTEX_WAIT", FUTEX_WAIT);
  Put("futex.FUTEX_WAKE", FUTEX_WAKE);

  // The counters region (SPECIFICATION.md §5.4).
  using shm::wire::CountersHeader;
#define CNT_FIELD(f) Put("counters_header." #f ".offset", offsetof(CountersHeader, f))
  Put("counters_header.size", sizeof(CountersHeader));
  CNT_FIELD(magic);
  CNT_FIELD(version);
  CNT_FIELD(header_size);
  CNT_FIELD(block_size);
  CNT_FIELD(slot_count);
  CNT_FIELD(counters_size);
  CNT_FIELD(host_since_ns);
  CNT_FIELD(guest_attached);
  CNT_FIELD(reserved0);
  CNT_FIELD(guest_since_ns);
  CNT_FIELD(reserved1);
#undef CNT_FIELD
  Put("counters_header.reserved0.size", sizeof(CountersHeader::reserved0));
  Put("counters_header.reserved1.size", sizeof(CountersHeader::reserved1));
  Put("counter_block.size", sizeof(shm::wire::CounterBlock));
  Put("counters.version", w::kCountersVersion);
  Put("counters.magic", w::kCountersMagic);
  Put("counters.per_block", w::kCountersPerBlock);
  Put("counters.counted_wire_errors", w::kCountedWireErrors);
  Put("counter.caller.calls", w::kCalls);
  Put("counter.caller.bytes_out", w::kCallBytesOut);
  Put("counter.caller.bytes_in", w::kCallBytesIn);
  Put("counter.caller.timeouts", w::kTimeouts);
  Put("counter.caller.peer_dead", w::kPeerDead);
  Put("counter.caller.protocol", w::kProtocol);
  Put("counter.caller.ended", w::kEnded);
  Put("counter.caller.remote_base", w::kRemoteBase);
  Put("counter.server.served", w::kServed);
  Put("counter.server.bytes_in", w::kServeBytesIn);
  Put("counter.server.bytes_out", w::kServeBytesOut);
  Put("counter.server.late", w::kLate);
  Put("counter.server.lost", w::kLost);
  Put("counter.server.heartbeats", w::kHeartbeats);
  Put("counter.server.answered_base", w::kAnsweredBase);

  // Size placement (negative = end-aligned) against a 128-byte buffer.
  for (int32_t size : {0, 1, 64, 127, 128, 129, -1, -64, -128, -129, INT32_MIN, INT32_MIN + 1, INT32_MAX}) {
    shm::detail::Placement p;
    const bool ok = shm::detail::ResolveSize(size, 128, &p);
    const std::string key = "placement.128." + std::to_string(size);
    Put(key + ".ok", ok ? 1 : 0);
    if (ok) {
      Put(key + ".offset", p.offset);
      Put(key + ".length", p.length);
    }
  }

  // Where a message's bytes lie (SPECIFICATION.md §8.1) in a slot of 128-byte buffers: inline (in the header,
  // at an offset from inline_data) or in the buffer (at an offset from its start).
  {
    // One block, with a gap between the header and the buffer, so that an address tells them apart.
    struct {
      SlotHeader h{};
      uint8_t gap[64];
      uint8_t buffer[128];
    } mem;
    SlotHeader& h = mem.h;
    uint8_t* buffer = mem.buffer;
    for (int32_t size : {0, 1, 31, 32, 33, 64, 128, 129, -1, -31, -32, -33, -128, -129, INT32_MIN}) {
      uint32_t length = 0;
      const uint8_t* at = shm::detail::MessageBytes(h, buffer, 128, size, &length);
      const std::string key = "area.128." + std::to_string(size);
      Put(key + ".ok", at != nullptr ? 1 : 0);
      if (at == nullptr) continue;
      const bool in_header = at >= h.inline_data && at <= h.inline_data + sizeof h.inline_data;
      Put(key + ".inline", in_header ? 1 : 0);
      Put(key + ".offset", static_cast<uint64_t>(in_header ? at - h.inline_data : at - buffer));
      Put(key + ".length", length);
    }
  }

  // The geometry formulas, on valid and invalid geometries.
  const Geometry geometries[] = {
      {1, 0, 64, 0},          {4, 2, 65536, 65536}, {3, 5, 1024, 192},
      {4096, 4096, 64, 64},   {1, 1, 1u << 30, 64}, {7, 1, 4160, 1u << 30},
      {4096, 0, 1u << 30, 0}, {0, 0, 64, 0},        {1, 0, 64, 64},
      {1, 1, 64, 0},          {1, 0, 100, 0},       {4097, 0, 64, 0},
      {1, 4097, 64, 64},      {1, 0, 32, 0},        {1, 0, (1u << 30) + 64, 0},
      {2, 2, 128, 96},
  };
  for (size_t i = 0; i < sizeof geometries / sizeof geometries[0]; ++i) {
    const Geometry& g = geometries[i];
    PutGeometry("geometry." + std::to_string(g.host_slots) + "." + std::to_string(g.guest_slots) + "." +
                    std::to_string(g.host_payload) + "." + std::to_string(g.guest_payload),
                g);
  }
  return 0;
}

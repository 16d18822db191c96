// SPDX-License-Identifier: Apache-2.0
// Pins the wire layout: these numbers are SPECIFICATION.md's; a change here is a protocol change.
#include "shm/wire/layout.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

using shm::wire::Geometry;
using shm::wire::SegmentHeader;
using shm::wire::SlotHeader;

TEST(Layout, SegmentHeaderOffsetsMatchSpecification) {
  EXPECT_EQ(sizeof(SegmentHeader), 256u);
  EXPECT_EQ(offsetof(SegmentHeader, magic), 0u);
  EXPECT_EQ(offsetof(SegmentHeader, version), 8u);
  EXPECT_EQ(offsetof(SegmentHeader, header_size), 12u);
  EXPECT_EQ(offsetof(SegmentHeader, slot_header_size), 16u);
  EXPECT_EQ(offsetof(SegmentHeader, host_slots), 20u);
  EXPECT_EQ(offsetof(SegmentHeader, guest_slots), 24u);
  EXPECT_EQ(offsetof(SegmentHeader, host_payload), 28u);
  EXPECT_EQ(offsetof(SegmentHeader, guest_payload), 32u);
  EXPECT_EQ(offsetof(SegmentHeader, flags), 36u);
  EXPECT_EQ(offsetof(SegmentHeader, total_size), 40u);
  EXPECT_EQ(offsetof(SegmentHeader, host_state), 64u);
  EXPECT_EQ(offsetof(SegmentHeader, host_pid), 68u);
  EXPECT_EQ(offsetof(SegmentHeader, guest_pid), 72u);
  EXPECT_EQ(offsetof(SegmentHeader, guest_session), 76u);
  EXPECT_EQ(offsetof(SegmentHeader, doorbell), 128u);
}

TEST(Layout, SlotHeaderOffsetsMatchSpecification) {
  EXPECT_EQ(sizeof(SlotHeader), 64u);
  EXPECT_EQ(offsetof(SlotHeader, ctl), 0u);
  EXPECT_EQ(offsetof(SlotHeader, req_type), 4u);
  EXPECT_EQ(offsetof(SlotHeader, req_size), 8u);
  EXPECT_EQ(offsetof(SlotHeader, resp_type), 12u);
  EXPECT_EQ(offsetof(SlotHeader, resp_size), 16u);
  EXPECT_EQ(offsetof(SlotHeader, resp_error), 20u);
  EXPECT_EQ(offsetof(SlotHeader, wake_stamp_ns), 24u);
}

TEST(Layout, MagicSpellsSHMSEG01) {
  const uint64_t m = shm::wire::kMagic;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(&m), 8), "SHMSEG01");
}

TEST(Layout, ConstantsMatchSpecification) {
  EXPECT_EQ(shm::wire::kVersion, 3u);
  EXPECT_EQ(shm::wire::kInlineSize, 32u);
  EXPECT_EQ(shm::wire::kCacheLine, 64u);
  EXPECT_EQ(shm::wire::kPage, 4096u);
  EXPECT_EQ(shm::wire::kSegmentHeaderSize, 256u);
  EXPECT_EQ(shm::wire::kSlotHeaderSize, 64u);
  EXPECT_EQ(shm::wire::kPayloadAlign, 64u);
  EXPECT_EQ(shm::wire::kMinPayload, 64u);
  EXPECT_EQ(shm::wire::kMaxPayload, 1u << 30);
  EXPECT_EQ(shm::wire::kMaxSlots, 4096u);
}

TEST(Layout, FieldSizesMatchSpecification) {
  EXPECT_EQ(sizeof(SegmentHeader::magic), 8u);
  EXPECT_EQ(sizeof(SegmentHeader::version), 4u);
  EXPECT_EQ(sizeof(SegmentHeader::flags), 4u);
  EXPECT_EQ(sizeof(SegmentHeader::total_size), 8u);
  EXPECT_EQ(sizeof(SegmentHeader::guest_session), 4u);
  EXPECT_EQ(sizeof(SegmentHeader::doorbell), 4u);
  EXPECT_EQ(sizeof(SlotHeader::ctl), 4u);
  EXPECT_EQ(sizeof(SlotHeader::req_size), 4u);
  EXPECT_EQ(sizeof(SlotHeader::resp_error), 4u);
  EXPECT_EQ(sizeof(SlotHeader::wake_stamp_ns), 8u);
  EXPECT_EQ(alignof(SlotHeader), 64u);
}

// The control word bit layout of SPECIFICATION.md §6.
TEST(Layout, ControlWordBitsMatchSpecification) {
  using namespace shm::wire;
  EXPECT_EQ(kStateMask, 0x0Fu);
  EXPECT_EQ(kWaiting, 0x10u);
  EXPECT_EQ(kReservedCtlBits, 0xE0u);
  EXPECT_EQ(kSeqShift, 8u);
  EXPECT_EQ(kSeqMask, 0x00FFFFFFu);
  EXPECT_EQ(MakeCtl(SlotState::kResponse, 0x123456), 0x12345604u);
  EXPECT_EQ(MakeCtl(SlotState::kRequest, 0x1FFFFFF), 0xFFFFFF02u);  // seq is taken mod 2^24
  EXPECT_EQ(CtlState(0x12345614u), 4u);                             // W does not leak into the state
  EXPECT_EQ(CtlSeq(0x12345614u), 0x123456u);
  EXPECT_EQ(NextSeq(kSeqMask), 0u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kFree), 0u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kClaimed), 1u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kRequest), 2u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kServing), 3u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kResponse), 4u);
  EXPECT_EQ(static_cast<uint32_t>(SlotState::kAbandoned), 5u);
  EXPECT_EQ(kDoorbellWaiting, 1u);
  EXPECT_EQ(kDoorbellIncrement, 2u);
  EXPECT_EQ(static_cast<uint32_t>(HostState::kRunning), 0u);
  EXPECT_EQ(static_cast<uint32_t>(HostState::kShuttingDown), 1u);
}

TEST(Layout, WireValuesMatchSpecification) {
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::NORMAL), 0u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::HEARTBEAT_REQ), 1u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::HEARTBEAT_RESP), 2u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::SHUTDOWN), 3u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::FLATBUFFER), 10u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::GUEST_CALL), 11u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::SYSTEM_ERROR), 127u);
  EXPECT_EQ(static_cast<uint32_t>(shm::MsgType::APP_START), 128u);
  using shm::wire::WireError;
  EXPECT_EQ(static_cast<uint32_t>(WireError::kNone), 0u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kRequestTooLarge), 1u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kResponseTooLarge), 2u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kReservedType), 3u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kHandlerFailed), 4u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kShuttingDown), 5u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kNoHandler), 6u);
  EXPECT_EQ(static_cast<uint32_t>(WireError::kPeerRestarted), 7u);
}

// Hand-computed from SPECIFICATION.md §5.3.
TEST(Layout, SmallestGeometryIsTwoPages) {
  const Geometry g{1, 0, 64, 0};
  EXPECT_TRUE(shm::wire::GeometryValid(g));
  EXPECT_EQ(shm::wire::BuffersOffset(g), 4096u);  // 256 + 64 = 320, rounded up to a page
  EXPECT_EQ(shm::wire::SegmentSize(g), 8192u);    // 4096 + 2*64 = 4224, rounded up
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 0), 4096u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 0), 64u);
}

TEST(Layout, DefaultConfigGeometry) {
  const Geometry g{4, 2, 65536, 65536};
  EXPECT_EQ(shm::wire::BuffersOffset(g), 4096u);          // 256 + 6*64 = 640
  EXPECT_EQ(shm::wire::SegmentSize(g), 4096u + 786432u);  // + 2*65536*4 + 2*65536*2, already page aligned
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 0), 4096u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 1), 4096u + 131072u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 3), 4096u + 3u * 131072u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 4), 4096u + 4u * 131072u);  // first guest slot
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 5), 4096u + 5u * 131072u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 3), 65536u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 4), 65536u);
}

TEST(Layout, MixedPayloadGeometry) {
  const Geometry g{3, 2, 128, 192};
  EXPECT_EQ(shm::wire::BuffersOffset(g), 4096u);
  // 4096 + 2*128*3 + 2*192*2 = 4096 + 768 + 768 = 5632 -> 8192
  EXPECT_EQ(shm::wire::SegmentSize(g), 8192u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 2), 4096u + 512u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 3), 4096u + 768u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 4), 4096u + 768u + 384u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 2), 128u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 3), 192u);
  EXPECT_EQ(shm::wire::SlotCapacity(g, 4), 192u);
}

TEST(Layout, SlotHeadersSpillPastFirstPage) {
  // 256 + 61*64 = 4160 > 4096: buffers start on the second page.
  const Geometry g{60, 1, 64, 64};
  EXPECT_EQ(shm::wire::BuffersOffset(g), 8192u);
  // 8192 + 2*64*61 = 16000 -> 16384
  EXPECT_EQ(shm::wire::SegmentSize(g), 16384u);
  const Geometry exact{59, 1, 64, 64};  // 256 + 60*64 = 4096 exactly
  EXPECT_EQ(shm::wire::BuffersOffset(exact), 4096u);
}

TEST(Layout, LargestSlotCountsGeometry) {
  const Geometry g{4096, 4096, 64, 64};
  EXPECT_TRUE(shm::wire::GeometryValid(g));
  // 256 + 8192*64 = 524544 -> 129 pages = 528384
  EXPECT_EQ(shm::wire::BuffersOffset(g), 528384u);
  EXPECT_EQ(shm::wire::SegmentSize(g), 528384u + 2u * 64u * 8192u);
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 8191), 528384u + 2u * 64u * 8191u);
}

TEST(Layout, LargestGeometryDoesNotOverflow) {
  const Geometry g{4096, 4096, 1u << 30, 1u << 30};
  EXPECT_TRUE(shm::wire::GeometryValid(g));
  EXPECT_EQ(shm::wire::SegmentSize(g), 528384ull + (1ull << 44));
  EXPECT_EQ(shm::wire::RequestBufferOffset(g, 8191), 528384ull + 2ull * (1ull << 30) * 8191ull);
}

TEST(Layout, GeometryValidBounds) {
  using shm::wire::GeometryValid;
  EXPECT_FALSE(GeometryValid({0, 0, 64, 0}));
  EXPECT_FALSE(GeometryValid({4097, 0, 64, 0}));
  EXPECT_FALSE(GeometryValid({1, 4097, 64, 64}));
  EXPECT_FALSE(GeometryValid({1, 0, 0, 0}));
  EXPECT_FALSE(GeometryValid({1, 0, 63, 0}));
  EXPECT_FALSE(GeometryValid({1, 0, 96, 0}));  // not a multiple of 64
  EXPECT_FALSE(GeometryValid({1, 0, (1u << 30) + 64, 0}));
  EXPECT_FALSE(GeometryValid({1, 0, 64, 64}));  // guest payload without guest slots
  EXPECT_FALSE(GeometryValid({1, 1, 64, 0}));   // guest slots without guest payload
  EXPECT_FALSE(GeometryValid({1, 1, 64, 100}));
  EXPECT_TRUE(GeometryValid({1, 1, 64, 64}));
  EXPECT_TRUE(GeometryValid({1, 0, 1u << 30, 0}));
}

// For several geometries: slot headers sit before the buffers; every slot's request and response buffers lie
// inside the segment, overlap nothing, and end on a 64-byte boundary (end-aligned data is cache-line aligned).
TEST(Layout, BuffersAreDisjointInsideSegmentAndEndAligned) {
  const std::vector<Geometry> geometries = {{1, 0, 64, 0},   {4, 2, 65536, 65536}, {3, 2, 128, 192},
                                            {60, 1, 64, 64}, {7, 5, 4096, 640},    {16, 0, 1024, 0}};
  for (const Geometry& g : geometries) {
    SCOPED_TRACE(std::to_string(g.host_slots) + "/" + std::to_string(g.guest_slots) + " slots, payloads " +
                 std::to_string(g.host_payload) + "/" + std::to_string(g.guest_payload));
    ASSERT_TRUE(shm::wire::GeometryValid(g));
    const uint64_t total = shm::wire::SegmentSize(g);
    const uint64_t buffers = shm::wire::BuffersOffset(g);
    const uint32_t n = g.host_slots + g.guest_slots;
    EXPECT_EQ(total % 4096, 0u);
    EXPECT_EQ(buffers % 4096, 0u);
    EXPECT_LE(256u + 64ull * n, buffers);
    uint64_t expected_next = buffers;  // buffers are packed in slot order
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t req = shm::wire::RequestBufferOffset(g, i);
      const uint64_t cap = shm::wire::SlotCapacity(g, i);
      EXPECT_EQ(cap, i < g.host_slots ? g.host_payload : g.guest_payload) << "slot " << i;
      EXPECT_EQ(req, expected_next) << "slot " << i;
      EXPECT_EQ((req + cap) % 64, 0u) << "request buffer of slot " << i << " must end on a cache line";
      EXPECT_EQ((req + 2 * cap) % 64, 0u) << "response buffer of slot " << i << " must end on a cache line";
      expected_next = req + 2 * cap;
    }
    EXPECT_LE(expected_next, total);
    EXPECT_LT(total - expected_next, 4096u);  // only page padding after the last buffer
  }
}

}  // namespace

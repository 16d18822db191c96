// Pins the wire layout: these numbers are SPECIFICATION.md's; a change here is a protocol change.
#include <gtest/gtest.h>

#include <cstddef>

#include "shm/wire/layout.h"

namespace {

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

}  // namespace

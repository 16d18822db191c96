// SPDX-License-Identifier: Apache-2.0
// Configuration validation: ValidateName, ValidateHostConfig, and the argument checks of DirectHost::Init and
// DirectGuest::Connect. Every rejection is kInvalidArgs with a message that names the problem.
#include "shm/config.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "shm/guest.h"
#include "shm/host.h"
#include "shm/platform/platform.h"
#include "unit_util.h"

namespace {

using shm::ErrorCode;
using shm::HostConfig;

HostConfig Config(const std::string& name = "shm-unit-config") {
  HostConfig c;
  c.name = name;
  c.host_slots = 2;
  c.guest_slots = 1;
  c.payload_size = 64;
  return c;
}

template <typename T>
void ExpectInvalid(const shm::Result<T>& r, const std::string& words) {
  ASSERT_FALSE(r.ok()) << "accepted; expected an error mentioning '" << words << "'";
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgs) << r.error().ToString();
  EXPECT_NE(r.error().message().find(words), std::string::npos)
      << "message '" << r.error().message() << "' should mention '" << words << "'";
}

// ---- Names ----------------------------------------------------------------------------------------------------

TEST(ValidateName, RejectsEmptyName) { ExpectInvalid(shm::ValidateName(""), "empty"); }

TEST(ValidateName, RejectsCharactersOutsideThePortableSet) {
  for (const char* name :
       {"has space", "a/b", "/leading", "caf\xC3\xA9", "tab\there", "star*", "back\\slash", "colon:", "\x7F"}) {
    SCOPED_TRACE(name);
    ExpectInvalid(shm::ValidateName(name), "[A-Za-z0-9._-]");
  }
  const std::string with_nul("ab\0cd", 5);
  ExpectInvalid(shm::ValidateName(with_nul), "[A-Za-z0-9._-]");
}

TEST(ValidateName, RejectsDotAndDotDot) {
  ExpectInvalid(shm::ValidateName("."), "'.' or '..'");
  ExpectInvalid(shm::ValidateName(".."), "'.' or '..'");
}

TEST(ValidateName, AcceptsThePortableCharacters) {
  for (const char* name : {"a", "Z", "0", "...", ".hidden", "a.b_c-d", "ABCxyz0123456789._-"}) {
    auto r = shm::ValidateName(name);
    EXPECT_TRUE(r.ok()) << name << ": " << r.error().ToString();
  }
}

TEST(ValidateName, Rejects101CharactersAndAccepts100) {
  EXPECT_EQ(shm::platform::kMaxNameLength, 100u);
  ExpectInvalid(shm::ValidateName(std::string(101, 'n')), "101 characters; the limit is 100");
  auto r = shm::ValidateName(std::string(100, 'n'));
  EXPECT_TRUE(r.ok()) << r.error().ToString();
}

// ---- Host configuration ----------------------------------------------------------------------------------------

TEST(ValidateHostConfig, DefaultsAreValid) {
  HostConfig c;
  c.name = "shm-unit-defaults";
  auto g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->host_slots, 4u);
  EXPECT_EQ(g->guest_slots, 2u);
  EXPECT_EQ(g->host_payload, 65536u);
  EXPECT_EQ(g->guest_payload, 65536u);
}

TEST(ValidateHostConfig, RejectsBadNames) {
  auto c = Config("");
  ExpectInvalid(shm::ValidateHostConfig(c), "empty");
  c.name = "a/b";
  ExpectInvalid(shm::ValidateHostConfig(c), "[A-Za-z0-9._-]");
  c.name = "..";
  ExpectInvalid(shm::ValidateHostConfig(c), "'.' or '..'");
  c.name = std::string(101, 'x');
  ExpectInvalid(shm::ValidateHostConfig(c), "limit is 100");
}

TEST(ValidateHostConfig, RejectsZeroHostSlots) {
  auto c = Config();
  c.host_slots = 0;
  ExpectInvalid(shm::ValidateHostConfig(c), "host_slots is 0");
}

TEST(ValidateHostConfig, RejectsSlotCountsOverTheLimit) {
  auto c = Config();
  c.host_slots = shm::wire::kMaxSlots + 1;
  ExpectInvalid(shm::ValidateHostConfig(c), "host_slots is 4097; the limit is 4096");
  c = Config();
  c.guest_slots = shm::wire::kMaxSlots + 1;
  ExpectInvalid(shm::ValidateHostConfig(c), "guest_slots is 4097; the limit is 4096");
  c = Config();
  c.host_slots = UINT32_MAX;
  ExpectInvalid(shm::ValidateHostConfig(c), "host_slots is 4294967295");
}

TEST(ValidateHostConfig, AcceptsTheSlotLimits) {
  auto c = Config();
  c.host_slots = shm::wire::kMaxSlots;
  c.guest_slots = shm::wire::kMaxSlots;
  auto g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  c.guest_slots = 0;
  EXPECT_TRUE(shm::ValidateHostConfig(c).ok());
}

TEST(ValidateHostConfig, RejectsPayloadUnder64Bytes) {
  for (uint32_t p : {0u, 1u, 63u}) {
    auto c = Config();
    c.payload_size = p;
    ExpectInvalid(shm::ValidateHostConfig(c), "payload_size is " + std::to_string(p) + " bytes; the minimum is 64");
  }
}

TEST(ValidateHostConfig, AcceptsPayloadOf64Bytes) {
  auto c = Config();
  c.payload_size = 64;
  auto g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->host_payload, 64u);
  EXPECT_EQ(g->guest_payload, 65536u) << "the guest slots keep their own default";
  c.guest_payload_size = 0;
  g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->guest_payload, 64u) << "guest_payload_size 0 means payload_size";
}

// A host that sizes its own slots for large requests does not reserve that much for every guest slot too.
TEST(ValidateHostConfig, GuestSlotsDoNotFollowALargePayloadSize) {
  auto c = Config();
  c.host_slots = 1;
  c.guest_slots = 8;
  c.payload_size = 64u << 20;
  auto g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->host_payload, 64u << 20);
  EXPECT_EQ(g->guest_payload, 65536u);
  EXPECT_LT(shm::wire::SegmentSize(*g), (2u * (64u << 20)) + (4u << 20));
}

TEST(ValidateHostConfig, RoundsPayloadUpToAMultipleOf64) {
  const uint32_t cases[][2] = {{65, 128}, {127, 128}, {128, 128}, {129, 192}, {1000, 1024}, {(1u << 30) - 1, 1u << 30}};
  for (const auto& c2 : cases) {
    auto c = Config();
    c.payload_size = c2[0];
    auto g = shm::ValidateHostConfig(c);
    ASSERT_TRUE(g.ok()) << g.error().ToString();
    EXPECT_EQ(g->host_payload, c2[1]) << c2[0];
  }
}

TEST(ValidateHostConfig, RejectsPayloadOverTheMaximum) {
  for (uint32_t p : {shm::wire::kMaxPayload + 1, UINT32_MAX}) {
    auto c = Config();
    c.payload_size = p;
    ExpectInvalid(shm::ValidateHostConfig(c), "payload_size is " + std::to_string(p) + " bytes; the maximum is");
  }
}

TEST(ValidateHostConfig, ChecksGuestPayloadSeparately) {
  auto c = Config();
  c.guest_payload_size = 63;
  ExpectInvalid(shm::ValidateHostConfig(c), "guest_payload_size is 63");
  c.guest_payload_size = shm::wire::kMaxPayload + 1;
  ExpectInvalid(shm::ValidateHostConfig(c), "guest_payload_size");
  c.guest_payload_size = 200;
  auto g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->guest_payload, 256u);
  EXPECT_EQ(g->host_payload, 64u);
  // Without guest slots the guest payload is unused, so not checked, and the geometry says 0.
  c.guest_slots = 0;
  c.guest_payload_size = 1;
  g = shm::ValidateHostConfig(c);
  ASSERT_TRUE(g.ok()) << g.error().ToString();
  EXPECT_EQ(g->guest_payload, 0u);
}

TEST(ValidateHostConfig, RejectsSegmentOverTheSizeLimit) {
  auto c = Config();
  c.host_slots = shm::wire::kMaxSlots;
  c.guest_slots = 0;
  c.payload_size = shm::wire::kMaxPayload;  // 4096 * 2 GiB = 8 TiB > 1 TiB
  // The memfd: the segment and its counters region (SPECIFICATION.md §5.4).
  const shm::wire::Geometry g{c.host_slots, 0, c.payload_size, 0};
  const uint64_t size = shm::wire::SegmentSize(g) + shm::wire::CountersSize(g);
  auto r = shm::ValidateHostConfig(c);
  ExpectInvalid(r, "host_slots x payload_size");
  ExpectInvalid(r, "segment of " + std::to_string(size) + " bytes; the limit is 1099511627776");
}

TEST(ValidateHostConfig, RejectsSegmentLargerThanTheAvailableMemory) {
  const uint64_t space = shm::platform::MemoryAvailable();
  const uint64_t per_slot = 2ull * shm::wire::kMaxPayload;
  const uint64_t slots = space / per_slot + 1;
  if (slots > shm::wire::kMaxSlots || slots * per_slot + 4096 * 3 > shm::wire::kMaxSegmentSize) {
    GTEST_SKIP() << space << " bytes of memory are available: no valid geometry exceeds it";
  }
  auto c = Config();
  c.host_slots = static_cast<uint32_t>(slots);
  c.guest_slots = 0;
  c.payload_size = shm::wire::kMaxPayload;
  // The memfd: the segment and its counters region (SPECIFICATION.md §5.4).
  const shm::wire::Geometry g{c.host_slots, 0, c.payload_size, 0};
  const uint64_t size = shm::wire::SegmentSize(g) + shm::wire::CountersSize(g);
  auto r = shm::ValidateHostConfig(c);
  ExpectInvalid(r, "host_slots x payload_size");
  ExpectInvalid(r, "segment of " + std::to_string(size) + " bytes but only");
  ExpectInvalid(r, "of memory are available");
}

TEST(ValidateHostConfig, RejectsBadModes) {
  for (uint32_t mode : {0u, 0400u, 0200u, 0477u, 01600u, 04600u, 0xFFFFFFFFu}) {
    auto c = Config();
    c.mode = mode;
    ExpectInvalid(shm::ValidateHostConfig(c), "mode must be");
  }
}

TEST(ValidateHostConfig, AcceptsModesThatIncludeOwnerReadWrite) {
  for (uint32_t mode : {0600u, 0640u, 0660u, 0666u, 0700u, 0777u}) {
    auto c = Config();
    c.mode = mode;
    EXPECT_TRUE(shm::ValidateHostConfig(c).ok()) << std::oct << mode;
  }
}

TEST(ValidateHostConfig, RejectsNonPositiveDefaultTimeout) {
  for (auto t : {std::chrono::nanoseconds(0), std::chrono::nanoseconds(-1), std::chrono::nanoseconds(-1000000000)}) {
    auto c = Config();
    c.default_timeout = t;
    ExpectInvalid(shm::ValidateHostConfig(c), "default_timeout must be positive");
  }
}

// ---- The same checks through DirectHost::Init and DirectGuest::Connect ------------------------------------------

TEST(DirectHostInit, RejectsInvalidConfigAndCreatesNothing) {
  const std::string name = shm_unit::UniqueName("init-invalid");
  struct Case {
    void (*mutate)(HostConfig&);
    const char* words;
  };
  const Case cases[] = {
      {[](HostConfig& c) { c.host_slots = 0; }, "host_slots is 0"},
      {[](HostConfig& c) { c.payload_size = 63; }, "payload_size is 63"},
      {[](HostConfig& c) { c.host_slots = 5000; }, "host_slots is 5000"},
      {[](HostConfig& c) { c.guest_slots = 5000; }, "guest_slots is 5000"},
      {[](HostConfig& c) { c.mode = 0444; }, "mode"},
      {[](HostConfig& c) { c.default_timeout = std::chrono::nanoseconds(0); }, "default_timeout"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.words);
    auto c = Config(name);
    k.mutate(c);
    shm::DirectHost host;
    ExpectInvalid(host.Init(c), k.words);
    EXPECT_FALSE(host.initialized());
    EXPECT_FALSE(shm_unit::NameHeld(name));
  }
  shm::DirectHost host;
  ExpectInvalid(host.Init(Config("bad name")), "[A-Za-z0-9._-]");
  ExpectInvalid(host.Init(Config("")), "empty");
}

TEST(DirectHostInit, AcceptsA100CharacterName) {
  std::string name = shm_unit::UniqueName("long");
  name += std::string(100 - name.size(), 'x');
  ASSERT_EQ(name.size(), 100u);
  shm::DirectHost host;
  auto r = host.Init(Config(name));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_TRUE(shm_unit::NameHeld(name));
  host.Shutdown();
  EXPECT_FALSE(shm_unit::NameHeld(name));
}

TEST(DirectHostInit, RoundsPayloadCapacityUp) {
  auto c = Config(shm_unit::UniqueName("round"));
  c.payload_size = 65;
  shm::DirectHost host;
  auto r = host.Init(c);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(host.payload_capacity(), 128u);
  EXPECT_EQ(host.host_slots(), 2u);
  EXPECT_EQ(host.guest_slots(), 1u);
}

TEST(DirectGuestConnect, RejectsInvalidArguments) {
  const std::string name = shm_unit::UniqueName("connect-invalid");
  struct Case {
    void (*mutate)(shm::GuestConfig&);
    const char* words;
  };
  const Case cases[] = {
      {[](shm::GuestConfig& c) { c.name = ""; }, "empty"},
      {[](shm::GuestConfig& c) { c.name = "a b"; }, "[A-Za-z0-9._-]"},
      {[](shm::GuestConfig& c) { c.name = ".."; }, "'.' or '..'"},
      {[](shm::GuestConfig& c) { c.name = std::string(101, 'g'); }, "limit is 100"},
      {[](shm::GuestConfig& c) { c.connect_timeout = std::chrono::nanoseconds(0); },
       "connect_timeout must be positive"},
      {[](shm::GuestConfig& c) { c.connect_timeout = std::chrono::seconds(-1); }, "connect_timeout must be positive"},
      {[](shm::GuestConfig& c) { c.default_timeout = std::chrono::nanoseconds(0); },
       "default_timeout must be positive"},
      {[](shm::GuestConfig& c) { c.retry_interval = std::chrono::nanoseconds(-1); }, "retry_interval"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.words);
    shm::GuestConfig c;
    c.name = name;
    k.mutate(c);
    shm::DirectGuest guest;
    ExpectInvalid(guest.Connect(c), k.words);
    EXPECT_FALSE(guest.connected());
  }
}

TEST(DirectGuestConnect, NoHostGivesNotFoundAtTheDeadline) {
  shm::GuestConfig c;
  c.name = shm_unit::UniqueName("nohost");
  c.connect_timeout = std::chrono::milliseconds(30);
  c.retry_interval = std::chrono::milliseconds(5);
  shm::DirectGuest guest;
  auto r = guest.Connect(c);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound) << r.error().ToString();
  EXPECT_NE(r.error().message().find(c.name), std::string::npos) << r.error().message();
}

}  // namespace

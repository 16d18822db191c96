// SPDX-License-Identifier: Apache-2.0
// detail::ValidateHeader on synthetic header bytes: what a guest checks before it maps a segment. Each defect has
// its own error code, and no input — however hostile — crashes it or makes it accept a geometry that does not fit.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "shm/detail/segment.h"
#include "shm/wire/layout.h"

namespace {

using shm::ErrorCode;
using shm::detail::ValidateHeader;
using shm::wire::Geometry;
using shm::wire::SegmentHeader;

void Put32(std::vector<uint8_t>& b, size_t off, uint32_t v) { std::memcpy(b.data() + off, &v, 4); }
void Put64(std::vector<uint8_t>& b, size_t off, uint64_t v) { std::memcpy(b.data() + off, &v, 8); }
uint32_t Get32(const std::vector<uint8_t>& b, size_t off) {
  uint32_t v;
  std::memcpy(&v, b.data() + off, 4);
  return v;
}
uint64_t Get64(const std::vector<uint8_t>& b, size_t off) {
  uint64_t v;
  std::memcpy(&v, b.data() + off, 8);
  return v;
}

// The 256 header bytes a host writes for geometry g (SPECIFICATION.md §5.1).
std::vector<uint8_t> GoodHeader(const Geometry& g) {
  std::vector<uint8_t> b(shm::wire::kSegmentHeaderSize, 0);
  Put64(b, offsetof(SegmentHeader, magic), shm::wire::kMagic);
  Put32(b, offsetof(SegmentHeader, version), shm::wire::kVersion);
  Put32(b, offsetof(SegmentHeader, header_size), 256);
  Put32(b, offsetof(SegmentHeader, slot_header_size), 64);
  Put32(b, offsetof(SegmentHeader, host_slots), g.host_slots);
  Put32(b, offsetof(SegmentHeader, guest_slots), g.guest_slots);
  Put32(b, offsetof(SegmentHeader, host_payload), g.host_payload);
  Put32(b, offsetof(SegmentHeader, guest_payload), g.guest_payload);
  Put64(b, offsetof(SegmentHeader, total_size), shm::wire::SegmentSize(g));
  Put32(b, offsetof(SegmentHeader, host_pid), 1234);
  return b;
}

const Geometry kGeometry{4, 2, 4096, 1024};

// Validates a copy of `b` in a heap block of exactly b.size() bytes, so that ASan flags any read past it.
shm::Result<Geometry> Validate(const std::vector<uint8_t>& b, uint64_t file_size) {
  std::vector<uint8_t> exact(b);
  exact.shrink_to_fit();
  return ValidateHeader(exact.data(), exact.size(), file_size);
}

void ExpectError(const shm::Result<Geometry>& r, ErrorCode code, const std::string& words) {
  ASSERT_FALSE(r.ok()) << "accepted";
  EXPECT_EQ(r.error().code(), code) << r.error().ToString();
  EXPECT_NE(r.error().message().find(words), std::string::npos)
      << "message '" << r.error().message() << "' should mention '" << words << "'";
}

TEST(ValidateHeader, AcceptsAGoodHeader) {
  const auto b = GoodHeader(kGeometry);
  const uint64_t size = shm::wire::SegmentSize(kGeometry);
  auto r = Validate(b, size);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->host_slots, 4u);
  EXPECT_EQ(r->guest_slots, 2u);
  EXPECT_EQ(r->host_payload, 4096u);
  EXPECT_EQ(r->guest_payload, 1024u);
}

TEST(ValidateHeader, AcceptsAFileLargerThanTheSegment) {
  auto r = Validate(GoodHeader(kGeometry), shm::wire::SegmentSize(kGeometry) + 4096);
  EXPECT_TRUE(r.ok());
}

TEST(ValidateHeader, AcceptsGeometryWithoutGuestSlots) {
  const Geometry g{1, 0, 64, 0};
  auto r = Validate(GoodHeader(g), shm::wire::SegmentSize(g));
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->guest_slots, 0u);
}

// A host hands out its segment only once magic is written (SPECIFICATION.md §4.2 step 5): 0 is not "wait".
TEST(ValidateHeader, ZeroMagicIsBadMagic) {
  auto b = GoodHeader(kGeometry);
  Put64(b, 0, 0);
  ExpectError(Validate(b, shm::wire::SegmentSize(kGeometry)), ErrorCode::kBadMagic, "bad magic");
}

TEST(ValidateHeader, RejectsBadMagic) {
  for (uint64_t magic : {uint64_t{1}, shm::wire::kMagic + 1, ~uint64_t{0}, uint64_t{0x30304745534D4853ull}}) {
    SCOPED_TRACE(magic);
    auto b = GoodHeader(kGeometry);
    Put64(b, 0, magic);
    ExpectError(Validate(b, shm::wire::SegmentSize(kGeometry)), ErrorCode::kBadMagic, "magic");
  }
}

TEST(ValidateHeader, RejectsAnotherVersionAndNamesBoth) {
  for (uint32_t version : {0u, 1u, 2u, 4u, 0xFFFFFFFFu}) {
    auto b = GoodHeader(kGeometry);
    Put32(b, offsetof(SegmentHeader, version), version);
    ExpectError(Validate(b, shm::wire::SegmentSize(kGeometry)), ErrorCode::kVersionMismatch,
                "version " + std::to_string(version));
  }
}

TEST(ValidateHeader, RejectsUnknownHeaderSizesOrFlags) {
  struct Case {
    size_t offset;
    uint32_t value;
  };
  const Case cases[] = {
      {offsetof(SegmentHeader, header_size), 255},     {offsetof(SegmentHeader, header_size), 512},
      {offsetof(SegmentHeader, header_size), 0},       {offsetof(SegmentHeader, slot_header_size), 128},
      {offsetof(SegmentHeader, slot_header_size), 32}, {offsetof(SegmentHeader, flags), 1},
      {offsetof(SegmentHeader, flags), 0x80000000u},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("offset " + std::to_string(c.offset) + " = " + std::to_string(c.value));
    auto b = GoodHeader(kGeometry);
    Put32(b, c.offset, c.value);
    ExpectError(Validate(b, shm::wire::SegmentSize(kGeometry)), ErrorCode::kBadGeometry, "header");
  }
}

TEST(ValidateHeader, RejectsImpossibleGeometry) {
  struct Case {
    Geometry g;
    const char* what;
  };
  const Case cases[] = {
      {{0, 2, 4096, 1024}, "zero host slots"},
      {{4097, 0, 64, 0}, "too many host slots"},
      {{1, 4097, 64, 64}, "too many guest slots"},
      {{0xFFFFFFFFu, 0xFFFFFFFFu, 64, 64}, "huge slot counts"},
      {{4, 2, 100, 1024}, "host payload not a multiple of 64"},
      {{4, 2, 4096, 1000}, "guest payload not a multiple of 64"},
      {{4, 2, 0, 1024}, "zero host payload"},
      {{4, 2, 32, 1024}, "host payload under 64"},
      {{4, 2, (1u << 30) + 64, 1024}, "host payload over the maximum"},
      {{4, 2, 0xFFFFFFC0u, 1024}, "huge host payload"},
      {{4, 0, 4096, 1024}, "guest payload without guest slots"},
      {{4, 2, 4096, 0}, "guest slots without payload"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto b = GoodHeader(kGeometry);
    Put32(b, offsetof(SegmentHeader, host_slots), c.g.host_slots);
    Put32(b, offsetof(SegmentHeader, guest_slots), c.g.guest_slots);
    Put32(b, offsetof(SegmentHeader, host_payload), c.g.host_payload);
    Put32(b, offsetof(SegmentHeader, guest_payload), c.g.guest_payload);
    // total_size is left as the good geometry's; the geometry check must come first.
    ExpectError(Validate(b, uint64_t{1} << 50), ErrorCode::kBadGeometry, "impossible geometry");
  }
}

TEST(ValidateHeader, RejectsTotalSizeThatDisagreesWithGeometry) {
  const uint64_t size = shm::wire::SegmentSize(kGeometry);
  for (uint64_t total : {uint64_t{0}, size - 4096, size - 1, size + 1, size + 4096, ~uint64_t{0}}) {
    SCOPED_TRACE(total);
    auto b = GoodHeader(kGeometry);
    Put64(b, offsetof(SegmentHeader, total_size), total);
    ExpectError(Validate(b, ~uint64_t{0}), ErrorCode::kBadGeometry, std::to_string(size));
  }
}

TEST(ValidateHeader, RejectsFileSmallerThanItsHeaderClaims) {
  const uint64_t size = shm::wire::SegmentSize(kGeometry);
  for (uint64_t file_size : {size - 1, size - 4096, uint64_t{256}, uint64_t{4096}}) {
    SCOPED_TRACE(file_size);
    ExpectError(Validate(GoodHeader(kGeometry), file_size), ErrorCode::kTruncated, std::to_string(size));
  }
}

TEST(ValidateHeader, RejectsFileShorterThanTheHeader) {
  for (uint64_t file_size : {uint64_t{0}, uint64_t{1}, uint64_t{255}}) {
    SCOPED_TRACE(file_size);
    ExpectError(Validate(GoodHeader(kGeometry), file_size), ErrorCode::kTruncated, "256");
  }
}

TEST(ValidateHeader, RejectsBufferShorterThanTheHeaderWithoutReadingPastIt) {
  const auto good = GoodHeader(kGeometry);
  for (size_t n : {size_t{0}, size_t{1}, size_t{8}, size_t{48}, size_t{255}}) {
    SCOPED_TRACE(n);
    std::vector<uint8_t> b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    ExpectError(Validate(b, shm::wire::SegmentSize(kGeometry)), ErrorCode::kTruncated, "header");
  }
  // A null buffer of length 0 is a short read, not a dereference.
  auto r = ValidateHeader(nullptr, 0, shm::wire::SegmentSize(kGeometry));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kTruncated);
}

TEST(ValidateHeader, EachDefectHasItsOwnCode) {
  const uint64_t size = shm::wire::SegmentSize(kGeometry);
  auto bad_magic = GoodHeader(kGeometry);
  Put64(bad_magic, 0, 42);
  auto version = GoodHeader(kGeometry);
  Put32(version, offsetof(SegmentHeader, version), shm::wire::kVersion + 1);
  auto geometry = GoodHeader(kGeometry);
  Put32(geometry, offsetof(SegmentHeader, host_slots), 0);
  const ErrorCode codes[] = {
      Validate(bad_magic, size).error().code(),
      Validate(version, size).error().code(),
      Validate(geometry, size).error().code(),
      Validate(GoodHeader(kGeometry), size - 1).error().code(),
  };
  for (size_t i = 0; i < 4; ++i) {
    for (size_t j = i + 1; j < 4; ++j) EXPECT_NE(codes[i], codes[j]) << i << " vs " << j;
  }
}

// Mutates a valid header's bytes and the file size at random. ValidateHeader must never crash (ASan/UBSan
// builds check the reads) and must accept only headers whose geometry is valid, whose total_size is what that
// geometry needs, and whose file really holds it.
TEST(ValidateHeader, RandomMutationsNeverCrashAndOnlyAcceptWhatFits) {
  const uint32_t seed = 20240611;
  RecordProperty("seed", static_cast<int>(seed));
  std::printf("ValidateHeader mutation seed: %u\n", seed);
  std::mt19937 rng(seed);
  const std::vector<Geometry> bases = {{4, 2, 4096, 1024}, {1, 0, 64, 0}, {64, 64, 64, 128}};
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const Geometry& base = bases[rng() % bases.size()];
    auto b = GoodHeader(base);
    const uint64_t real_size = shm::wire::SegmentSize(base);
    // Mutate a few fields: mostly the 48 meaningful bytes, sometimes whole words with extreme values.
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations; ++m) {
      switch (rng() % 4) {
        case 0: b[rng() % 48] = static_cast<uint8_t>(rng()); break;
        case 1: b[rng() % b.size()] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 2: {
          const uint32_t extremes[] = {0u, 1u, 63u, 64u, 65u, 4096u, 4097u, 1u << 30, (1u << 30) + 64, 0xFFFFFFFFu};
          Put32(b, 4 * (2 + rng() % 8), extremes[rng() % 10]);  // a u32 field in bytes 8..39
          break;
        }
        default: Put64(b, 40, rng() % 2 ? real_size + (rng() % 3) * 4096 - 4096 : (uint64_t{rng()} << 20)); break;
      }
    }
    uint64_t file_size = 0;
    switch (rng() % 5) {
      case 0: file_size = real_size; break;
      case 1: file_size = Get64(b, 40); break;
      case 2: file_size = Get64(b, 40) - 1; break;
      case 3: file_size = rng() % 300; break;
      default: file_size = (uint64_t{rng()} << 32) | rng(); break;
    }
    const size_t n = rng() % 10 == 0 ? rng() % 257 : b.size();
    b.resize(n);
    auto r = Validate(b, file_size);
    if (!r.ok()) {
      ++rejected;
      continue;
    }
    ++accepted;
    // Whatever was accepted is consistent with its own bytes and fits the file.
    ASSERT_EQ(n, 256u);
    ASSERT_EQ(Get64(b, 0), shm::wire::kMagic);
    ASSERT_EQ(Get32(b, 8), shm::wire::kVersion);
    ASSERT_TRUE(shm::wire::GeometryValid(*r));
    ASSERT_EQ(r->host_slots, Get32(b, 20));
    ASSERT_EQ(r->guest_slots, Get32(b, 24));
    ASSERT_EQ(r->host_payload, Get32(b, 28));
    ASSERT_EQ(r->guest_payload, Get32(b, 32));
    ASSERT_EQ(Get64(b, 40), shm::wire::SegmentSize(*r));
    ASSERT_GE(file_size, shm::wire::SegmentSize(*r)) << "iteration " << iter;
  }
  RecordProperty("accepted", accepted);
  RecordProperty("rejected", rejected);
  EXPECT_GT(accepted, 0) << "the mutations never left a valid header: the test would prove nothing";
  EXPECT_GT(rejected, 0);
}

}  // namespace

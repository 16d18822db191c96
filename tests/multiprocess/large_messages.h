// SPDX-License-Identifier: Apache-2.0
// What the large-message tests and the peer agree on: a byte pattern any side can generate at any offset (so a
// 256 MiB message never has to exist whole to be sent or checked), a digest, and the handler both the peer's
// guest and the tests' host run for the large-message request types.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "shm/handler.h"
#include "shm/transfer.h"

namespace shm_test {

// Request types of the large-message handler (any size, any side).
constexpr uint32_t kTypeComplement = 208;  // reply: every request byte complemented
constexpr uint32_t kTypeGenerate = 209;    // payload: u64 size, u64 seed; reply: Pattern(seed) of that size
constexpr uint32_t kTypeDigest = 210;      // reply: u64 size, u64 Digest of the request

inline uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Byte `p` of the pattern of `seed`.
inline uint8_t PatternByte(uint64_t seed, uint64_t p) {
  return static_cast<uint8_t>(Mix(seed ^ (p / 8)) >> (8 * (p % 8)));
}

// Bytes [offset, offset + into.size()) of the pattern of `seed`.
inline void FillPattern(uint64_t seed, uint64_t offset, shm::MutableBytes into) {
  uint8_t* out = into.data();
  uint64_t p = offset, end = offset + into.size();
  for (; p < end && p % 8 != 0; ++p) *out++ = PatternByte(seed, p);
  for (; p + 8 <= end; p += 8, out += 8) {
    const uint64_t w = Mix(seed ^ (p / 8));
    std::memcpy(out, &w, 8);  // little-endian, as PatternByte
  }
  for (; p < end; ++p) *out++ = PatternByte(seed, p);
}

// The pattern of `seed`, `size` bytes, as a Source written straight into the slots.
inline shm::Source PatternSource(uint64_t seed, uint64_t size) {
  return shm::Source{size, [seed](uint64_t offset, shm::MutableBytes into) {
                       FillPattern(seed, offset, into);
                       return true;
                     }};
}

// Whether `b` is the pattern of `seed` from offset 0; else the first offset that differs (or the size).
inline uint64_t FirstPatternMismatch(uint64_t seed, const uint8_t* b, uint64_t n) {
  uint8_t block[4096];
  for (uint64_t at = 0; at < n; at += sizeof block) {
    const uint64_t len = n - at < sizeof block ? n - at : sizeof block;
    FillPattern(seed, at, shm::MutableBytes(block, static_cast<size_t>(len)));
    if (std::memcmp(block, b + at, static_cast<size_t>(len)) != 0) {
      for (uint64_t i = 0; i < len; ++i) {
        if (block[i] != b[at + i]) return at + i;
      }
    }
  }
  return n;
}

// An order-sensitive digest, a word at a time.
inline uint64_t Digest(const uint8_t* p, uint64_t n) {
  uint64_t h = 0xCBF29CE484222325ull ^ n;
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = Mix(h ^ w);
  }
  for (; i < n; ++i) h = Mix(h ^ p[i]);
  return h;
}

inline std::vector<uint8_t> U64Pair(uint64_t a, uint64_t b) {
  std::vector<uint8_t> v(16);
  std::memcpy(v.data(), &a, 8);
  std::memcpy(v.data() + 8, &b, 8);
  return v;
}

inline bool ReadU64Pair(shm::Bytes b, uint64_t* x, uint64_t* y) {
  if (b.size() != 16) return false;
  std::memcpy(x, b.data(), 8);
  std::memcpy(y, b.data() + 8, 8);
  return true;
}

// The handler of the large-message types; `*handled` says whether `m` was one of them.
inline shm::Reply ServeLarge(const shm::Message& m, shm::MutableBytes out, bool* handled) {
  *handled = true;
  const auto type = static_cast<uint32_t>(m.type);
  if (type == kTypeComplement) {
    std::vector<uint8_t> copy(m.data.data(), m.data.data() + m.data.size());
    for (auto& c : copy) c = static_cast<uint8_t>(~c);
    return shm::Reply::Owned(std::move(copy), m.type);
  }
  if (type == kTypeGenerate) {
    uint64_t size = 0, seed = 0;
    if (!ReadU64Pair(m.data, &size, &seed)) return shm::Reply::Failure();
    return shm::Reply::Large(PatternSource(seed, size), m.type);
  }
  if (type == kTypeDigest) {
    const auto d = U64Pair(m.data.size(), Digest(m.data.data(), m.data.size()));
    std::memcpy(out.data(), d.data(), d.size());
    return shm::Reply{16, m.type};
  }
  *handled = false;
  return shm::Reply{};
}

// Checks one round of the three kinds of large call through `call` (a function (Source, type, Sink) ->
// Result<Received>): a large request with a small answer, a small request with a large answer, and large both
// ways. Returns "" or what went wrong.
template <typename CallFn>
std::string CheckLargeCalls(CallFn call, uint64_t size, uint64_t seed, bool both_ways = true) {
  std::vector<uint8_t> answer;
  auto r = call(PatternSource(seed, size), shm::MsgType(kTypeDigest), shm::Sink::Into(answer));
  if (!r) return "digest call of " + std::to_string(size) + " bytes: " + r.error().ToString();
  uint64_t got_size = 0, got_digest = 0;
  std::vector<uint8_t> expect(static_cast<size_t>(size));
  FillPattern(seed, 0, shm::MutableBytes(expect.data(), expect.size()));
  if (!ReadU64Pair(shm::Bytes(answer), &got_size, &got_digest) || got_size != size ||
      got_digest != Digest(expect.data(), expect.size())) {
    return "the peer saw other bytes than the " + std::to_string(size) + " sent";
  }
  const auto ask = U64Pair(size, seed + 1);
  r = call(shm::Source::Of(shm::Bytes(ask)), shm::MsgType(kTypeGenerate), shm::Sink::Into(answer));
  if (!r) return "generate call of " + std::to_string(size) + " bytes: " + r.error().ToString();
  if (r->size != size || answer.size() != size) return "a generated answer of " + std::to_string(r->size) + " bytes";
  if (const uint64_t at = FirstPatternMismatch(seed + 1, answer.data(), size); at != size) {
    return "the generated answer of " + std::to_string(size) + " bytes differs at offset " + std::to_string(at);
  }
  if (!both_ways) return "";
  r = call(shm::Source::Of(shm::Bytes(expect)), shm::MsgType(kTypeComplement), shm::Sink::Into(answer));
  if (!r) return "complement call of " + std::to_string(size) + " bytes: " + r.error().ToString();
  if (answer.size() != size) return "a complemented answer of " + std::to_string(answer.size()) + " bytes";
  for (uint64_t i = 0; i < size; ++i) {
    if (answer[i] != static_cast<uint8_t>(~expect[i])) {
      return "the complemented answer of " + std::to_string(size) + " bytes differs at offset " + std::to_string(i);
    }
  }
  return "";
}

}  // namespace shm_test

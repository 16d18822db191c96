// SPDX-License-Identifier: Apache-2.0
// platform::CopyBytes (platform/copy.h): the same bytes as memcpy at every distance between source and
// destination modulo a page and at every size around its thresholds, and nothing written outside the
// destination. Its reason (speed at some distances) is a benchmark's matter, not a test's.
#include "shm/platform/copy.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace {

constexpr size_t kGuard = 80;  // bytes checked on each side of the destination

TEST(CopyBytes, CopiesExactlyTheRangeAtEveryDistanceAndSize) {
  const std::vector<size_t> sizes = {0,    1,    15,   16,   63,   64,   65,    127,       2047,
                                     2048, 2049, 2111, 4096, 4097, 4159, 65536, 70000 + 13};
  std::vector<size_t> distances;  // destination - source, modulo 4096, with the source at a page start
  for (size_t d = 0; d < 160; ++d) distances.push_back(d);
  for (size_t d : {1000u, 2048u, 4000u, 4032u, 4080u, 4095u}) distances.push_back(d);
  const size_t largest = sizes.back();
  std::vector<uint8_t> src_block(largest + 4096), dst_block(largest + 2 * 4096 + 2 * kGuard);
  // The source at the start of a 4096-aligned address inside src_block.
  uint8_t* const src = src_block.data() + (4096 - reinterpret_cast<uintptr_t>(src_block.data()) % 4096) % 4096;
  for (size_t i = 0; i < largest; ++i) src[i] = static_cast<uint8_t>(i * 131 + (i >> 8) * 7 + 1);
  uint8_t* const dst_page =
      dst_block.data() + kGuard + (4096 - reinterpret_cast<uintptr_t>(dst_block.data() + kGuard) % 4096) % 4096;
  for (size_t n : sizes) {
    for (size_t d : distances) {
      uint8_t* const dst = dst_page + d;
      for (size_t i = 0; i < n + 2 * kGuard; ++i) (dst - kGuard)[i] = 0xEE;
      shm::platform::CopyBytes(dst, src, n);
      for (size_t i = 0; i < kGuard; ++i) {
        ASSERT_EQ((dst - kGuard)[i], 0xEE) << "wrote before the destination: size " << n << ", distance " << d;
        ASSERT_EQ(dst[n + i], 0xEE) << "wrote past the destination: size " << n << ", distance " << d;
      }
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(dst[i], src[i]) << "byte " << i << ", size " << n << ", distance " << d;
    }
  }
}

// memcpy(nullptr, nullptr, 0) is undefined (UBSan's nonnull check reports it in the sanitizer build); an empty
// message's view may well be null.
TEST(CopyBytes, AcceptsNullPointersForNothing) {
  shm::platform::CopyBytes(nullptr, nullptr, 0);
  uint8_t one = 7;
  shm::platform::CopyBytes(&one, nullptr, 0);
  EXPECT_EQ(one, 7);
}

}  // namespace

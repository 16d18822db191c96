// SPDX-License-Identifier: Apache-2.0
// LatencyHistogram: nanosecond durations counted in log-linear buckets, for percentiles without keeping samples.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace shm_demo {

/// Exact below 128 ns; above, 128 buckets per power of two, so a reported percentile is at most 0.8% above
/// the true sample. Add() never allocates. Not thread-safe: keep one per thread and Merge() them.
class LatencyHistogram {
 public:
  LatencyHistogram() : counts_(kBuckets, 0) {}

  void Add(uint64_t ns) noexcept {
    ++counts_[Index(ns)];
    ++total_;
    max_ = std::max(max_, ns);
  }
  void Merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
  }
  uint64_t count() const noexcept { return total_; }
  uint64_t max() const noexcept { return max_; }

  /// The value at quantile q (0 < q <= 1): the upper bound of the bucket holding the ceil(q * count)-th
  /// smallest sample, capped at the maximum. 0 when empty.
  uint64_t Percentile(double q) const noexcept {
    if (total_ == 0) return 0;
    const auto rank = std::clamp<uint64_t>(static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_))), 1,
                                           total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(UpperBound(i), max_);
    }
    return max_;
  }

 private:
  static constexpr unsigned kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  static size_t Index(uint64_t v) noexcept {
    if (v < kSub) return static_cast<size_t>(v);
    const unsigned shift = 63u - static_cast<unsigned>(__builtin_clzll(v)) - kSubBits;
    return static_cast<size_t>(((uint64_t{shift} + 1) << kSubBits) + ((v >> shift) - kSub));
  }
  static uint64_t UpperBound(size_t i) noexcept {
    if (i < kSub) return i;
    const uint64_t shift = (i >> kSubBits) - 1;
    const uint64_t sub = (i & (kSub - 1)) + kSub;
    return ((sub + 1) << shift) - 1;  // the top bucket wraps to UINT64_MAX, which is right
  }

  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t max_ = 0;
};

}  // namespace shm_demo

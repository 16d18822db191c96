// SPDX-License-Identifier: Apache-2.0
// LatencyHistogram: nanosecond durations counted in log-linear buckets, for percentiles without keeping
// samples. The one histogram of shm-demo and shm-bench, so both report percentiles the same way.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace shm_tools {

/// Exact below 128 ns; above, every power of two is split into 128 equal buckets, so a bucket is at most 1/128
/// (0.8 %) of its values wide. A percentile is reported as the upper bound of the bucket that holds it, capped
/// at the largest sample: never below the true sample, at most 0.8 % above it. Add() is an index computation
/// and one increment, and never allocates (the buckets are allocated once, by the constructor). Not
/// thread-safe: keep one per thread and Merge() them.
class LatencyHistogram {
 public:
  LatencyHistogram() : counts_(kBuckets, 0) {}

  void Add(uint64_t ns) noexcept {
    ++counts_[Index(ns)];
    ++count_;
    sum_ += ns;
    max_ = std::max(max_, ns);
    min_ = std::min(min_, ns);
  }
  void Merge(const LatencyHistogram& other) noexcept {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    max_ = std::max(max_, other.max_);
    min_ = std::min(min_, other.min_);
  }

  uint64_t count() const noexcept { return count_; }
  uint64_t max() const noexcept { return count_ ? max_ : 0; }
  uint64_t min() const noexcept { return count_ ? min_ : 0; }
  double mean() const noexcept { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }

  /// The value at quantile q (0 < q <= 1): the upper bound of the bucket holding the ceil(q * count)-th
  /// smallest sample, capped at the maximum. 0 when empty.
  uint64_t Percentile(double q) const noexcept {
    if (count_ == 0) return 0;
    const auto rank =
        std::clamp<uint64_t>(static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_))), 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(UpperBound(i), max_);
    }
    return max_;
  }

  // The bucket arithmetic, public so that tests can check it.
  static constexpr unsigned kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  /// The position of the highest set bit of v (v > 0): floor(log2(v)), without compiler builtins.
  static constexpr unsigned FloorLog2(uint64_t v) noexcept {
    unsigned r = 0;
    for (unsigned step = 32; step > 0; step >>= 1) {
      if ((v >> step) != 0) {
        v >>= step;
        r += step;
      }
    }
    return r;
  }
  static constexpr size_t Index(uint64_t v) noexcept {
    if (v < kSub) return static_cast<size_t>(v);
    const unsigned shift = FloorLog2(v) - kSubBits;
    return static_cast<size_t>(((uint64_t{shift} + 1) << kSubBits) + ((v >> shift) - kSub));
  }
  /// The largest value that falls into bucket i.
  static constexpr uint64_t UpperBound(size_t i) noexcept {
    if (i < kSub) return i;
    const uint64_t shift = (i >> kSubBits) - 1;
    const uint64_t sub = (i & (kSub - 1)) + kSub;
    return ((sub + 1) << shift) - 1;  // the top bucket wraps to UINT64_MAX, which is right
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = UINT64_MAX;
};

static_assert(LatencyHistogram::FloorLog2(1) == 0 && LatencyHistogram::FloorLog2(UINT64_MAX) == 63);
static_assert(LatencyHistogram::Index(UINT64_MAX) == LatencyHistogram::kBuckets - 1);
static_assert(LatencyHistogram::UpperBound(LatencyHistogram::Index(1000)) >= 1000);

}  // namespace shm_tools

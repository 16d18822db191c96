// SPDX-License-Identifier: Apache-2.0
// shm-bench — a preallocated log-linear latency histogram.
//
// Values (nanoseconds) below 128 have a bucket each; above, every power of two is split into 64 equal buckets,
// so a bucket is at most 1/64 (1.6 %) of its value wide. Recording is an index computation and one increment
// into a fixed array: no allocation, no branch on the data, a few nanoseconds.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace bench {

class Histogram {
 public:
  static constexpr int kSubBits = 6;                           // 64 sub-buckets per power of two
  static constexpr uint64_t kLinear = uint64_t{2} << kSubBits;  // values < 128 are exact
  static constexpr size_t kBuckets = kLinear + (64 - (kSubBits + 1)) * (size_t{1} << kSubBits);

  void Record(uint64_t v) noexcept {
    ++counts_[Index(v)];
    ++count_;
    sum_ += v;
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
  }

  void Merge(const Histogram& o) noexcept {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    sum_ += o.sum_;
    max_ = std::max(max_, o.max_);
    min_ = std::min(min_, o.min_);
  }

  uint64_t count() const noexcept { return count_; }
  uint64_t max() const noexcept { return count_ ? max_ : 0; }
  uint64_t min() const noexcept { return count_ ? min_ : 0; }
  double mean() const noexcept { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }

  /// The value at quantile q (0..1): the midpoint of the bucket holding the ceil(q * count)-th value, clamped
  /// to the recorded min and max.
  double Quantile(double q) const noexcept {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count_) + 0.999999);
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const double mid = static_cast<double>(Lower(i)) + static_cast<double>(Width(i) - 1) / 2.0;
        return std::clamp(mid, static_cast<double>(min_), static_cast<double>(max_));
      }
    }
    return static_cast<double>(max_);
  }

  static size_t Index(uint64_t v) noexcept {
    if (v < kLinear) return static_cast<size_t>(v);
    const int e = 63 - __builtin_clzll(v);  // >= kSubBits + 1
    const uint64_t sub = (v >> (e - kSubBits)) - (uint64_t{1} << kSubBits);
    return static_cast<size_t>(kLinear + static_cast<uint64_t>(e - (kSubBits + 1)) * (uint64_t{1} << kSubBits) + sub);
  }
  static uint64_t Lower(size_t i) noexcept {
    if (i < kLinear) return i;
    const size_t k = i - kLinear;
    const int e = static_cast<int>(k >> kSubBits) + kSubBits + 1;
    const uint64_t sub = k & ((size_t{1} << kSubBits) - 1);
    return ((uint64_t{1} << kSubBits) + sub) << (e - kSubBits);
  }
  static uint64_t Width(size_t i) noexcept {
    if (i < kLinear) return 1;
    const int e = static_cast<int>((i - kLinear) >> kSubBits) + kSubBits + 1;
    return uint64_t{1} << (e - kSubBits);
  }

 private:
  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t max_ = 0;
  uint64_t min_ = UINT64_MAX;
};

}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// shm — the counters a side keeps (SPECIFICATION.md §5.4), as DirectHost::Stats() and DirectGuest::Stats()
// return them (StatsSnapshot)
// return them, and the optional latency histogram of calls.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace shm {

/// What a side counted as the caller of some slots (a host's calls to its guest, a guest's guest calls).
/// Plain values: a copy taken by Stats().
struct CallStats {
  uint64_t calls = 0;      ///< Calls that ended with an answer this side accepted (a transfer is one call).
  uint64_t bytes_out = 0;  ///< Request bytes of every published request (of a large one, all of its chunks).
  uint64_t bytes_in = 0;   ///< Response bytes of the accepted answers (of a large one, its whole size).
  uint64_t timeouts = 0;   ///< Calls that ended at their deadline (kTimeout).
  uint64_t peer_dead = 0;  ///< Calls that ended because the server died (kPeerDead; kHostGone in a guest).
  uint64_t protocol = 0;   ///< Calls that ended with a protocol violation by the peer (kProtocol).
  uint64_t ended = 0;      ///< Calls ended by the host's shutdown or this side's close (kShuttingDown, kClosed).
  /// SYSTEM_ERROR answers (kRemote) by wire::WireError value: remote[e] for e in 1..7, remote[0] for a value
  /// this version does not define.
  uint64_t remote[8] = {};

  /// Every remote error answer.
  uint64_t remote_errors() const noexcept {
    uint64_t n = 0;
    for (uint64_t v : remote) n += v;
    return n;
  }
  /// Every call that failed after its request was published.
  uint64_t errors() const noexcept { return timeouts + peer_dead + protocol + ended + remote_errors(); }
  /// Add `o`'s counts to these (sums over slots).
  void Add(const CallStats& o) noexcept {
    calls += o.calls;
    bytes_out += o.bytes_out;
    bytes_in += o.bytes_in;
    timeouts += o.timeouts;
    peer_dead += o.peer_dead;
    protocol += o.protocol;
    ended += o.ended;
    for (int i = 0; i < 8; ++i) remote[i] += o.remote[i];
  }
};

/// What a side counted as the server of some slots (a guest serving host calls, a host serving guest calls).
struct ServeStats {
  uint64_t served = 0;      ///< Requests taken and finished, error answers and dropped answers included.
  uint64_t bytes_in = 0;    ///< Request bytes handed to the handler.
  uint64_t bytes_out = 0;   ///< Response bytes written.
  uint64_t late = 0;        ///< Answers discarded because the caller had given up (timed out) meanwhile.
  uint64_t lost = 0;        ///< Answers dropped because the slot had been taken from this server.
  uint64_t heartbeats = 0;  ///< HEARTBEAT_REQ answered by the runtime.
  /// SYSTEM_ERROR answers this side sent, by wire::WireError value (1..7; [0] is unused).
  uint64_t answered_errors[8] = {};

  /// Every SYSTEM_ERROR answer sent.
  uint64_t error_answers() const noexcept {
    uint64_t n = 0;
    for (uint64_t v : answered_errors) n += v;
    return n;
  }
  /// Add `o`'s counts to these (sums over slots).
  void Add(const ServeStats& o) noexcept {
    served += o.served;
    bytes_in += o.bytes_in;
    bytes_out += o.bytes_out;
    late += o.late;
    lost += o.lost;
    heartbeats += o.heartbeats;
    for (int i = 0; i < 8; ++i) answered_errors[i] += o.answered_errors[i];
  }
};

/// Percentiles of the latency of successful calls (publish, wait, read the answer; claiming a slot is not
/// included; a message larger than a slot is one sample, from its first chunk to its answer's last), in nanoseconds.
/// Each value is the upper bound of the histogram bucket that holds it (at most 1/16, 6 %, above the true value),
/// capped at the largest sample.
struct LatencyStats {
  bool enabled = false;  ///< latency_histogram was set in HostConfig or GuestConfig.
  uint64_t count = 0;    ///< Successful calls measured.
  uint64_t min_ns = 0;   ///< The fastest (exact).
  uint64_t max_ns = 0;   ///< The slowest (exact).
  uint64_t p50_ns = 0;   ///< Median.
  uint64_t p90_ns = 0;   ///< 90th percentile.
  uint64_t p99_ns = 0;   ///< 99th percentile.
  uint64_t p999_ns = 0;  ///< 99.9th percentile.
};

/// A side's counters at one moment. Each counter is read once with an atomic load; the set is not a
/// consistent snapshot (calls in flight meanwhile may be counted in some counters and not yet in others).
struct StatsSnapshot {
  /// Whether the counters live in the segment, where shm-inspect reads them (false: the host made no counters
  /// region, and this guest counts in its own memory only).
  bool shared = false;
  CallStats calls;    ///< This side as caller, summed over the slots it calls on.
  ServeStats served;  ///< This side as server, summed over the slots it serves.
  /// Per slot this side calls on (host: host slot i at [i]; guest: guest slot j at [j]).
  std::vector<CallStats> call_slots;
  /// Per slot this side serves (host: guest slot j at [j]; guest: host slot i at [i]).
  std::vector<ServeStats> serve_slots;
  LatencyStats latency;  ///< Empty unless enabled in the config.
};

namespace detail {

/// Latency histogram shared by the threads of one side: log-linear buckets (every power of two split in 16),
/// atomic counts. Add() is thread-safe and lock-free (two relaxed atomic adds and a max); Read() may run
/// concurrently with it.
class LatencyHistogram {
 public:
  static constexpr unsigned kSubBits = 4;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  LatencyHistogram() : counts_(new std::atomic<uint64_t>[kBuckets]) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i].store(0, std::memory_order_relaxed);
  }

  void Add(uint64_t ns) noexcept {
    counts_[Index(ns)].fetch_add(1, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (ns > m && !max_.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
    }
    m = min_.load(std::memory_order_relaxed);
    while (ns < m && !min_.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {
    }
  }

  LatencyStats Read() const {
    LatencyStats s;
    s.enabled = true;
    std::vector<uint64_t> counts(kBuckets);
    for (size_t i = 0; i < kBuckets; ++i) {
      counts[i] = counts_[i].load(std::memory_order_relaxed);
      s.count += counts[i];
    }
    if (s.count == 0) return s;
    s.max_ns = max_.load(std::memory_order_relaxed);
    s.min_ns = (std::min)(min_.load(std::memory_order_relaxed), s.max_ns);
    auto at = [&](uint64_t per_mille_tenths) {  // quantile in units of 1/10000
      const uint64_t rank = std::max<uint64_t>(1, (s.count * per_mille_tenths + 9999) / 10000);
      uint64_t seen = 0;
      for (size_t i = 0; i < kBuckets; ++i) {
        seen += counts[i];
        if (seen >= rank) return (std::min)(UpperBound(i), s.max_ns);
      }
      return s.max_ns;
    };
    s.p50_ns = at(5000);
    s.p90_ns = at(9000);
    s.p99_ns = at(9900);
    s.p999_ns = at(9990);
    return s;
  }

  /// Bucket of value v: exact below kSub; above, power of two p of v and the next kSubBits bits.
  static size_t Index(uint64_t v) noexcept {
    if (v < kSub) return static_cast<size_t>(v);
    unsigned p = 63;
    while (!(v >> p)) --p;  // p >= kSubBits
    const uint64_t sub = (v >> (p - kSubBits)) & (kSub - 1);
    return static_cast<size_t>(((p - kSubBits + 1) << kSubBits) + sub);
  }
  /// Largest value of bucket i.
  static uint64_t UpperBound(size_t i) noexcept {
    if (i < kSub) return i;
    const unsigned p = static_cast<unsigned>(i >> kSubBits) + kSubBits - 1;
    const uint64_t sub = i & (kSub - 1);
    const uint64_t low = (uint64_t{1} << p) | (sub << (p - kSubBits));
    return low + (uint64_t{1} << (p - kSubBits)) - 1;
  }

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> max_{0};
  std::atomic<uint64_t> min_{~uint64_t{0}};
};

}  // namespace detail
}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// Waiting on a futex word: spin for an adaptive budget, then sleep in FUTEX_WAIT.
//
// Sleeping costs a wake-up: the notifier's FUTEX_WAKE plus the scheduler's latency to run the waiter again,
// a few microseconds on bare metal, tens on a VM. Spinning for about twice what a wake-up costs before
// sleeping keeps a busy exchange free of system calls while bounding what an idle waiter burns (see
// SpinPolicy::budget_ns for the factor). SpinPolicy learns the cost from real wake-ups: the notifier stamps
// CLOCK_MONOTONIC into the slot just before FUTEX_WAKE and the woken waiter measures how long it took to run.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "shm/platform/platform.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"

namespace shm {
namespace detail {

/// Adaptive spin budget, shared by all waiters of one endpoint. Thread-safe (relaxed atomics; a lost update
/// only delays adaptation).
class SpinPolicy {
 public:
  static constexpr int64_t kMinBudgetNs = 2000;
  static constexpr int64_t kMaxBudgetNs = 200000;
  static constexpr int64_t kInitialCostNs = 50000;

  /// How long to spin before sleeping: twice the wake-up cost. Once one side sleeps, the other's next wait
  /// lasts at least one wake-up latency plus the work in between; spinning less than that makes both sides
  /// sleep on every message, a stable and slow equilibrium.
  int64_t budget_ns() const noexcept {
    return std::clamp(2 * cost_ns_.load(std::memory_order_relaxed), kMinBudgetNs, kMaxBudgetNs);
  }
  /// Feed one measured wake-up latency (ns). Exponential moving average, weight 1/8.
  void Observe(int64_t sample_ns) noexcept {
    if (sample_ns <= 0 || sample_ns > 10000000) return;  // clock noise or a stale stamp
    int64_t cur = cost_ns_.load(std::memory_order_relaxed);
    cost_ns_.store(cur + (sample_ns - cur) / 8, std::memory_order_relaxed);
  }
  int64_t wake_cost_ns() const noexcept { return cost_ns_.load(std::memory_order_relaxed); }

  // ---- Crowded CPUs ---------------------------------------------------------------------------------------
  // Spinning pays only while the peer runs on another CPU. When more threads want to run than there are CPUs
  // (another process's busy loop, or this process's own threads), a spinner holds a CPU that the peer it
  // waits for may need, and a yield hands that CPU to whoever the scheduler picks, often the busy loop for a
  // whole time slice (milliseconds), not the peer. A sleeper, by contrast, is woken with priority over tasks
  // that have been running. So a waiter that sees evidence of crowding (it lost its CPU for longer than
  // kPreemptedNs while spinning, or a wake-up took that long to get it running) spins only briefly and then
  // sleeps, for kCrowdedHoldNs after the last such evidence; then it tries spinning again.

  /// A gap this long between two looks at the clock in a spin, or between a wake-up and the woken waiter
  /// running, means another thread had this CPU: longer than any hypervisor hiccup seen here (10-60 us),
  /// shorter than a scheduler time slice (about 1 ms and more).
  static constexpr int64_t kPreemptedNs = 250000;
  /// How long crowding is assumed after the last evidence of it.
  static constexpr int64_t kCrowdedHoldNs = 200000000;  // 200 ms
  /// How long a waiter spins before sleeping while the CPUs are crowded: long enough to catch a peer that
  /// answers at once, shorter than a wake-up.
  static constexpr int64_t kCrowdedSpinNs = 5000;

  /// Whether the CPUs were recently seen crowded (at `now`).
  bool crowded(int64_t now) const noexcept { return now < crowded_until_ns_.load(std::memory_order_relaxed); }
  /// Evidence of crowding at `now`. Written only when seen (not per call), so the line stays shared.
  void NoteCrowded(int64_t now) noexcept {
    if (crowded_until_ns_.load(std::memory_order_relaxed) < now + kCrowdedHoldNs / 2) {
      crowded_until_ns_.store(now + kCrowdedHoldNs, std::memory_order_relaxed);
    }
  }

 private:
  std::atomic<int64_t> cost_ns_{kInitialCostNs};
  std::atomic<int64_t> crowded_until_ns_{0};
};

/// A peer on this thread's CPU. When a caller and its server run on the same CPU (threads outnumber CPUs and
/// the scheduler put a pair together), only one of them runs at a time: each 4 us pure spin then delays the
/// other by 4 us, and a round trip costs two pure spins and two switches (about 14 us here against 0.4 us for
/// a pair on two CPUs). A waiter whose waits end, kStreak times in a row, right after a yield that let the
/// peer run here (the yield switched to another thread, briefly, and the word changed meanwhile) yields from
/// the start of its waits for kHoldNs. Per thread: which CPU a thread shares, and with whom, is its own.
struct SharedCpu {
  /// How long the peer is assumed to share this CPU after the last evidence of it.
  static constexpr int64_t kHoldNs = 20000000;  // 20 ms
  /// A handoff to a peer on this CPU comes back within this (the peer serves and yields); a yield to some
  /// other busy thread lasts a time slice.
  static constexpr int64_t kHandoffMaxNs = 50000;  // 50 us
  /// How many waits in a row must end that way: a peer on another CPU answers most waits within the pure spin,
  /// and only now and then after a yield that happened to switch to some other thread.
  static constexpr int kStreak = 8;
  struct State {
    int64_t until = 0;  // yield from the start until then
    int streak = 0;     // waits in a row that ended right after a handoff
  };
  static State& Mine() noexcept {
    thread_local State state;
    return state;
  }
  /// Whether this thread's peer was recently seen running on its CPU (at `now`).
  static bool Holds(int64_t now) noexcept { return now < Mine().until; }
  /// A wait ended right after a handoff on this CPU, at `now`.
  static void Note(int64_t now) noexcept {
    State& s = Mine();
    if (++s.streak >= kStreak) {
      s.until = now + kHoldNs;
      s.streak = 0;
    }
  }
  /// A wait that looked ended within its pure spin: the peer runs elsewhere.
  static void Clear() noexcept { Mine().streak = 0; }
};

enum class WaitStatus {
  kReady,    ///< The predicate held; the value is in *observed.
  kTimeout,  ///< The deadline passed.
  kAborted,  ///< The abort hook asked to stop (its reason is the caller's to keep).
};

/// How long a waiter spins without any system call before it starts offering its CPU (sched_yield) between
/// spins. A busy peer answers well within it (a round trip is ~1 us); oversubscribed peers need the yields.
constexpr int64_t kPureSpinNs = 4000;

/// How a wait begins. A side that has just woken its sleeping peer knows the answer is at least one wake-up
/// away, and that the kernel may have queued the peer on this very CPU (on a VM it usually does, even with
/// the other CPU idle): a pure spin there would hold off the peer it waits for. Sleeping at once instead
/// costs a second wake-up per message (measured slower than the yields in BENCHMARKS.md's wake-up case).
enum class WaitStart {
  kSpin,   ///< Spin (pure, then yielding), then sleep: the peer is running.
  kYield,  ///< Spin offering the CPU from the start, then sleep: a woken peer may be queued here.
};

/// How often a sleeping waiter wakes to run the slow (system-call) checks, such as peer liveness.
constexpr int64_t kLivenessSliceNs = 50000000;  // 50 ms

/// Wait until pred(word) holds, the deadline passes, or abort(slow) returns true.
///
/// abort(false) must be cheap (atomic loads); it runs every few dozen spins. abort(true) may make system calls;
/// it runs at most every kLivenessSliceNs while sleeping. `stamp` is the slot's wake_stamp_ns, or nullptr.
/// Thread-safe; any number of waiters may wait on one word.
/// `waiting_bit` is the word's "a sleeper is here" flag: wire::kWaiting for slot words, kDoorbellWaiting for
/// the doorbell.
/// `first_clock`, if given, receives the time of the wait's first clock read (0: it ended before reading the
/// clock, within a few spins).
template <typename Pred, typename Abort>
WaitStatus WaitFor(std::atomic<uint32_t>& word, std::atomic<uint64_t>* stamp, int64_t deadline_ns, SpinPolicy& policy,
                   Pred pred, Abort abort, uint32_t* observed, uint32_t waiting_bit = wire::kWaiting,
                   WaitStart start = WaitStart::kSpin, int64_t* first_clock = nullptr) {
  // Spin phase: two busy peers never leave it, so they never enter the kernel.
  uint32_t v = word.load(std::memory_order_acquire);  // SYNC POINT READ: the word
  if (pred(v)) {
    *observed = v;
    return WaitStatus::kReady;
  }
  // The clock is first read at the first check, not before spinning: a quick answer costs no clock read.
  int64_t spin_end = 0, pure_end = 0, last = 0, switches = -1;
  bool detect_shared = false;
  for (uint32_t i = 1;; ++i) {
    platform::CpuRelax();
    v = word.load(std::memory_order_acquire);
    if (pred(v)) {
      if (detect_shared) SharedCpu::Clear();  // answered within the pure spin (no yield has come yet)
      *observed = v;
      return WaitStatus::kReady;
    }
    if ((i & 7) == 0) {
      const int64_t now = platform::MonotonicNs();
      if (i == 8) {
        if (first_clock != nullptr) *first_clock = now;
        if (policy.crowded(now)) {
          // Crowded CPUs: a short pure spin, then sleep (SpinPolicy: crowded CPUs). No yields: they would
          // hand this CPU to whatever else runs here rather than to the peer.
          // A waiter that has just woken its peer sleeps at once: the answer is a wake-up away.
          spin_end = pure_end =
              start == WaitStart::kYield ? now : (std::min)(now + SpinPolicy::kCrowdedSpinNs, deadline_ns);
        } else {
          spin_end = (std::min)(now + policy.budget_ns(), deadline_ns);
          // Only a wait that would pure-spin looks for a peer on its CPU (a waiter that woke its peer yields
          // at once anyway): the switch counts cost system calls around its yields.
          detect_shared = start == WaitStart::kSpin && !SharedCpu::Holds(now);
          pure_end = detect_shared ? (std::min)(now + kPureSpinNs, spin_end) : now;
        }
      } else if (now - last > SpinPolicy::kPreemptedNs) {
        policy.NoteCrowded(now);  // this spin lost its CPU (or its yield gave it away) for that long
        spin_end = (std::min)(spin_end, now);
      }
      last = now;
      if (now >= spin_end) break;
      // Past the pure spin, the peer is slow or not running: with more busy threads than cores it may be
      // waiting for this very CPU, so offer it (a no-op system call when nothing else is runnable here).
      if (now >= pure_end) {
        if (detect_shared && switches < 0) switches = platform::ContextSwitches();
        platform::YieldThread();
        // The word changed while this thread had given its CPU to another thread (the yield switched, and
        // was brief: not a time slice): the peer runs on this CPU, so pure spinning only holds it off
        // (SharedCpu).
        v = word.load(std::memory_order_acquire);
        if (pred(v)) {
          const int64_t after = platform::MonotonicNs();
          if (detect_shared) {
            if (after - now < SharedCpu::kHandoffMaxNs && platform::ContextSwitches() > switches) {
              SharedCpu::Note(after);
            } else {
              SharedCpu::Clear();
            }
          }
          *observed = v;
          return WaitStatus::kReady;
        }
        switches = -1;
      }
      if ((i & 63) == 0 && abort(false)) return WaitStatus::kAborted;
    }
  }
  // Sleep phase: publish kWaiting, re-check, sleep; whoever changes the word sees kWaiting and wakes us.
  // The first slow check comes one slice into the sleep: a wait that ends soon after the spin makes no
  // system call besides the futex.
  int64_t next_slow = platform::MonotonicNs() + kLivenessSliceNs;
  for (;;) {
    v = word.load(std::memory_order_acquire);
    if (pred(v)) {
      *observed = v;
      return WaitStatus::kReady;
    }
    int64_t now = platform::MonotonicNs();
    if (abort(false)) return WaitStatus::kAborted;
    if (now >= next_slow) {
      if (abort(true)) return WaitStatus::kAborted;
      next_slow = now + kLivenessSliceNs;
    }
    if (now >= deadline_ns) return WaitStatus::kTimeout;
    if (!(v & waiting_bit)) {
      // Publish "I am going to sleep", then loop to re-check everything once more before sleeping. seq_cst
      // pairs with Nudge(): either the nudger sees kWaiting, or this waiter sees the nudger's flag.
      (void)word.compare_exchange_strong(v, v | waiting_bit, std::memory_order_seq_cst, std::memory_order_acquire);
      continue;
    }
    const int64_t sleep_ns = std::max<int64_t>(1000, (std::min)(deadline_ns, next_slow) - now);
    if (platform::FutexWait(&word, v, sleep_ns) == platform::WaitResult::kWoken && stamp != nullptr) {
      const int64_t woke = platform::MonotonicNs();
      const int64_t stamped = static_cast<int64_t>(stamp->load(std::memory_order_relaxed));
      if (stamped >= now && stamped <= woke) {
        policy.Observe(woke - stamped);
        if (woke - stamped > SpinPolicy::kPreemptedNs) policy.NoteCrowded(woke);  // woken, but no CPU for that long
      }
    }
  }
}

/// Make every sleeper on a slot word re-check its conditions (shutdown, close): clear kWaiting (so a waiter
/// about to sleep sees the word change) and wake. Thread-safe.
/// The caller must have stored its flag with seq_cst before calling.
inline void Nudge(std::atomic<uint32_t>& word) noexcept {
  uint32_t v = word.load(std::memory_order_seq_cst);
  while (v & wire::kWaiting) {
    if (word.compare_exchange_weak(v, v & ~wire::kWaiting, std::memory_order_acq_rel, std::memory_order_acquire)) {
      platform::FutexWakeAll(&word, v);
      return;
    }
  }
}

}  // namespace detail
}  // namespace shm

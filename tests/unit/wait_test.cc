// SPDX-License-Identifier: Apache-2.0
// Waiting and deadlines in one process: detail::WaitFor, Nudge, SpinPolicy, and a short call timeout on a real
// DirectHost.
#include "shm/detail/wait.h"

#include <gtest/gtest.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

#include "shm/host.h"
#include "shm/platform/platform.h"
#include "shm/wire/protocol.h"
#include "unit_util.h"

namespace {

using shm::detail::SpinPolicy;
using shm::detail::WaitFor;
using shm::detail::WaitStatus;
using shm::platform::MonotonicNs;

constexpr int64_t kMs = 1000000;

TEST(WaitFor, ReturnsReadyAtOnceWhenThePredicateHolds) {
  std::atomic<uint32_t> word{7};
  SpinPolicy policy;
  uint32_t observed = 0;
  int aborts = 0;
  const auto st = WaitFor(
      word, nullptr, MonotonicNs() + 10000 * kMs, policy, [](uint32_t w) { return w == 7; },
      [&](bool) { return ++aborts, false; }, &observed);
  EXPECT_EQ(st, WaitStatus::kReady);
  EXPECT_EQ(observed, 7u);
  EXPECT_EQ(aborts, 0);
  EXPECT_EQ(word.load(), 7u) << "a satisfied wait never publishes kWaiting";
}

TEST(WaitFor, TimesOutAtItsDeadlineWhenNothingHappens) {
  std::atomic<uint32_t> word{0};
  SpinPolicy policy;
  uint32_t observed = 0;
  const int64_t start = MonotonicNs();
  const int64_t deadline = start + 20 * kMs;
  const auto st = WaitFor(
      word, nullptr, deadline, policy, [](uint32_t) { return false; }, [](bool) { return false; }, &observed);
  const int64_t end = MonotonicNs();
  EXPECT_EQ(st, WaitStatus::kTimeout);
  EXPECT_GE(end, deadline) << "returned before its deadline";
  EXPECT_LT(end - start, 5000 * kMs) << "the deadline bounds the wait";
}

TEST(WaitFor, PastDeadlineTimesOutWithoutSleeping) {
  std::atomic<uint32_t> word{0};
  SpinPolicy policy;
  uint32_t observed = 0;
  const int64_t start = MonotonicNs();
  const auto st = WaitFor(
      word, nullptr, start - 1, policy, [](uint32_t) { return false; }, [](bool) { return false; }, &observed);
  EXPECT_EQ(st, WaitStatus::kTimeout);
  EXPECT_LT(MonotonicNs() - start, 5000 * kMs);
}

// The sleeper flag goes in the bit the caller names (the doorbell's bit 0 here), not in kWaiting. The abort hook
// ends the wait once that flag is in the word, so no deadline decides whether the wait got that far; a wait that
// published another bit (or none) ends at its first slow check instead, one liveness slice into its sleep.
TEST(WaitFor, UsesTheGivenWaitingBit) {
  std::atomic<uint32_t> doorbell{8};  // a counter value with bit 0 clear
  SpinPolicy policy;
  uint32_t observed = 0;
  bool flag_seen = false;
  const auto st = WaitFor(
      doorbell, nullptr, MonotonicNs() + 60000 * kMs, policy, [](uint32_t) { return false; },
      [&](bool slow) {
        flag_seen = (doorbell.load() & shm::wire::kDoorbellWaiting) != 0;
        return flag_seen || slow;
      },
      &observed, shm::wire::kDoorbellWaiting);
  EXPECT_EQ(st, WaitStatus::kAborted);
  EXPECT_TRUE(flag_seen) << "the wait went to sleep without publishing kDoorbellWaiting";
  EXPECT_EQ(doorbell.load(), 8u | shm::wire::kDoorbellWaiting);
}

TEST(WaitFor, CheapAbortStopsTheWait) {
  std::atomic<uint32_t> word{0};
  SpinPolicy policy;
  uint32_t observed = 0;
  const auto st = WaitFor(
      word, nullptr, MonotonicNs() + 10000 * kMs, policy, [](uint32_t) { return false; },
      [](bool slow) { return !slow; }, &observed);
  EXPECT_EQ(st, WaitStatus::kAborted);
}

TEST(WaitFor, SlowChecksRunWhileSleeping) {
  std::atomic<uint32_t> word{0};
  SpinPolicy policy;
  uint32_t observed = 0;
  int slow_checks = 0;
  const int64_t start = MonotonicNs();
  const auto st = WaitFor(
      word, nullptr, start + 10000 * kMs, policy, [](uint32_t) { return false; },
      [&](bool slow) { return slow && ++slow_checks == 2; }, &observed);
  EXPECT_EQ(st, WaitStatus::kAborted) << "a sleeper wakes every liveness slice for its slow checks";
  EXPECT_EQ(slow_checks, 2);
  EXPECT_GE(MonotonicNs() - start, shm::detail::kLivenessSliceNs) << "slow checks are at most one per slice";
  EXPECT_EQ(word.load(), shm::wire::kWaiting) << "it slept: it published kWaiting";
}

// Nudge makes a sleeper re-check a condition kept outside the word. The waiter must return because it was
// woken, not because its 50 ms liveness slice ran out: one round returns well within the slice. A woken waiter
// may still wait for a CPU on a loaded machine, so rounds go on (up to 10) until one does; a waiter that nobody
// wakes sleeps out the slice in every round.
TEST(Nudge, WakesASleepingWaiterWhoseAbortHookThenReturnsTrue) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < 10 && best >= 25 * kMs; ++round) {
    std::atomic<uint32_t> word{shm::wire::MakeCtl(shm::wire::SlotState::kRequest, 3)};
    std::atomic<bool> stop{false};
    SpinPolicy policy;
    const auto r = shm_unit::WakeLatency(
        word,
        [&] {
          uint32_t observed = 0;
          return WaitFor(
              word, nullptr, MonotonicNs() + 60000 * kMs, policy, [](uint32_t) { return false; },
              [&](bool) { return stop.load(std::memory_order_seq_cst); }, &observed);
        },
        [&] {
          stop.store(true, std::memory_order_seq_cst);
          shm::detail::Nudge(word);
        });
    ASSERT_TRUE(r.slept) << "the waiter never published kWaiting";
    EXPECT_EQ(r.status, WaitStatus::kAborted);
    EXPECT_EQ(word.load(), shm::wire::MakeCtl(shm::wire::SlotState::kRequest, 3)) << "Nudge clears only kWaiting";
    std::printf("round %d: the nudged waiter returned after %.3f ms\n", round, static_cast<double>(r.latency_ns) / 1e6);
    best = std::min(best, r.latency_ns);
  }
  RecordProperty("best_wake_latency_ns", static_cast<int>(best));
  EXPECT_LT(best, 25 * kMs) << "best wake latency " << best << " ns: Nudge did not wake the sleeper";
}

TEST(Nudge, LeavesAWordWithoutSleepersUnchanged) {
  const uint32_t v = shm::wire::MakeCtl(shm::wire::SlotState::kServing, 9);
  std::atomic<uint32_t> word{v};
  shm::detail::Nudge(word);
  EXPECT_EQ(word.load(), v);
}

// ---- SpinPolicy --------------------------------------------------------------------------------------------------

TEST(SpinPolicy, StartsAtTheInitialCost) {
  SpinPolicy p;
  EXPECT_EQ(p.wake_cost_ns(), SpinPolicy::kInitialCostNs);
  EXPECT_EQ(p.budget_ns(), 2 * SpinPolicy::kInitialCostNs);
}

TEST(SpinPolicy, ClampsBudgetToTheMinimumForCheapWakeUps) {
  SpinPolicy p;
  for (int i = 0; i < 500; ++i) p.Observe(100);
  EXPECT_LT(p.wake_cost_ns(), SpinPolicy::kMinBudgetNs / 2);
  EXPECT_EQ(p.budget_ns(), SpinPolicy::kMinBudgetNs);
}

TEST(SpinPolicy, ClampsBudgetToTheMaximumForCostlyWakeUps) {
  SpinPolicy p;
  for (int i = 0; i < 500; ++i) p.Observe(9 * kMs);
  EXPECT_GT(p.wake_cost_ns(), SpinPolicy::kMaxBudgetNs);
  EXPECT_EQ(p.budget_ns(), SpinPolicy::kMaxBudgetNs);
}

// The budget is twice the measured cost (wait.h), inside the clamps.
TEST(SpinPolicy, FollowsTheMeasuredCost) {
  SpinPolicy p;
  for (int i = 0; i < 500; ++i) p.Observe(20000);
  EXPECT_NEAR(static_cast<double>(p.wake_cost_ns()), 20000.0, 10.0);
  EXPECT_NEAR(static_cast<double>(p.budget_ns()), 40000.0, 20.0);
  p.Observe(100000);  // one sample moves it by 1/8 of the difference
  EXPECT_NEAR(static_cast<double>(p.wake_cost_ns()), 30000.0, 10.0);
}

TEST(SpinPolicy, IgnoresAbsurdSamples) {
  SpinPolicy p;
  for (int64_t s : {int64_t{0}, int64_t{-1}, int64_t{-1000000}, 10 * kMs + 1, int64_t{INT64_MAX}, int64_t{INT64_MIN}}) {
    p.Observe(s);
    EXPECT_EQ(p.wake_cost_ns(), SpinPolicy::kInitialCostNs) << "sample " << s;
  }
  p.Observe(10 * kMs);  // the largest plausible sample counts
  EXPECT_NE(p.wake_cost_ns(), SpinPolicy::kInitialCostNs);
}

// ---- A short call timeout on a real host ----------------------------------------------------------------------

// A 1 ms timeout returns at its deadline. How soon after it is up to the scheduler, so the median is printed
// (issue item 13 asked for well under 50 ms: a quiet 2-core VM shows 1.1 ms, one with every core busy about 4 ms)
// and bounded only at 1 s, beyond any loaded machine's delay and far short of the 10 s default timeout that a call
// ignoring its own deadline would wait.
TEST(CallTimeout, OneMillisecondTimeoutWithoutGuestReturnsTimeoutPromptly) {
  shm::HostConfig c;
  c.name = shm_unit::UniqueName("timeout");
  c.host_slots = 2;
  c.guest_slots = 0;
  c.payload_size = 64;
  shm::DirectHost host;
  auto init = host.Init(c);
  ASSERT_TRUE(init.ok()) << init.error().ToString();
  std::vector<int64_t> elapsed;
  std::vector<uint8_t> response;
  for (int i = 0; i < 20; ++i) {
    const int64_t start = MonotonicNs();
    auto r = host.Send("ping", shm::MsgType::NORMAL, response, {std::chrono::milliseconds(1)});
    const int64_t took = MonotonicNs() - start;
    ASSERT_FALSE(r.ok());
    ASSERT_EQ(r.error().code(), shm::ErrorCode::kTimeout) << r.error().ToString();
    EXPECT_NE(r.error().message().find("no peer"), std::string::npos) << r.error().message();
    EXPECT_GE(took, 1 * kMs) << "returned before its deadline";
    elapsed.push_back(took);
  }
  std::sort(elapsed.begin(), elapsed.end());
  const int64_t median = elapsed[elapsed.size() / 2];
  RecordProperty("median_ns", static_cast<int>(median));
  std::printf("20 one-millisecond calls: median %.3f ms, max %.3f ms\n", static_cast<double>(median) / 1e6,
              static_cast<double>(elapsed.back()) / 1e6);
  EXPECT_LT(median, 1000 * kMs) << "median of 20 one-millisecond calls: " << median << " ns";
}

}  // namespace

// Crowding is assumed from its evidence for the hold period, then no longer (SPECIFICATION.md §7.3).
TEST(SpinPolicy, CrowdedForTheHoldPeriodAfterEvidence) {
  SpinPolicy policy;
  const int64_t now = MonotonicNs();
  EXPECT_FALSE(policy.crowded(now));
  policy.NoteCrowded(now);
  EXPECT_TRUE(policy.crowded(now + SpinPolicy::kCrowdedHoldNs - 1));
  EXPECT_FALSE(policy.crowded(now + SpinPolicy::kCrowdedHoldNs));
}

// While crowded, a waiter that has just woken its peer does not spin: it goes straight to publishing its
// sleeper flag. The abort hook first runs in the sleep phase, before the flag is set, and the second time it
// runs the flag is there; a spinning waiter would have run it from its spin first.
TEST(WaitFor, ACrowdedWaiterThatWokeItsPeerSleepsWithoutSpinning) {
  std::atomic<uint32_t> word{0};
  SpinPolicy policy;
  policy.NoteCrowded(MonotonicNs());
  uint32_t observed = 0;
  int calls = 0;
  bool flag_at_second = false;
  const auto st = WaitFor(
      word, nullptr, MonotonicNs() + 60000 * kMs, policy, [](uint32_t) { return false; },
      [&](bool) {
        if (++calls == 2) flag_at_second = (word.load() & shm::wire::kWaiting) != 0;
        return calls == 2;
      },
      &observed, shm::wire::kWaiting, shm::detail::WaitStart::kYield);
  EXPECT_EQ(st, WaitStatus::kAborted);
  EXPECT_TRUE(flag_at_second) << "the waiter spun before publishing its sleeper flag";
}

// The same-CPU rule (SPECIFICATION.md §7.3): a thread whose waits end right after a handoff on its own CPU,
// kStreak times in a row, yields from the start of its waits for kHoldNs; any other wait ending starts the
// streak over. The state is the thread's own.
TEST(SharedCpu, HoldsAfterAStreakOfHandoffsAndForItsHoldPeriodOnly) {
  using shm::detail::SharedCpu;
  std::thread([] {
    const int64_t now = MonotonicNs();
    EXPECT_FALSE(SharedCpu::Holds(now));
    for (int i = 1; i < SharedCpu::kStreak; ++i) SharedCpu::Note(now);
    EXPECT_FALSE(SharedCpu::Holds(now)) << "one handoff short of a streak";
    SharedCpu::Clear();
    SharedCpu::Note(now);
    EXPECT_FALSE(SharedCpu::Holds(now)) << "a wait that did not end after a handoff must restart the streak";
    for (int i = 1; i < SharedCpu::kStreak; ++i) SharedCpu::Note(now);
    EXPECT_TRUE(SharedCpu::Holds(now));
    EXPECT_TRUE(SharedCpu::Holds(now + SharedCpu::kHoldNs - 1));
    EXPECT_FALSE(SharedCpu::Holds(now + SharedCpu::kHoldNs));
    std::thread([now] { EXPECT_FALSE(SharedCpu::Holds(now)) << "another thread's state"; }).join();
  }).join();
}

#if defined(__linux__)  // the same-CPU rule reads the thread's context switches, which only Linux gives
// End to end: a waiter and the thread that answers it, both pinned to one CPU, so the answer can only come while
// the waiter has yielded that CPU. WaitFor must notice (a brief yield that switched, with the answer there after
// it) and, after a streak of such waits, start yielding from the start. Other load on that CPU only makes
// streaks rarer, so the test allows a minute of round trips.
TEST(SharedCpu, AWaiterWhosePeerRunsOnItsCpuLearnsIt) {
  using shm::detail::SharedCpu;
  cpu_set_t mine;
  CPU_ZERO(&mine);
  ASSERT_EQ(sched_getaffinity(0, sizeof mine, &mine), 0);
  int cpu = 0;
  while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &mine)) ++cpu;
  ASSERT_LT(cpu, CPU_SETSIZE);
  auto pin = [cpu] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return sched_setaffinity(0, sizeof one, &one) == 0;
  };
  constexpr uint32_t kAsk = 1, kAnswer = 2;  // state in the low bits; the round in bits 8 and up
  std::atomic<uint32_t> word{0};
  std::atomic<bool> stop{false}, pinned{true};
  std::thread peer([&] {
    if (!pin()) pinned = false;
    while (!stop.load()) {
      uint32_t v = word.load();
      if ((v & 0xF) == kAsk && word.compare_exchange_strong(v, (v & ~0xFFu) | kAnswer)) {
        if (v & shm::wire::kWaiting) shm::platform::FutexWakeAll(&word, v);
      }
      sched_yield();
    }
  });
  bool learned = false;
  long rounds = 0;
  std::thread waiter([&] {
    if (!pin()) pinned = false;
    const int64_t give_up = shm::platform::MonotonicNs() + 60000 * kMs;
    for (uint32_t r = 1; pinned && shm::platform::MonotonicNs() < give_up; ++r, ++rounds) {
      word.store((r << 8) | kAsk);
      shm::detail::SpinPolicy policy;  // a fresh one: no evidence of crowding from earlier rounds
      uint32_t observed = 0;
      const uint32_t want = (r << 8) | kAnswer;
      const auto st = shm::detail::WaitFor(
          word, nullptr, shm::platform::MonotonicNs() + 10000 * kMs, policy,
          [want](uint32_t w) { return (w & ~shm::wire::kWaiting) == want; }, [](bool) { return false; }, &observed,
          shm::wire::kWaiting, shm::detail::WaitStart::kSpin);
      if (st != shm::detail::WaitStatus::kReady) break;
      if (SharedCpu::Holds(shm::platform::MonotonicNs())) {
        learned = true;
        break;
      }
    }
  });
  waiter.join();
  stop = true;
  peer.join();
  ASSERT_TRUE(pinned) << "sched_setaffinity failed";
  EXPECT_TRUE(learned) << "no streak of handoffs was noticed in " << rounds << " round trips on one CPU";
}
#endif

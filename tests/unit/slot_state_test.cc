// SPDX-License-Identifier: Apache-2.0
// The slot state machine (detail/slot.h) on a SlotHeader in ordinary memory: every transition of
// SPECIFICATION.md §6, every refusal, sequence numbers, recovery sweeps and races between threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shm/detail/slot.h"
#include "shm/detail/wait.h"
#include "shm/platform/platform.h"
#include "shm/wire/layout.h"
#include "unit_util.h"

namespace {

using shm::detail::CancelOutcome;
using shm::detail::CompleteOutcome;
using shm::detail::Placement;
using shm::detail::ResolveSize;
using shm::wire::CtlSeq;
using shm::wire::CtlState;
using shm::wire::kSeqMask;
using shm::wire::kWaiting;
using shm::wire::MakeCtl;
using shm::wire::SlotHeader;
using shm::wire::SlotState;
using shm::wire::WireError;

// A zeroed slot header in ordinary memory (value-initialised: every atomic starts at 0).
std::unique_ptr<SlotHeader> NewSlot() { return std::make_unique<SlotHeader>(); }

uint32_t Word(const SlotHeader& h) { return h.ctl.load(); }

// A control word with any 4-bit state value, including the invalid ones (6..15) a broken peer could write.
uint32_t RawCtl(uint32_t state, uint32_t seq) { return state | ((seq & kSeqMask) << 8); }

const char* StateName(uint32_t s) {
  static const char* names[] = {"FREE", "CLAIMED", "REQUEST", "SERVING", "RESPONSE", "ABANDONED"};
  return s < 6 ? names[s] : "INVALID";
}

// ---- Every operation from every state -----------------------------------------------------------------------

enum class Op { kClaim, kPublish, kTake, kComplete, kRecover, kRelease, kReclaim };
const Op kAllOps[] = {Op::kClaim, Op::kPublish, Op::kTake, Op::kComplete, Op::kRecover, Op::kRelease, Op::kReclaim};

const char* OpName(Op op) {
  switch (op) {
    case Op::kClaim: return "TryClaim";
    case Op::kPublish: return "Publish";
    case Op::kTake: return "TryTake";
    case Op::kComplete: return "Complete";
    case Op::kRecover: return "RecoverFromDeadServer";
    case Op::kRelease: return "Release";
    case Op::kReclaim: return "ReclaimAbandoned";
  }
  return "?";
}

// Whether the operation takes the seq the caller believes in (others read it from the word).
bool TakesSeq(Op op) { return op == Op::kPublish || op == Op::kComplete || op == Op::kRecover || op == Op::kRelease; }

struct Expected {
  SlotState to;
  uint32_t seq_delta;
};

// The transition table of SPECIFICATION.md §6, per operation: where each state goes, or nothing (refused).
std::optional<Expected> Legal(Op op, uint32_t state) {
  const auto s = static_cast<SlotState>(state);
  switch (op) {
    case Op::kClaim:  // T1
      if (s == SlotState::kFree) return Expected{SlotState::kClaimed, 0};
      break;
    case Op::kPublish:  // T2
      if (s == SlotState::kClaimed || s == SlotState::kResponse) return Expected{SlotState::kRequest, 1};
      break;
    case Op::kTake:  // T3
      if (s == SlotState::kRequest) return Expected{SlotState::kServing, 0};
      break;
    case Op::kComplete:  // T4, T7
      if (s == SlotState::kServing) return Expected{SlotState::kResponse, 0};
      if (s == SlotState::kAbandoned) return Expected{SlotState::kFree, 0};
      break;
    case Op::kRecover:  // T9
      if (s == SlotState::kServing) return Expected{SlotState::kClaimed, 0};
      break;
    case Op::kRelease:  // T8
      if (s == SlotState::kClaimed || s == SlotState::kResponse) return Expected{SlotState::kFree, 0};
      break;
    case Op::kReclaim:  // T10
      if (s == SlotState::kAbandoned) return Expected{SlotState::kFree, 0};
      break;
  }
  return std::nullopt;
}

// Runs `op` with the caller's belief `seq`. Returns whether it reported success; *out_seq gets the seq it hands
// back (TryClaim, TryTake, Publish).
bool Apply(Op op, SlotHeader& h, uint32_t seq, uint32_t* out_seq) {
  *out_seq = 0xDEADBEEF;
  switch (op) {
    case Op::kClaim: return shm::detail::TryClaim(h, out_seq);
    case Op::kPublish: return shm::detail::Publish(h, seq, out_seq);
    case Op::kTake: return shm::detail::TryTake(h, out_seq);
    case Op::kComplete: return shm::detail::Complete(h, seq) != CompleteOutcome::kLost;
    case Op::kRecover: return shm::detail::RecoverFromDeadServer(h, seq);
    case Op::kRelease: {
      const uint32_t before = Word(h);
      shm::detail::Release(h, seq);
      return Word(h) != before;
    }
    case Op::kReclaim: return shm::detail::ReclaimAbandoned(h);
  }
  return false;
}

TEST(SlotStateMachine, EveryOperationFromEveryStateFollowsTheTransitionTable) {
  for (Op op : kAllOps) {
    for (uint32_t state = 0; state < 16; ++state) {
      for (uint32_t seq : {0u, 5u, kSeqMask}) {
        for (bool waiting : {false, true}) {
          SCOPED_TRACE(std::string(OpName(op)) + " from " + StateName(state) + "(" + std::to_string(state) + ") seq " +
                       std::to_string(seq) + (waiting ? " with W" : ""));
          auto h = NewSlot();
          const uint32_t start = RawCtl(state, seq) | (waiting ? kWaiting : 0u);
          h->ctl.store(start);
          uint32_t got_seq = 0;
          const bool ok = Apply(op, *h, seq, &got_seq);
          const auto legal = Legal(op, state);
          if (legal) {
            const uint32_t to_seq = (seq + legal->seq_delta) & kSeqMask;
            EXPECT_TRUE(ok);
            EXPECT_EQ(Word(*h), MakeCtl(legal->to, to_seq)) << "W must be cleared, seq carried";
            if (op == Op::kClaim || op == Op::kTake || op == Op::kPublish) {
              EXPECT_EQ(got_seq, to_seq);
            }
            if (waiting) {
              EXPECT_NE(h->wake_stamp_ns.load(), 0u) << "a transition over W stamps the wake";
            } else {
              EXPECT_EQ(h->wake_stamp_ns.load(), 0u) << "no sleeper, no wake";
            }
          } else {
            EXPECT_FALSE(ok);
            EXPECT_EQ(Word(*h), start) << "a refused transition leaves the word unchanged";
            EXPECT_EQ(h->wake_stamp_ns.load(), 0u);
          }
        }
      }
    }
  }
}

TEST(SlotStateMachine, OperationsWithAStaleSeqAreRefusedAndLeaveTheWordUnchanged) {
  for (Op op : kAllOps) {
    if (!TakesSeq(op)) continue;
    for (uint32_t state = 0; state < 6; ++state) {
      for (uint32_t seq : {0u, 7u, kSeqMask}) {
        for (uint32_t believed : {(seq + 1) & kSeqMask, (seq - 1) & kSeqMask}) {
          SCOPED_TRACE(std::string(OpName(op)) + " from " + StateName(state) + "(" + std::to_string(seq) +
                       ") believing seq " + std::to_string(believed));
          auto h = NewSlot();
          const uint32_t start = RawCtl(state, seq);
          h->ctl.store(start);
          uint32_t got_seq = 0;
          EXPECT_FALSE(Apply(op, *h, believed, &got_seq));
          EXPECT_EQ(Word(*h), start);
        }
      }
    }
  }
}

TEST(SlotStateMachine, FullTransactionIncrementsSeqOncePerPublish) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kFree, 41));
  uint32_t seq = 0;
  ASSERT_TRUE(shm::detail::TryClaim(*h, &seq));
  EXPECT_EQ(seq, 41u);
  uint32_t tx = 0;
  ASSERT_TRUE(shm::detail::Publish(*h, seq, &tx));
  EXPECT_EQ(tx, 42u);
  uint32_t served = 0;
  ASSERT_TRUE(shm::detail::TryTake(*h, &served));
  EXPECT_EQ(served, 42u);
  EXPECT_EQ(shm::detail::Complete(*h, served), CompleteOutcome::kDelivered);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kResponse, 42));
  // A held slot sends again from RESPONSE without releasing.
  uint32_t tx2 = 0;
  ASSERT_TRUE(shm::detail::Publish(*h, tx, &tx2));
  EXPECT_EQ(tx2, 43u);
  ASSERT_TRUE(shm::detail::TryTake(*h, &served));
  EXPECT_EQ(shm::detail::Complete(*h, served), CompleteOutcome::kDelivered);
  shm::detail::Release(*h, tx2);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 43));
}

TEST(SlotStateMachine, SeqWrapsAt2To24) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kClaimed, kSeqMask));
  uint32_t tx = 0;
  ASSERT_TRUE(shm::detail::Publish(*h, kSeqMask, &tx));
  EXPECT_EQ(tx, 0u);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kRequest, 0));
  EXPECT_EQ(Word(*h) & 0xFFu, static_cast<uint32_t>(SlotState::kRequest)) << "wrap must not spill into low bits";
  // The wrapped transaction completes normally.
  uint32_t served = 99;
  ASSERT_TRUE(shm::detail::TryTake(*h, &served));
  EXPECT_EQ(served, 0u);
  EXPECT_EQ(shm::detail::Complete(*h, 0), CompleteOutcome::kDelivered);
  // A response from before the wrap (seq 2^24 - 1) is not this transaction's.
  EXPECT_EQ(shm::detail::Cancel(*h, kSeqMask), CancelOutcome::kLost);
}

// ---- Cancel ---------------------------------------------------------------------------------------------------

TEST(SlotCancel, RequestNotYetTakenIsWithdrawnAndStillOwned) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kRequest, 9) | kWaiting);
  EXPECT_EQ(shm::detail::Cancel(*h, 9), CancelOutcome::kWithdrawn);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kClaimed, 9));
  uint32_t seq = 0;
  EXPECT_FALSE(shm::detail::TryTake(*h, &seq)) << "a withdrawn request cannot be taken";
}

TEST(SlotCancel, RequestBeingServedIsAbandoned) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kServing, 9));
  EXPECT_EQ(shm::detail::Cancel(*h, 9), CancelOutcome::kAbandoned);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kAbandoned, 9));
}

TEST(SlotCancel, ResponseThatArrivedMeanwhileIsAnsweredAndKept) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kResponse, 9));
  EXPECT_EQ(shm::detail::Cancel(*h, 9), CancelOutcome::kAnswered);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kResponse, 9));
}

TEST(SlotCancel, UnexplainableStatesAreLostAndUntouched) {
  struct Case {
    uint32_t word;
    const char* what;
  };
  const Case cases[] = {
      {MakeCtl(SlotState::kFree, 9), "FREE"},
      {MakeCtl(SlotState::kClaimed, 9), "CLAIMED"},
      {MakeCtl(SlotState::kAbandoned, 9), "ABANDONED"},
      {RawCtl(6, 9), "invalid state 6"},
      {RawCtl(15, 9), "invalid state 15"},
      {MakeCtl(SlotState::kRequest, 10), "REQUEST of another seq"},
      {MakeCtl(SlotState::kServing, 8), "SERVING of another seq"},
      {MakeCtl(SlotState::kResponse, 10), "RESPONSE of another seq"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto h = NewSlot();
    h->ctl.store(c.word);
    EXPECT_EQ(shm::detail::Cancel(*h, 9), CancelOutcome::kLost);
    EXPECT_EQ(Word(*h), c.word);
  }
}

TEST(SlotCancel, LateCompleteAfterAbandonFreesTheSlotAndDropsTheAnswer) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kRequest, 3));
  uint32_t served = 0;
  ASSERT_TRUE(shm::detail::TryTake(*h, &served));
  ASSERT_EQ(shm::detail::Cancel(*h, 3), CancelOutcome::kAbandoned);
  EXPECT_EQ(shm::detail::Complete(*h, served), CompleteOutcome::kDiscarded);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 3));
}

// Design point 8: a late responder never writes into a slot that has moved on.
TEST(SlotCancel, LateResponderCannotDeliverIntoAMovedOnSlot) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kFree, 0));
  uint32_t seq = 0, tx = 0, old_served = 0;
  ASSERT_TRUE(shm::detail::TryClaim(*h, &seq));
  ASSERT_TRUE(shm::detail::Publish(*h, seq, &tx));
  ASSERT_TRUE(shm::detail::TryTake(*h, &old_served));  // a slow server takes transaction 1
  ASSERT_EQ(shm::detail::Cancel(*h, tx), CancelOutcome::kAbandoned);
  // Recovery (the server was proven dead) frees the slot; a new transaction starts on it.
  ASSERT_TRUE(shm::detail::ReclaimAbandoned(*h));
  uint32_t seq2 = 0, tx2 = 0, new_served = 0;
  ASSERT_TRUE(shm::detail::TryClaim(*h, &seq2));
  ASSERT_TRUE(shm::detail::Publish(*h, seq2, &tx2));
  ASSERT_NE(tx2, tx);
  const uint32_t published = Word(*h);
  EXPECT_EQ(shm::detail::Complete(*h, old_served), CompleteOutcome::kLost) << "REQUEST of a newer seq";
  EXPECT_EQ(Word(*h), published);
  ASSERT_TRUE(shm::detail::TryTake(*h, &new_served));
  const uint32_t serving = Word(*h);
  EXPECT_EQ(shm::detail::Complete(*h, old_served), CompleteOutcome::kLost) << "SERVING of a newer seq";
  EXPECT_EQ(Word(*h), serving);
  EXPECT_EQ(shm::detail::Complete(*h, new_served), CompleteOutcome::kDelivered);
  EXPECT_EQ(shm::detail::Complete(*h, old_served), CompleteOutcome::kLost) << "RESPONSE of a newer seq";
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kResponse, tx2));
}

// ---- Recovery ----------------------------------------------------------------------------------------------------

TEST(SlotRecovery, RecoverFromDeadServerReturnsTheSlotToItsCaller) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kServing, 12));
  EXPECT_FALSE(shm::detail::RecoverFromDeadServer(*h, 11));
  EXPECT_TRUE(shm::detail::RecoverFromDeadServer(*h, 12));
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kClaimed, 12));
  // The dead server's successor cannot complete the recovered transaction.
  EXPECT_EQ(shm::detail::Complete(*h, 12), CompleteOutcome::kLost);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kClaimed, 12));
}

// T12: every word of a quarantined slot becomes FREE with its own seq (W and reserved bits dropped, sleepers
// woken), except SERVING and ABANDONED while the server may be alive.
TEST(SlotRecovery, ReclaimQuarantinedFreesAnyWordButWhatALiveServerMayOwn) {
  for (uint32_t state = 0; state < 16; ++state) {
    for (const bool dead : {false, true}) {
      SCOPED_TRACE(std::string(StateName(state)) + " (" + std::to_string(state) + ")" + (dead ? ", server dead" : ""));
      auto h = NewSlot();
      const uint32_t start = RawCtl(state, 77) | kWaiting | 0x60u;
      h->ctl.store(start);
      const bool owned_by_server =
          state == static_cast<uint32_t>(SlotState::kServing) || state == static_cast<uint32_t>(SlotState::kAbandoned);
      const bool freed = shm::detail::ReclaimQuarantined(*h, start, dead);
      if (owned_by_server && !dead) {
        EXPECT_FALSE(freed);
        EXPECT_EQ(Word(*h), start) << "left to the server";
      } else if (state == static_cast<uint32_t>(SlotState::kFree)) {
        EXPECT_TRUE(freed);
        EXPECT_EQ(Word(*h), start) << "already free: nothing to write";
      } else {
        EXPECT_TRUE(freed);
        EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 77));
        EXPECT_NE(h->wake_stamp_ns.load(), 0u) << "a sleeper on the word was woken";
      }
    }
  }
}

// T12 expects the word the caller saw before it judged the server's liveness: a word that has moved since may
// belong to a server that came later, and is left alone (W aside).
TEST(SlotRecovery, ReclaimQuarantinedLeavesAWordThatMovedSinceItWasSeen) {
  auto h = NewSlot();
  const uint32_t seen = MakeCtl(SlotState::kRequest, 5);
  h->ctl.store(MakeCtl(SlotState::kServing, 5));  // a new server took it after the caller looked
  EXPECT_FALSE(shm::detail::ReclaimQuarantined(*h, seen, true));
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kServing, 5));
  h->ctl.store(seen | kWaiting);  // only W changed: still the word seen
  EXPECT_TRUE(shm::detail::ReclaimQuarantined(*h, seen, true));
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 5));
}

TEST(SlotRecovery, SweepAsNewServerAnswersServingWithPeerRestarted) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kServing, 77) | kWaiting);
  h->resp_type.store(static_cast<uint32_t>(shm::MsgType::APP_START));
  h->resp_size.store(123);
  shm::detail::SweepAsNewServer(*h);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kResponse, 77));
  EXPECT_EQ(h->resp_type.load(), static_cast<uint32_t>(shm::MsgType::SYSTEM_ERROR));
  EXPECT_EQ(h->resp_size.load(), 0u);
  EXPECT_EQ(h->resp_error.load(), static_cast<uint32_t>(WireError::kPeerRestarted));
  // The waiting caller sees its own transaction answered.
  EXPECT_EQ(shm::detail::Cancel(*h, 77), CancelOutcome::kAnswered);
}

TEST(SlotRecovery, SweepAsNewServerFreesAbandonedAndLeavesTheRest) {
  for (uint32_t state = 0; state < 16; ++state) {
    if (state == static_cast<uint32_t>(SlotState::kServing)) continue;
    SCOPED_TRACE(StateName(state) + std::string(" ") + std::to_string(state));
    auto h = NewSlot();
    const uint32_t start = RawCtl(state, 4);
    h->ctl.store(start);
    shm::detail::SweepAsNewServer(*h);
    if (state == static_cast<uint32_t>(SlotState::kAbandoned)) {
      EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 4));
    } else {
      EXPECT_EQ(Word(*h), start) << "a REQUEST is left for the new server; others are not a server's";
    }
    EXPECT_EQ(h->resp_type.load(), 0u);
  }
}

TEST(SlotRecovery, SweepAsNewCallerGivesBackWhatTheDeadCallerHeld) {
  struct Case {
    uint32_t state;
    uint32_t expected;
  };
  const Case cases[] = {
      {0, MakeCtl(SlotState::kFree, 4)},
      {1, MakeCtl(SlotState::kFree, 4)},
      {2, MakeCtl(SlotState::kFree, 4)},
      {3, MakeCtl(SlotState::kAbandoned, 4)},
      {4, MakeCtl(SlotState::kFree, 4)},
      {5, MakeCtl(SlotState::kAbandoned, 4)},
      {6, RawCtl(6, 4)},
      {15, RawCtl(15, 4)},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(StateName(c.state));
    auto h = NewSlot();
    h->ctl.store(RawCtl(c.state, 4));
    shm::detail::SweepAsNewCaller(*h);
    EXPECT_EQ(Word(*h), c.expected);
  }
  // The server that was serving it frees the slot when it finishes.
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kServing, 4));
  shm::detail::SweepAsNewCaller(*h);
  EXPECT_EQ(shm::detail::Complete(*h, 4), CompleteOutcome::kDiscarded);
  EXPECT_EQ(Word(*h), MakeCtl(SlotState::kFree, 4));
}

TEST(SlotRecovery, WriteErrorResponseFillsTheResponseFields) {
  auto h = NewSlot();
  h->resp_size.store(55);
  shm::detail::WriteErrorResponse(*h, WireError::kHandlerFailed);
  EXPECT_EQ(h->resp_type.load(), static_cast<uint32_t>(shm::MsgType::SYSTEM_ERROR));
  EXPECT_EQ(h->resp_size.load(), 0u);
  EXPECT_EQ(h->resp_error.load(), static_cast<uint32_t>(WireError::kHandlerFailed));
}

// ---- The waiting bit --------------------------------------------------------------------------------------------

TEST(SlotWaitingBit, TransitionClearsWaitingAndStampsTheWake) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kRequest, 1) | kWaiting);
  const uint64_t before = static_cast<uint64_t>(shm::platform::MonotonicNs());
  uint32_t seq = 0;
  ASSERT_TRUE(shm::detail::TryTake(*h, &seq));
  const uint64_t after = static_cast<uint64_t>(shm::platform::MonotonicNs());
  EXPECT_EQ(Word(*h) & kWaiting, 0u);
  EXPECT_GE(h->wake_stamp_ns.load(), before);
  EXPECT_LE(h->wake_stamp_ns.load(), after);
}

// The waiter must return because the transition woke it, not because its 50 ms liveness slice ran out: one round
// returns well within that slice. A woken waiter may still wait for a CPU on a loaded machine, so rounds go on (up
// to 10) until one does; a waiter that nobody wakes sleeps out the slice in every round.
TEST(SlotWaitingBit, TransitionWakesASleepingWaiter) {
  int64_t best = INT64_MAX;
  for (int round = 0; round < 10 && best >= 25'000'000; ++round) {
    auto h = NewSlot();
    h->ctl.store(MakeCtl(SlotState::kRequest, 1));
    shm::detail::SpinPolicy policy;
    const auto r = shm_unit::WakeLatency(
        h->ctl,
        [&] {
          uint32_t observed = 0;
          return shm::detail::WaitFor(
              h->ctl, &h->wake_stamp_ns, shm::platform::MonotonicNs() + 60'000'000'000, policy,
              [](uint32_t w) { return !shm::wire::CtlIs(w, SlotState::kRequest); }, [](bool) { return false; },
              &observed);
        },
        [&] {
          uint32_t seq = 0;
          EXPECT_TRUE(shm::detail::TryTake(*h, &seq));
        });
    ASSERT_TRUE(r.slept) << "the waiter never published kWaiting";
    EXPECT_EQ(r.status, shm::detail::WaitStatus::kReady);
    EXPECT_EQ(Word(*h), MakeCtl(SlotState::kServing, 1));
    std::printf("round %d: the woken waiter returned after %.3f ms\n", round, static_cast<double>(r.latency_ns) / 1e6);
    best = std::min(best, r.latency_ns);
  }
  RecordProperty("best_wake_latency_ns", static_cast<int>(best));
  EXPECT_LT(best, 25'000'000) << "best wake latency " << best << " ns: the transition did not wake the sleeper";
}

// ---- Races --------------------------------------------------------------------------------------------------------

// Starts `n` threads running fn(i) at (nearly) the same instant and joins them.
template <typename Fn>
void Race(int n, Fn fn) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (!go.load()) std::this_thread::yield();
      fn(i);
    });
  }
  while (ready.load() < n) std::this_thread::yield();
  go.store(true);
  for (auto& t : threads) t.join();
}

constexpr int kRaceThreads = 4;
constexpr int kRaceRounds = 200;

TEST(SlotRace, ExactlyOneOfManyServersTakesARequest) {
  auto h = NewSlot();
  for (int round = 0; round < kRaceRounds; ++round) {
    const uint32_t seq = (static_cast<uint32_t>(round) * 7919u) & kSeqMask;
    h->ctl.store(MakeCtl(SlotState::kRequest, seq));
    std::atomic<int> winners{0};
    std::atomic<uint32_t> won_seq{0};
    Race(kRaceThreads, [&](int) {
      uint32_t s = 0;
      if (shm::detail::TryTake(*h, &s)) {
        winners.fetch_add(1);
        won_seq.store(s);
      }
    });
    ASSERT_EQ(winners.load(), 1) << "round " << round;
    ASSERT_EQ(won_seq.load(), seq);
    ASSERT_EQ(Word(*h), MakeCtl(SlotState::kServing, seq));
  }
}

TEST(SlotRace, ExactlyOneOfManyCallersClaimsAFreeSlot) {
  auto h = NewSlot();
  for (int round = 0; round < kRaceRounds; ++round) {
    const uint32_t seq = static_cast<uint32_t>(round);
    h->ctl.store(MakeCtl(SlotState::kFree, seq));
    std::atomic<int> winners{0};
    Race(kRaceThreads, [&](int) {
      uint32_t s = 0;
      if (shm::detail::TryClaim(*h, &s)) {
        winners.fetch_add(1);
        EXPECT_EQ(s, seq);
      }
    });
    ASSERT_EQ(winners.load(), 1) << "round " << round;
    ASSERT_EQ(Word(*h), MakeCtl(SlotState::kClaimed, seq));
  }
}

// A caller giving up while a server takes the request: either the server got it (ABANDONED, the server frees
// the slot when done) or the caller withdrew it (the server got nothing). Never both, never neither.
TEST(SlotRace, CancelRacingTakeHasExactlyOneWinner) {
  auto h = NewSlot();
  int withdrawn = 0, abandoned = 0;
  for (int round = 0; round < kRaceRounds; ++round) {
    const uint32_t seq = static_cast<uint32_t>(round);
    h->ctl.store(MakeCtl(SlotState::kRequest, seq));
    bool took = false;
    CancelOutcome outcome = CancelOutcome::kLost;
    Race(2, [&](int i) {
      uint32_t s = 0;
      if (i == 0)
        took = shm::detail::TryTake(*h, &s);
      else
        outcome = shm::detail::Cancel(*h, seq);
    });
    if (took) {
      ASSERT_EQ(outcome, CancelOutcome::kAbandoned) << "round " << round;
      ASSERT_EQ(Word(*h), MakeCtl(SlotState::kAbandoned, seq));
      ASSERT_EQ(shm::detail::Complete(*h, seq), CompleteOutcome::kDiscarded);
      ++abandoned;
    } else {
      ASSERT_EQ(outcome, CancelOutcome::kWithdrawn) << "round " << round;
      ASSERT_EQ(Word(*h), MakeCtl(SlotState::kClaimed, seq));
      ++withdrawn;
    }
  }
  RecordProperty("withdrawn", withdrawn);
  RecordProperty("abandoned", abandoned);
}

// A caller giving up while its server completes: either the answer is delivered and the caller reads it, or the
// caller abandoned first and the server's completion frees the slot. The slot never ends up stuck.
TEST(SlotRace, CancelRacingCompleteEndsDeliveredOrDiscarded) {
  auto h = NewSlot();
  for (int round = 0; round < kRaceRounds; ++round) {
    const uint32_t seq = static_cast<uint32_t>(round);
    h->ctl.store(MakeCtl(SlotState::kServing, seq));
    CompleteOutcome done = CompleteOutcome::kLost;
    CancelOutcome outcome = CancelOutcome::kLost;
    Race(2, [&](int i) {
      if (i == 0)
        done = shm::detail::Complete(*h, seq);
      else
        outcome = shm::detail::Cancel(*h, seq);
    });
    if (done == CompleteOutcome::kDelivered) {
      ASSERT_EQ(outcome, CancelOutcome::kAnswered) << "round " << round;
      ASSERT_EQ(Word(*h), MakeCtl(SlotState::kResponse, seq));
    } else {
      ASSERT_EQ(done, CompleteOutcome::kDiscarded) << "round " << round;
      ASSERT_EQ(outcome, CancelOutcome::kAbandoned);
      ASSERT_EQ(Word(*h), MakeCtl(SlotState::kFree, seq));
    }
  }
}

// A transition must not fail because a waiter set kWaiting between its load and its CAS.
TEST(SlotRace, TransitionsSucceedWhileWaitersToggleTheWaitingBit) {
  auto h = NewSlot();
  h->ctl.store(MakeCtl(SlotState::kFree, 0));
  std::atomic<bool> stop{false};
  std::thread toggler([&] {
    while (!stop.load()) {
      uint32_t v = h->ctl.load();
      (void)h->ctl.compare_exchange_weak(v, v | kWaiting);
      std::this_thread::yield();
    }
  });
  uint32_t seq = 0;
  for (int i = 0; i < 2000; ++i) {
    uint32_t claimed = 0, tx = 0, served = 0;
    ASSERT_TRUE(shm::detail::TryClaim(*h, &claimed)) << "iteration " << i;
    ASSERT_TRUE(shm::detail::Publish(*h, claimed, &tx));
    ASSERT_TRUE(shm::detail::TryTake(*h, &served));
    ASSERT_EQ(shm::detail::Complete(*h, served), CompleteOutcome::kDelivered);
    shm::detail::Release(*h, tx);
    ASSERT_EQ(CtlState(Word(*h)), static_cast<uint32_t>(SlotState::kFree));
    seq = tx;
  }
  stop.store(true);
  toggler.join();
  EXPECT_EQ(CtlSeq(Word(*h)), seq);
}

// ---- ResolveSize (hostile sizes) ---------------------------------------------------------------------------------

TEST(ResolveSize, RejectsHostileSizesWithoutTouchingTheOutput) {
  const uint32_t cap = 4096;
  const int32_t icap = static_cast<int32_t>(cap);
  for (int32_t size : {INT32_MIN, INT32_MAX, -(icap + 1), icap + 1, INT32_MIN + 1}) {
    SCOPED_TRACE(size);
    Placement p{7, 9};
    EXPECT_FALSE(ResolveSize(size, cap, &p));
    EXPECT_EQ(p.offset, 7u);
    EXPECT_EQ(p.length, 9u);
  }
}

TEST(ResolveSize, AcceptsSizesUpToCapacityInBothDirections) {
  const uint32_t cap = 4096;
  const int32_t icap = static_cast<int32_t>(cap);
  Placement p;
  ASSERT_TRUE(ResolveSize(0, cap, &p));
  EXPECT_EQ(p.offset, 0u);
  EXPECT_EQ(p.length, 0u);
  ASSERT_TRUE(ResolveSize(icap, cap, &p));
  EXPECT_EQ(p.offset, 0u);
  EXPECT_EQ(p.length, cap);
  ASSERT_TRUE(ResolveSize(-icap, cap, &p));
  EXPECT_EQ(p.offset, 0u);
  EXPECT_EQ(p.length, cap);
  ASSERT_TRUE(ResolveSize(1, cap, &p));
  EXPECT_EQ(p.offset, 0u);
  EXPECT_EQ(p.length, 1u);
}

TEST(ResolveSize, EndAlignedPlacementIsCapacityMinusLength) {
  for (uint32_t cap : {64u, 4096u, 65536u, 1u << 30}) {
    // (Length 0 has no end-aligned form: -0 is 0, placed at the start.)
    for (uint32_t len : {1u, 63u, 64u, cap / 2, cap - 1, cap}) {
      SCOPED_TRACE(std::to_string(cap) + " / " + std::to_string(len));
      Placement p;
      ASSERT_TRUE(ResolveSize(-static_cast<int32_t>(len), cap, &p));
      EXPECT_EQ(p.length, len);
      EXPECT_EQ(p.offset, cap - len);
      EXPECT_EQ(p.offset + p.length, cap) << "end-aligned data ends at the end of the buffer";
      Placement q;
      ASSERT_TRUE(ResolveSize(static_cast<int32_t>(len), cap, &q));
      EXPECT_EQ(q.offset, 0u);
      EXPECT_EQ(q.length, len);
    }
  }
}

TEST(ResolveSize, LargestCapacityStillRejectsOutOfRange) {
  const uint32_t cap = shm::wire::kMaxPayload;
  Placement p;
  EXPECT_FALSE(ResolveSize(INT32_MIN, cap, &p));
  EXPECT_FALSE(ResolveSize(INT32_MAX, cap, &p));
  EXPECT_FALSE(ResolveSize(static_cast<int32_t>(cap) + 1, cap, &p));
  EXPECT_FALSE(ResolveSize(-static_cast<int32_t>(cap) - 1, cap, &p));
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
// A Promela model of one slot of the shm wire protocol, version 2 (SPECIFICATION.md §6–§10), for the SPIN model
// checker. scripts/model.sh runs it in every configuration listed below and checks the claims; see
// SPECIFICATION.md §6.1 for what is proven and within which bounds.
//
// What is modelled (one host slot, so the host is the caller and a guest worker the server):
// - the control word (state, seq modulo MOD, W) of include/shm/detail/slot.h: every transition is one CAS on the
//   whole word, and the FUTEX_WAKE a transition owes when it replaced W is a separate, later step;
// - the futex (SPECIFICATION.md §7.1, include/shm/detail/wait.h): FUTEX_WAIT compares the word with the value
//   it is given and sleeps only if they are equal (atomically); FUTEX_WAKE wakes every sleeper; a waiter re-reads
//   the word, sets W by CAS and re-checks before it sleeps; the spin phase of WaitFor is only re-reads and
//   adds nothing the sleep loop does not already do, so it is left out;
// - Caller: the host's CopyCall / Endpoint::Call / Cancel for NTX calls in a row, keeping (parking) the slot in
//   RESPONSE after a successful call and publishing from RESPONSE again (T2), releasing it after a failed one;
// - Worker: a guest worker (DirectGuest::Work: wait for REQUEST, TryTake, write the response, Complete);
// - Env: the death of that worker at any step (DEATH), the host learning it afterwards from the closed
//   connection (Endpoint::OnGuestGone: guest_present_ = false, then every sleeper nudged), and a new guest
//   (SUCCESSOR) that attaches, sweeps the slot (SweepAsNewServer, §10.2) and then serves it with its own worker;
// - Shutdown: the host's Shutdown() (closing, then host_state = SHUTTING_DOWN stored, then the word nudged:
//   W cleared by CAS, then FUTEX_WAKE), at any moment (SHUTDOWN);
// - the caller's deadline (unless NO_TIMEOUTS), which may pass at any instant: the model lets it have passed, or
//   not, at every check the code makes (each claim attempt, each round of the wait after the abort checks, and
//   FUTEX_WAIT's timeout while asleep); then Cancel (T5 withdraw, T6 abandon, or the answer that arrived
//   meanwhile), and late answers (T7 discard). A dead server is found only after it stopped: T9 for a call it was serving, T10 for an
//   abandoned slot the caller finds when claiming.
// The response's content is modelled by resp_tag, the seq of the transaction the server answered, and
// resp_err, whether it is an error answer (the sweep's PeerRestarted).
//
// Not modelled: the guest slots and the doorbell (§7.2); several caller threads sharing slots; quarantine's T12
// (a conforming peer never causes a quarantine, and the model asserts that it never happens); the 50 ms liveness
// slice of a sleeper (a sleeper wakes only by FUTEX_WAKE, or by its deadline), so a missed wake-up can never be
// hidden by a periodic re-check; the host dying (a guest then fails everything with kHostGone); SendShutdown
// without Shutdown (the host's own calls are then not aborted: a call that raced with it waits for its deadline);
// memory order: every step is sequentially consistent (the code's acquire/release transitions publish the
// fields they guard; its seq_cst W CAS and nudge pair as wait.h explains).
//
// Why a seq modulo 4 is sound here: the caller checks only that the word's seq equals the seq it published, and
// servers carry the seq they took from the word. With NTX < MOD publishes the values the word's seq takes in one
// run (the initial one and one per publish) are all different, so no seq the model compares can be confused with
// an older one, exactly as with 24 bits and fewer than 2^24 transactions. The initial seq is MOD-1, so the first
// publish wraps the modulus and the modular increment is exercised too.
//
// Configuration (spin -D...): NTX (calls in a row, default 3, at most MOD-1), NO_TIMEOUTS, DEATH, SUCCESSOR,
// SHUTDOWN, ALL_COMPLETE (assert that every call is answered), STRICT_SWEEP (assert claim (b) for the sweep as
// well, see there), CODE_PEERDEAD_ORDER (the peer-dead check in Endpoint::Call's order), NUDGE_ALWAYS_WAKES (a
// nudge that wakes even when W is clear), NO_CLAIM_B (leave claim (b) out, to see what a broken variant does to
// claim (a)), and the deliberately broken variants BROKEN_COMPLETE_STORE, BROKEN_NO_RECHECK, BROKEN_EARLY_DEAD.
// scripts/model.sh expects the broken variants, STRICT_SWEEP and CODE_PEERDEAD_ORDER to fail.

#ifndef NTX
#define NTX 3
#endif
#define MOD 4
#if NTX >= MOD
#error "NTX must stay below MOD: no seq value may recur within a run"
#endif

// States (SPECIFICATION.md §6).
#define FREE 0
#define CLAIMED 1
#define REQUEST 2
#define SERVING 3
#define RESPONSE 4
#define ABANDONED 5

// The control word in a byte: bits 0-2 state, bits 3-4 seq, bit 5 W.
#define WB 32
#define ST(c) ((c) & 7)
#define SQ(c) (((c) >> 3) & 3)
#define MK(s, q) ((s) | ((q) << 3))
#define NOW(c) ((c) & 31)  // the word without W
#define NEXT(q) (((q) + 1) % MOD)

#ifdef NO_TIMEOUTS
#define TO 0
#else
#define TO 1
#endif

// Who may sleep on the word: one bit each in `sleepers`.
#define B_CALLER 1
#define B_WORKER 2
#define B_SUCC 4

// Why a caller's wait ended.
#define READY 0
#define TIMEDOUT 1
#define CLOSED 2
#define PEERDEAD 3

byte ctl = MK(FREE, MOD - 1);  // the slot's control word (SlotHeader::ctl)
byte sleepers = 0;             // who is in FUTEX_WAIT on ctl (cleared by FUTEX_WAKE)
byte resp_tag = 255;           // resp_*: the seq of the transaction the response answers
bool resp_err = false;         //         and whether it is SYSTEM_ERROR (PeerRestarted)
bool present = true;           // the host's guest_present_: a guest holds the seat
bool closing = false;          // the host's Endpoint::closing()
bool host_state = false;       // SegmentHeader::host_state == SHUTTING_DOWN
bool kill1 = false;            // the environment stops the first worker (its process dies)
bool dead1 = false;            // the first worker has stopped (by death or by exiting)
byte ctx = 255;                // the seq of the caller's transaction in flight (for the monitor)
byte answers = 0;              // calls that ended with a successful answer
byte stray = 0;                // response writes by the sweep outside SERVING/ABANDONED of its seq

// One transition: CAS the whole word from (from, seq, any W) to (to, toseq, W = 0), as detail::Transition. A CAS
// that fails only because W moved is retried, so the loop is one atomic test at the moment the CAS succeeds or
// finds another state or seq; *observed (obs) is the word then. The FUTEX_WAKE owed for a replaced W follows as a
// step of its own: the notifier may be preempted, or die, in between.
inline cas(c_from, c_seq, c_to, c_toseq) {
  atomic {
    if
    :: ST(ctl) == c_from && SQ(ctl) == c_seq ->
      woke = ((ctl & WB) != 0);
      ctl = MK(c_to, c_toseq);
      ok = true
    :: else ->
      obs = ctl;
      ok = false
    fi
  }
  if
  :: woke -> sleepers = 0; woke = false  // FUTEX_WAKE(all)
  :: else
  fi
}

// FUTEX_WAIT(&ctl, expected): returns at once if the word differs, else sleeps until a FUTEX_WAKE. The compare
// and the enqueueing are one atomic step (the kernel does both under the futex's bucket lock).
inline futex_wait(f_expected, f_bit) {
  atomic {
    if
    :: ctl == f_expected -> sleepers = sleepers | f_bit
    :: else
    fi
  }
}

// Endpoint::NudgeAll for the one word: clear W by CAS if set, then wake (detail::Nudge).
inline nudge() {
  atomic {
    if
    :: (ctl & WB) != 0 -> ctl = ctl & ~WB; woke = true
#ifdef NUDGE_ALWAYS_WAKES
    :: else -> woke = true  // a variant: FUTEX_WAKE even when W was clear
#else
    :: else
#endif
    fi
  }
  if
  :: woke -> sleepers = 0; woke = false
  :: else
  fi
}

// Write the response fields, as the server that took transaction `s`. Claim (b): a response is never written
// into a moved-on transaction; when a server writes them the word is SERVING(s) or ABANDONED(s), the states in
// which it owns them (SPECIFICATION.md §6, Ownership).
inline write_response(w_seq, w_err) {
  atomic {
#ifndef NO_CLAIM_B
    assert((ST(ctl) == SERVING || ST(ctl) == ABANDONED) && SQ(ctl) == w_seq);
#endif
    resp_tag = w_seq;
    resp_err = w_err
  }
}

// detail::Complete: T4, else T7, else nothing (the slot was taken from this server).
inline complete(k_seq) {
#ifdef BROKEN_COMPLETE_STORE
  // BROKEN: a plain store instead of a CAS overwrites whatever the word holds, ABANDONED included.
  atomic { woke = ((ctl & WB) != 0); ctl = MK(RESPONSE, k_seq) }
  if
  :: woke -> sleepers = 0; woke = false
  :: else
  fi
#else
  cas(SERVING, k_seq, RESPONSE, k_seq);  // T4
  if
  :: !ok -> cas(ABANDONED, k_seq, FREE, k_seq)  // T7: the caller gave up, the answer is dropped
  :: else
  fi
#endif
}

// DirectGuest::Work: wait (WaitFor with the predicate REQUEST and the abort host_shutting_down), take (TryTake:
// load, then T3 with the seq loaded), serve, complete; exit when the host shuts down. The worker's own closing
// and the host's death are not modelled: neither happens here.
inline worker_loop(me) {
  do
  :: v = ctl;
    if
    :: ST(v) == REQUEST ->
      // TryTake loads the word again and CASes with the seq it loaded; that load is this one (the wait's load
      // only decides to try, and a try that finds no REQUEST ends where a failed wait check does).
      s = SQ(v);
      cas(REQUEST, s, SERVING, s);  // T3
      if
      :: ok ->
        write_response(s, false);
        complete(s)
      :: else
      fi
    :: else ->
      if
      :: host_state -> break  // abort: the host is shutting down
      :: else
      fi;
      if
      :: (v & WB) == 0 ->
        atomic {  // CAS W set; then loop: re-check before sleeping
          if
          :: ctl == v -> ctl = v | WB
          :: else
          fi
        }
#ifdef BROKEN_NO_RECHECK
        // BROKEN: sleep right after setting W, without re-checking the conditions kept outside the word.
        futex_wait(v | WB, me);
end_sleep_norecheck:
        (sleepers & me) == 0
#endif
      :: else ->
        futex_wait(v, me);
end_sleep:  // an idle server sleeps for good once the caller is done: a valid end state
        (sleepers & me) == 0
      fi
    fi
  od
}

proctype Worker() {
  byte v, cur, s, obs;
  bool ok, woke;
  {
    worker_loop(B_WORKER)
  } unless { kill1 };  // DEATH: the process stops at any step (never inside a CAS)
  sleepers = sleepers & ~B_WORKER;  // a dead or exited sleeper sleeps no more (bookkeeping for the monitor)
  dead1 = true
}

// A new guest that has taken the seat: SweepAsNewServer (§10.2), then a worker of its own.
proctype Successor() {
  byte v, cur, s, obs;
  bool ok, woke;
  cur = ctl;
  s = SQ(cur);
  if
  :: ST(cur) == SERVING ->
    // PeerRestarted in resp_*, then T4 (else T7 if the caller has abandoned it meanwhile).
#ifdef STRICT_SWEEP
    write_response(s, true);
#else
    // The sweep writes resp_* after a plain load, without a CAS that makes them its own: the caller may have
    // taken the slot back with T9 (it saw the guest gone just before this guest attached) and moved on. Counted
    // here; claim (a) proves the write harmless (no answer is ever delivered with a wrong tag), and STRICT_SWEEP
    // shows that claim (b) does not hold for the sweep.
    atomic {
      if
      :: !((ST(ctl) == SERVING || ST(ctl) == ABANDONED) && SQ(ctl) == s) -> stray++
      :: else
      fi;
      resp_tag = s;
      resp_err = true
    }
#endif
    complete(s)
  :: ST(cur) == ABANDONED -> cas(ABANDONED, s, FREE, s)  // T7
  :: else
  fi;
  worker_loop(B_SUCC)
}

active proctype Env() {
  byte obs;
  bool ok, woke;
  run Worker();
#ifdef DEATH
  if
  :: kill1 = true  // at any moment
  :: skip
  fi;
#endif
#ifndef BROKEN_EARLY_DEAD
end_env:
  dead1;  // the worker stopped; its connection closes
#else
  // BROKEN: the host believes the guest gone, and seats a new one, before the old one has stopped (a liveness
  // test that is no proof: a PID, a heartbeat).
#endif
  present = false;  // Endpoint::OnGuestGone
  nudge();
#ifdef SUCCESSOR
  if
  :: !host_state ->  // the Doorman admits a guest only while the host is not shutting down
    present = true;  // Endpoint::OnGuestAttached
    run Successor()
  :: skip
  fi
#endif
}

#ifdef SHUTDOWN
active proctype Shutdown() {
  bool woke;
  if
  :: skip
  :: closing = true;  // DirectHost::Shutdown: set_closing, then AnnounceShutdown
    host_state = true;
    nudge()
  fi
}
#endif

// Release (T8): CLAIMED or RESPONSE at seq -> FREE. The caller owns the slot, so it must succeed: a failure
// would make the caller quarantine the slot, which only a broken peer may cause.
inline release(r_seq) {
  cas(CLAIMED, r_seq, FREE, r_seq);
  if
  :: !ok -> cas(RESPONSE, r_seq, FREE, r_seq)
  :: else
  fi;
  assert(ok)
}

active proctype Caller() {
  byte t = 0, seq, tx, v, obs, why;
  bool ok, woke, held = false;
  do
  :: t == NTX -> break
  :: else ->
    t++;
    if
    :: held ->
      // Unpark: the slot parked after the last call must still be RESPONSE at its seq (else: quarantine).
      v = ctl;
      assert(NOW(v) == MK(RESPONSE, seq));
      held = false
    :: else ->
claim:  // ClaimIn: TryClaim, or T10 on an abandoned slot when no guest is attached, or the deadline
      if
      :: TO -> goto done  // kNoFreeSlot
      :: atomic { ST(ctl) == FREE -> seq = SQ(ctl) }  // TryClaim's load
        cas(FREE, seq, CLAIMED, seq);  // T1
        if
        :: !ok -> goto claim
        :: else
        fi
      :: atomic { ST(ctl) == ABANDONED && !present }  // ReclaimAbandonedIfServerDead
        v = ctl;  // ReclaimAbandoned's load
        if
        :: ST(v) == ABANDONED -> cas(ABANDONED, SQ(v), FREE, SQ(v))  // T10
        :: else
        fi;
        goto claim
      fi
    fi;
    // Endpoint::Call: refuse to publish once closing or shutting down (§8.3 step 1).
    if
    :: closing || host_state -> goto owned_fail
    :: else
    fi;
    cas(CLAIMED, seq, REQUEST, NEXT(seq));  // T2 (Publish tries CLAIMED, then RESPONSE)
    if
    :: !ok -> cas(RESPONSE, seq, REQUEST, NEXT(seq))
    :: else
    fi;
    assert(ok);  // the caller's own slot never moved under it (no quarantine)
    tx = NEXT(seq);
    seq = tx;
    ctx = tx;
    why = READY;
    // WaitFor(ctl, !in_flight, abort): in_flight = REQUEST or SERVING with seq tx.
    // The deadline may pass at any instant; the code looks at it where the model does (after the abort checks,
    // before sleeping) and in FUTEX_WAIT's timeout, and the model lets it have passed or not each time.
    do
    :: v = ctl;
      if
      :: !(SQ(v) == tx && (ST(v) == REQUEST || ST(v) == SERVING)) -> break
      :: else
      fi;
      if
      :: closing -> why = CLOSED; break
      :: else
      fi;
#ifdef CODE_PEERDEAD_ORDER
      // Endpoint::Call's abort as implemented: first "no guest is attached", then "the word is SERVING". A new
      // guest may attach and take the request between the two loads; the caller then takes back (T9) a call a
      // live server is serving. scripts/model.sh shows that this breaks claim (b).
      if
      :: !present ->
        if
        :: ST(ctl) == SERVING -> why = PEERDEAD; break
        :: else
        fi
      :: else
      fi;
#else
      // Abort, SPECIFICATION.md §10.1: a caller waiting on SERVING that then finds the server gone. The word is
      // read first: a server that had taken the call before the guest was seen gone is dead (one guest at a
      // time, and a guest that is gone never comes back); the other order is not sound (CODE_PEERDEAD_ORDER).
      if
      :: ST(ctl) == SERVING && SQ(ctl) == tx ->
        if
        :: !present -> why = PEERDEAD; break
        :: else
        fi
      :: else
      fi;
#endif
      if
      :: TO -> why = TIMEDOUT; break  // now >= deadline
      :: true
      fi;
      if
      :: (v & WB) == 0 ->
        atomic {
          if
          :: ctl == v -> ctl = v | WB
          :: else
          fi
        }
      :: else ->
        futex_wait(v, B_CALLER);
        if
        :: (sleepers & B_CALLER) == 0
        :: TO -> sleepers = sleepers & ~B_CALLER  // FUTEX_WAIT's timeout (the deadline)
        fi
      fi
    od;
    if
    :: why == READY -> goto answered
    :: else
    fi;
    if
    :: why == PEERDEAD ->
      cas(SERVING, tx, CLAIMED, tx);  // T9
      if
      :: ok -> goto owned_fail  // kPeerDead
      :: else
      fi
    :: else
    fi;
    // Cancel(tx)
    do
    :: cas(REQUEST, tx, CLAIMED, tx);  // T5
      if
      :: ok -> goto owned_fail  // withdrawn: kTimeout / kClosed, the caller releases the slot
      :: else
      fi;
      assert(SQ(obs) == tx);  // never kLost
      if
      :: ST(obs) == SERVING ->
        cas(SERVING, tx, ABANDONED, tx);  // T6
        if
        :: ok -> goto done  // abandoned: the slot is the server's until it finishes
        :: else
        fi
      :: ST(obs) == RESPONSE -> v = ctl; goto answered  // answered meanwhile
      :: else -> assert(ST(obs) == REQUEST)  // anything else would be kLost
      fi
    od;
answered:
    // The wait ended: the word must be RESPONSE(tx) (anything else would be quarantined as a protocol violation).
    assert(NOW(v) == MK(RESPONSE, tx));
    // Claim (a), SPECIFICATION.md §6 "No stale answers": a delivered answer is the one for the request the caller
    // published; its tag is the seq the caller published.
    assert(resp_tag == tx);
    if
    :: resp_err -> goto owned_fail  // an error answer (PeerRestarted): the call fails, the slot is released
    :: else -> answers++; held = true; goto done  // parked for the next call
    fi;
owned_fail:
    release(seq);
done:
    ctx = 255
  od;
  // Close: the parked slot is freed (ReleaseAllParked).
  if
  :: held -> release(seq)
  :: else
  fi;
#ifdef ALL_COMPLETE
  // Claim (c): with no deadlines, no deaths and no shutdown every call completes with its answer.
  assert(answers == NTX);
#endif
  // Claim (d), no slot leaks: the slot comes back once every call has ended; the caller can claim it again (with
  // no deadline: this wait must end, or the run ends in an invalid end state).
probe:
  if
  :: atomic { ST(ctl) == FREE -> seq = SQ(ctl) }
    cas(FREE, seq, CLAIMED, seq);
    if
    :: ok -> release(seq)
    :: else -> goto probe
    fi
  :: atomic { ST(ctl) == ABANDONED && !present }
    v = ctl;
    if
    :: ST(v) == ABANDONED -> cas(ABANDONED, SQ(v), FREE, SQ(v))
    :: else
    fi;
    goto probe
  fi
}

// Claim (c), SPECIFICATION.md §7.1 (no wake-up is lost): whenever nothing can move any more, nobody sleeps in
// FUTEX_WAIT while the condition it waits for holds: the caller while its call is answered (or its server is
// known dead, or the host closes), a worker while a request waits or the host shuts down.
active proctype Monitor() {
end_monitor:
  timeout ->
    assert(!((sleepers & B_CALLER) != 0 &&
             (!(SQ(ctl) == ctx && (ST(ctl) == REQUEST || ST(ctl) == SERVING)) || closing ||
              (!present && ST(ctl) == SERVING))));
    assert(!((sleepers & (B_WORKER | B_SUCC)) != 0 && (ST(ctl) == REQUEST || host_state)))
}

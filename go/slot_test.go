// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func word(h *slotHeader) uint32 { return atomic.LoadUint32(&h.ctl) }

// outcome is complete's outcome without whether it woke the caller.
func outcome(o completeOutcome, _ bool) completeOutcome { return o }

func TestTransitionsFollowTheTable(t *testing.T) {
	h := new(slotHeader) // heap memory: futex calls work on any word
	seq, ok := tryClaim(h)
	if !ok || seq != 0 || word(h) != makeCtl(stateClaimed, 0) {
		t.Fatalf("T1: %v %#x", ok, word(h))
	}
	if _, ok := tryClaim(h); ok {
		t.Fatal("claimed twice")
	}
	tx, _, ok := publish(h, seq)
	if !ok || tx != 1 || word(h) != makeCtl(stateRequest, 1) {
		t.Fatalf("T2: %#x", word(h))
	}
	if _, _, ok := publish(h, seq); ok {
		t.Fatal("published from REQUEST")
	}
	if s, ok := tryTake(h); !ok || s != 1 || word(h) != makeCtl(stateServing, 1) {
		t.Fatalf("T3: %#x", word(h))
	}
	if _, ok := tryTake(h); ok {
		t.Fatal("taken twice")
	}
	if cancel(h, tx) != cancelAbandoned || word(h) != makeCtl(stateAbandoned, 1) {
		t.Fatalf("T6: %#x", word(h))
	}
	if outcome(complete(h, tx)) != completeDiscarded || word(h) != makeCtl(stateFree, 1) {
		t.Fatalf("T7: %#x", word(h))
	}
	seq, _ = tryClaim(h)
	tx, _, _ = publish(h, seq)
	if cancel(h, tx) != cancelWithdrawn || word(h) != makeCtl(stateClaimed, 2) {
		t.Fatalf("T5: %#x", word(h))
	}
	tx, _, _ = publish(h, tx)
	s, _ := tryTake(h)
	if outcome(complete(h, s)) != completeDelivered || word(h) != makeCtl(stateResponse, 3) {
		t.Fatalf("T4: %#x", word(h))
	}
	if cancel(h, tx) != cancelAnswered {
		t.Fatal("cancel after the answer")
	}
	if outcome(complete(h, s)) != completeLost {
		t.Fatal("completed twice")
	}
	// A stale seq never moves the word.
	if ok, _ := transition(h, stateResponse, 2, stateFree, 2); ok {
		t.Fatal("stale seq accepted")
	}
	release(h, tx)
	if word(h) != makeCtl(stateFree, 3) {
		t.Fatalf("T8: %#x", word(h))
	}
	// seq wraps at 24 bits.
	atomic.StoreUint32(&h.ctl, makeCtl(stateClaimed, ctlSeqMask))
	if tx, _, ok := publish(h, ctlSeqMask); !ok || tx != 0 || word(h) != makeCtl(stateRequest, 0) {
		t.Fatalf("wrap: %#x", word(h))
	}
	// Invalid states accept no transition.
	atomic.StoreUint32(&h.ctl, 9|5<<ctlSeqShift)
	if _, ok := tryTake(h); ok || cancel(h, 5) != cancelLost || outcome(complete(h, 5)) != completeLost {
		t.Fatal("a transition from an invalid state")
	}
}

func TestTransitionClearsWaitingBitAndWakes(t *testing.T) {
	h := new(slotHeader)
	atomic.StoreUint32(&h.ctl, makeCtl(stateRequest, 7)|ctlWaiting)
	woke := make(chan struct{})
	go func() {
		// Sleeps until the word changes (a bounded sleep, re-checked, so a missed wake cannot hang the test).
		for word(h) == makeCtl(stateRequest, 7)|ctlWaiting {
			futexWait(&h.ctl, makeCtl(stateRequest, 7)|ctlWaiting, int64(time.Second))
		}
		close(woke)
	}()
	if s, ok := tryTake(h); !ok || s != 7 {
		t.Fatal("take with W set")
	}
	if word(h) != makeCtl(stateServing, 7) {
		t.Fatalf("W not cleared: %#x", word(h))
	}
	if atomic.LoadUint64(&h.wakeStampNs) == 0 {
		t.Error("no wake stamp")
	}
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("sleeper not woken")
	}
}

// publish and complete say whether the word they replaced had W set: the side that woke its peer starts
// its next wait offering the CPU (SPECIFICATION.md §7.3).
func TestPublishAndCompleteReportAWokenSleeper(t *testing.T) {
	h := new(slotHeader)
	atomic.StoreUint32(&h.ctl, makeCtl(stateClaimed, 4))
	if tx, woke, ok := publish(h, 4); !ok || woke || tx != 5 {
		t.Fatalf("publish without a sleeper: %v %v %d", ok, woke, tx)
	}
	s, _ := tryTake(h)
	if o, woke := complete(h, s); o != completeDelivered || woke {
		t.Fatalf("complete without a sleeper: %d %v", o, woke)
	}
	atomic.StoreUint32(&h.ctl, word(h)|ctlWaiting)
	tx, woke, ok := publish(h, 5)
	if !ok || !woke || word(h) != makeCtl(stateRequest, 6) {
		t.Fatalf("publish over W: %v %v %#x", ok, woke, word(h))
	}
	s, _ = tryTake(h)
	atomic.StoreUint32(&h.ctl, word(h)|ctlWaiting)
	if o, woke := complete(h, s); o != completeDelivered || !woke || word(h) != makeCtl(stateResponse, tx) {
		t.Fatalf("complete over W: %d %v %#x", o, woke, word(h))
	}
	// T7 reports it too.
	tx, _, _ = publish(h, tx)
	s, _ = tryTake(h)
	cancel(h, tx)
	atomic.StoreUint32(&h.ctl, word(h)|ctlWaiting)
	if o, woke := complete(h, s); o != completeDiscarded || !woke {
		t.Fatalf("T7 over W: %d %v", o, woke)
	}
}

func TestWaitForSleepsAndWakes(t *testing.T) {
	h := new(slotHeader)
	spin := newSpinPolicy()
	var wg sync.WaitGroup
	got := make(chan uint32, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		w, st := waitFor(&h.ctl, &h.wakeStampNs, noDeadline, spin, func(w uint32) bool { return ctlState(w) == stateRequest },
			func(bool) bool { return false }, ctlWaiting, startSpin, nil, nil)
		if st != waitReady {
			w = 0xFFFFFFFF
		}
		got <- w
	}()
	// The waiter spins, then publishes W and sleeps.
	for word(h)&ctlWaiting == 0 {
		time.Sleep(time.Millisecond)
	}
	atomic.StoreUint32(&h.ctl, makeCtl(stateClaimed, 0)|ctlWaiting)
	if _, _, ok := publish(h, 0); !ok {
		t.Fatal("publish")
	}
	select {
	case w := <-got:
		if w != makeCtl(stateRequest, 1) {
			t.Fatalf("woke with %#x", w)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("waiter not woken")
	}
	wg.Wait()
}

func TestWaitForDeadlineAndAbort(t *testing.T) {
	h := new(slotHeader)
	never := func(uint32) bool { return false }
	start := time.Now()
	if _, st := waitFor(&h.ctl, nil, monoNow()+int64(time.Millisecond), newSpinPolicy(), never,
		func(bool) bool { return false }, ctlWaiting, startSpin, nil, nil); st != waitTimeout {
		t.Fatalf("status %d", st)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("a 1 ms wait took %v", d)
	}
	var slowChecks int32
	if _, st := waitFor(&h.ctl, nil, noDeadline, newSpinPolicy(), never, func(slow bool) bool {
		if slow {
			return atomic.AddInt32(&slowChecks, 1) == 2
		}
		return false
	}, ctlWaiting, startSpin, nil, nil); st != waitAborted {
		t.Fatalf("status %d", st)
	}
	// nudge wakes a sleeper so it re-checks a condition kept outside the word.
	var stop uint32
	done := make(chan waitStatus, 1)
	go func() {
		_, st := waitFor(&h.ctl, nil, noDeadline, newSpinPolicy(), never,
			func(bool) bool { return atomic.LoadUint32(&stop) != 0 }, ctlWaiting, startSpin, nil, nil)
		done <- st
	}()
	for word(h)&ctlWaiting == 0 {
		time.Sleep(time.Millisecond)
	}
	atomic.StoreUint32(&stop, 1)
	nudge(&h.ctl)
	select {
	case st := <-done:
		if st != waitAborted {
			t.Fatalf("status %d", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("nudge did not wake the sleeper")
	}
}

func TestPlacement(t *testing.T) {
	cases := []struct {
		n           int32
		off, length uint32
		ok          bool
	}{
		{0, 0, 0, true}, {64, 0, 64, true}, {65, 0, 0, false}, {-1, 63, 1, true}, {-64, 0, 64, true},
		{-65, 0, 0, false}, {-1 << 31, 0, 0, false}, {1<<31 - 1, 0, 0, false},
	}
	for _, c := range cases {
		off, length, ok := placement(c.n, 64)
		if ok != c.ok || (ok && (off != c.off || length != c.length)) {
			t.Errorf("placement(%d, 64) = %d, %d, %v", c.n, off, length, ok)
		}
	}
}

func TestSpinPolicyAdapts(t *testing.T) {
	p := newSpinPolicy()
	if p.budget() != 2*initialWakeNs {
		t.Fatal(p.budget())
	}
	for i := 0; i < 200; i++ {
		p.observe(500)
	}
	if p.budget() != minSpinNs {
		t.Errorf("budget %d after cheap wake-ups", p.budget())
	}
	for i := 0; i < 200; i++ {
		p.observe(5000000)
	}
	if p.budget() != maxSpinNs {
		t.Errorf("budget %d after costly wake-ups", p.budget())
	}
	p.observe(-5)
	p.observe(20000000000)
	if p.budget() != maxSpinNs {
		t.Error("implausible samples changed the budget")
	}
}

// Crowding is assumed from its evidence for the hold period, then no longer (SPECIFICATION.md §7.3).
func TestSpinPolicyCrowdedForTheHoldPeriod(t *testing.T) {
	p := newSpinPolicy()
	now := monoNow()
	if p.crowded(now) {
		t.Fatal("crowded before any evidence")
	}
	p.noteCrowded(now)
	if !p.crowded(now+crowdedHoldNs-1) || p.crowded(now+crowdedHoldNs) {
		t.Fatal("crowding not held for exactly crowdedHoldNs")
	}
}

// While crowded, a waiter that has just woken its peer goes straight to publishing its sleeper flag: the abort
// hook first runs in the sleep phase, before the flag is set, and finds it set the second time.
func TestCrowdedWaiterThatWokeItsPeerSleepsWithoutSpinning(t *testing.T) {
	h := new(slotHeader)
	p := newSpinPolicy()
	p.noteCrowded(monoNow())
	calls, flagAtSecond := 0, false
	_, st := waitFor(&h.ctl, nil, noDeadline, p, func(uint32) bool { return false }, func(bool) bool {
		calls++
		if calls == 2 {
			flagAtSecond = atomic.LoadUint32(&h.ctl)&ctlWaiting != 0
		}
		return calls == 2
	}, ctlWaiting, startYield, nil, nil)
	if st != waitAborted || !flagAtSecond {
		t.Fatalf("status %d, flag at the second check %v: the waiter spun first", st, flagAtSecond)
	}
}

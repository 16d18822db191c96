// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"math"
	"sync/atomic"
)

// Waiting on a futex word (SPECIFICATION.md §7): spin for an adaptive budget, then publish the W bit,
// re-check, and sleep in FUTEX_WAIT. Two busy peers answer within the first few microseconds of pure spinning
// and therefore never enter the kernel; an idle waiter sleeps. A sleeper wakes at least every livenessSliceNs
// to run its slow checks (the host's liveness, tested on the guest connection).

const (
	pureSpinNs      int64 = 4000 // spin without any system call this long; then offer the CPU between spins
	minSpinNs       int64 = 2000
	maxSpinNs       int64 = 200000
	initialWakeNs   int64 = 50000
	livenessSliceNs int64 = 50000000 // 50 ms
	noDeadline      int64 = math.MaxInt64

	// Crowded CPUs (SPECIFICATION.md §7.3): a gap this long between two clock reads of a spin, or a wake-up
	// this slow, means another thread had this CPU; crowding is then assumed for crowdedHoldNs, during which a
	// waiter spins at most crowdedSpinNs without yielding (none after waking its peer) and then sleeps.
	preemptedNs   int64 = 250000    // 250 µs
	crowdedHoldNs int64 = 200000000 // 200 ms
	crowdedSpinNs int64 = 5000

	// A peer on this CPU (SPECIFICATION.md §7.3): a yield that switched to another thread and came back
	// within handoffMaxNs while the word changed means the peer runs here; that waiter's waits then yield
	// from the start for sharedCPUHoldNs.
	sharedCPUHoldNs int64 = 20000000 // 20 ms
	handoffMaxNs    int64 = 50000    // 50 µs
	sharedCPUStreak       = 8        // waits in a row that must end right after such a yield
)

// spinPolicy learns what a wake-up costs on this machine (the peer stamps wake_stamp_ns just before
// FUTEX_WAKE; the woken waiter measures how long it took to run) and spins about that long before sleeping.
// Safe for concurrent use; a lost update only delays adaptation.
type spinPolicy struct {
	costNs       int64
	crowdedUntil int64 // monoNow time until which the CPUs count as crowded; written only on evidence
}

func newSpinPolicy() *spinPolicy { return &spinPolicy{costNs: initialWakeNs} }

// budget is how long to spin before sleeping: twice the wake-up cost. Once one side sleeps, the other's next
// wait lasts at least a wake-up plus the work in between; spinning less makes both sides sleep on every
// message.
func (p *spinPolicy) budget() int64 {
	c := 2 * atomic.LoadInt64(&p.costNs)
	if c < minSpinNs {
		return minSpinNs
	}
	if c > maxSpinNs {
		return maxSpinNs
	}
	return c
}

// observe feeds one measured wake-up latency: exponential moving average, weight 1/8.
func (p *spinPolicy) observe(sampleNs int64) {
	if sampleNs <= 0 || sampleNs > 10000000 {
		return // clock skew or a stale stamp
	}
	cur := atomic.LoadInt64(&p.costNs)
	atomic.StoreInt64(&p.costNs, cur+(sampleNs-cur)/8)
}

// crowded says whether the CPUs were recently seen crowded (at now).
func (p *spinPolicy) crowded(now int64) bool { return now < atomic.LoadInt64(&p.crowdedUntil) }

// noteCrowded records evidence of crowding at now. Written only when seen, not per call.
func (p *spinPolicy) noteCrowded(now int64) {
	if atomic.LoadInt64(&p.crowdedUntil) < now+crowdedHoldNs/2 {
		atomic.StoreInt64(&p.crowdedUntil, now+crowdedHoldNs)
	}
}

// sharedCPU is one waiter's record of a peer on its CPU (SPECIFICATION.md §7.3). Not safe for concurrent
// use: each worker has its own.
type sharedCPU struct {
	until  int64 // yield from the start until then (monoNow)
	streak int   // waits in a row that ended right after a handoff on this CPU
}

func (c *sharedCPU) note(now int64) {
	if c.streak++; c.streak >= sharedCPUStreak {
		c.until = now + sharedCPUHoldNs
		c.streak = 0
	}
}

type waitStatus int

const (
	waitReady   waitStatus = iota // the predicate held
	waitTimeout                   // the deadline passed
	waitAborted                   // abort asked to stop; its reason is the caller's to keep
)

// waitStart is how a wait begins (SPECIFICATION.md §7.3). A side that has just woken its sleeping peer knows
// the answer is at least one wake-up away, and that the kernel may have queued the woken peer on this very
// CPU (on a VM it usually does, even with the other CPU idle): a pure spin there would hold off the peer it
// waits for.
type waitStart int

const (
	startSpin  waitStart = iota // spin (pure, then offering the CPU), then sleep: the peer is running
	startYield                  // offer the CPU between re-reads from the start: a woken peer may be queued here
)

// waitFor waits until pred(*word) holds, the deadline (monoNow clock) passes, or abort returns true.
// abort(false) must be cheap (atomic loads): it runs every few dozen spins and before every sleep.
// abort(true) may make system calls: it runs at most every livenessSliceNs while sleeping. stamp is the slot's
// wake_stamp_ns, or nil. waitBit is the word's "a sleeper is here" bit. shared, if not nil, is the
// waiter's own record of a peer on its CPU (SPECIFICATION.md §7.3; one per worker, never shared). Safe for any
// number of concurrent waiters on one word. firstClock, if not nil, receives the time of the wait's first
// clock read (0: it ended within a few spins, before reading the clock).
func waitFor(word *uint32, stamp *uint64, deadline int64, spin *spinPolicy, pred func(uint32) bool,
	abort func(slow bool) bool, waitBit uint32, start waitStart, shared *sharedCPU,
	firstClock *int64) (uint32, waitStatus) {
	// Spin phase: no system call (monoNow reads the vDSO clock).
	v := atomic.LoadUint32(word)
	if pred(v) {
		return v, waitReady
	}
	// The clock is first read at the 8th re-read, not before spinning: a quick answer costs no clock read.
	var spinEnd, pureEnd, last int64
	switches := int64(-1)
	detectShared := false
	for i := 1; ; i++ {
		cpuRelax()
		v = atomic.LoadUint32(word)
		if pred(v) {
			if detectShared {
				shared.streak = 0 // answered within the pure spin (no yield has come yet)
			}
			return v, waitReady
		}
		if i&7 == 0 {
			now := monoNow()
			if i == 8 {
				if firstClock != nil {
					*firstClock = now
				}
				if spin.crowded(now) {
					// Crowded CPUs: a short pure spin (none after waking the peer), then sleep. No yields:
					// they would hand this CPU to whatever else runs here rather than to the peer.
					spinEnd = now
					if start == startSpin {
						spinEnd = now + crowdedSpinNs
					}
					if spinEnd > deadline {
						spinEnd = deadline
					}
					pureEnd = spinEnd
				} else {
					spinEnd = now + spin.budget()
					if spinEnd > deadline {
						spinEnd = deadline
					}
					pureEnd = now
					if start == startSpin && (shared == nil || now >= shared.until) {
						detectShared = shared != nil
						pureEnd = now + pureSpinNs
						if pureEnd > spinEnd {
							pureEnd = spinEnd
						}
					}
				}
			} else if now-last > preemptedNs {
				spin.noteCrowded(now) // this spin lost its CPU (or its yield gave it away) for that long
				if spinEnd > now {
					spinEnd = now
				}
			}
			last = now
			if now >= spinEnd {
				break
			}
			// Past the pure spin the peer is slow or not running; with more busy threads than cores it may be
			// waiting for this very CPU, so offer it (sched_yield returns at once when nothing else can run).
			if now >= pureEnd {
				if detectShared && switches < 0 {
					switches = contextSwitches()
				}
				schedYield()
				// The word changed while this thread had given its CPU to another thread (the yield switched,
				// briefly): the peer runs on this CPU, so pure spinning only holds it off.
				v = atomic.LoadUint32(word)
				if pred(v) {
					if detectShared {
						if after := monoNow(); after-now < handoffMaxNs && contextSwitches() > switches {
							shared.note(after)
						} else {
							shared.streak = 0
						}
					}
					return v, waitReady
				}
				switches = -1
			}
			if i&63 == 0 && abort(false) {
				return v, waitAborted
			}
		}
	}
	// Sleep phase. The first slow check comes one slice in, so a wait that ends soon after the spin makes no
	// system call besides the futex.
	nextSlow := monoNow() + livenessSliceNs
	for {
		v = atomic.LoadUint32(word)
		if pred(v) {
			return v, waitReady
		}
		now := monoNow()
		if abort(false) {
			return v, waitAborted
		}
		if now >= nextSlow {
			if abort(true) {
				return v, waitAborted
			}
			nextSlow = now + livenessSliceNs
		}
		if now >= deadline {
			return v, waitTimeout
		}
		if v&waitBit == 0 {
			// Publish "about to sleep", then loop to re-check everything once more before sleeping: either a
			// notifier sees the bit and wakes us, or we see its change.
			atomic.CompareAndSwapUint32(word, v, v|waitBit)
			continue
		}
		sleep := nextSlow
		if deadline < sleep {
			sleep = deadline
		}
		sleep -= now
		if sleep < 1000 {
			sleep = 1000
		}
		if futexWait(word, v, sleep) == futexWoken && stamp != nil {
			woke := monoNow()
			stamped := int64(atomic.LoadUint64(stamp))
			if stamped >= now && stamped <= woke {
				spin.observe(woke - stamped)
				if woke-stamped > preemptedNs {
					spin.noteCrowded(woke) // woken, but no CPU for that long
				}
			}
		}
	}
}

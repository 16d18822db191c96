// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import "sync/atomic"

// The slot state machine (SPECIFICATION.md §6). Every transition is a CAS of the whole control word from
// (state, seq, any W) to (new state, new seq, W = 0); a CAS that fails only because W moved is retried. When
// the replaced word had W set, the transitioning side stamps the time and wakes every sleeper.
// sync/atomic operations are sequentially consistent, which covers the acquire-release order the
// specification asks for: buffers and req_*/resp_* written before a transition are visible to whoever
// observes the new word.

// slotView is one slot resolved from the validated geometry. req and resp are the slot's buffers in the
// mapping, each exactly capacity bytes (their capacity is limited too, so an append never crosses into the
// next buffer).
type slotView struct {
	h        *slotHeader
	req      []byte
	resp     []byte
	capacity uint32
	index    uint32
}

// wakeSleepers stamps the moment (advisory, for the peer's spin tuning) and wakes every sleeper on the word
// whose value replaced (waiting bit set) the caller's change has just replaced.
func wakeSleepers(h *slotHeader, replaced uint32) {
	atomic.StoreUint64(&h.wakeStampNs, uint64(monoNow()))
	futexWakeAll(&h.ctl, replaced)
}

// transition moves the word from (from, seq) to (to, toSeq). It fails, returning the word it saw, when the
// word is not in (from, seq).
func transition(h *slotHeader, from, seq, to, toSeq uint32) (ok bool, observed uint32) {
	next := makeCtl(to, toSeq)
	for {
		cur := atomic.LoadUint32(&h.ctl)
		if ctlState(cur) != from || ctlSeq(cur) != seq&ctlSeqMask {
			return false, cur
		}
		if atomic.CompareAndSwapUint32(&h.ctl, cur, next) {
			if cur&ctlWaiting != 0 {
				wakeSleepers(h, cur)
			}
			return true, cur
		}
	}
}

// tryClaim: T1, FREE(s) -> CLAIMED(s). On success the caller owns the slot at seq s.
func tryClaim(h *slotHeader) (seq uint32, ok bool) {
	cur := atomic.LoadUint32(&h.ctl)
	if ctlState(cur) != stateFree {
		return 0, false
	}
	if ok, _ := transition(h, stateFree, ctlSeq(cur), stateClaimed, ctlSeq(cur)); !ok {
		return 0, false
	}
	return ctlSeq(cur), true
}

// publish: T2, CLAIMED(s) or RESPONSE(s) -> REQUEST(s+1). The request bytes and fields must be written.
// false: the caller no longer owns the slot (a broken peer moved it). woke: a server was asleep on the slot
// and has been woken.
func publish(h *slotHeader, seq uint32) (newSeq uint32, woke, ok bool) {
	next := nextSeq(seq)
	if ok, was := transition(h, stateClaimed, seq, stateRequest, next); ok {
		return next, was&ctlWaiting != 0, true
	}
	if ok, was := transition(h, stateResponse, seq, stateRequest, next); ok {
		return next, was&ctlWaiting != 0, true
	}
	return 0, false, false
}

// release: T8, CLAIMED(s) or RESPONSE(s) -> FREE(s).
func release(h *slotHeader, seq uint32) {
	if ok, _ := transition(h, stateClaimed, seq, stateFree, seq); !ok {
		transition(h, stateResponse, seq, stateFree, seq)
	}
}

type cancelOutcome int

const (
	cancelWithdrawn cancelOutcome = iota // T5: the host had not taken it; the caller still owns the slot
	cancelAbandoned                      // T6: the host serves it; the slot is the host's until it finishes
	cancelAnswered                       // the answer arrived meanwhile: read it
	cancelLost                           // the word is in no state this caller can explain: give the slot up
)

// cancel gives up on the request published at seq (deadline, close, host shutdown).
func cancel(h *slotHeader, seq uint32) cancelOutcome {
	for {
		ok, cur := transition(h, stateRequest, seq, stateClaimed, seq)
		if ok {
			return cancelWithdrawn
		}
		if ctlSeq(cur) != seq&ctlSeqMask {
			return cancelLost
		}
		switch ctlState(cur) {
		case stateServing:
			if ok, _ := transition(h, stateServing, seq, stateAbandoned, seq); ok {
				return cancelAbandoned
			}
			// The word moved on between the two CASes: look again.
		case stateResponse:
			return cancelAnswered
		case stateRequest:
			// Only W changed: retry.
		default:
			return cancelLost
		}
	}
}

// tryTake: T3, REQUEST(s) -> SERVING(s). Exactly one of any number of competing servers succeeds.
func tryTake(h *slotHeader) (seq uint32, ok bool) {
	cur := atomic.LoadUint32(&h.ctl)
	if ctlState(cur) != stateRequest {
		return 0, false
	}
	if ok, _ := transition(h, stateRequest, ctlSeq(cur), stateServing, ctlSeq(cur)); !ok {
		return 0, false
	}
	return ctlSeq(cur), true
}

type completeOutcome int

const (
	completeDelivered completeOutcome = iota // T4: RESPONSE published
	completeDiscarded                        // T7: the caller had abandoned it; the answer is dropped
	completeLost                             // the slot is no longer this server's: nothing to do
)

// complete: T4, SERVING(s) -> RESPONSE(s), or T7, ABANDONED(s) -> FREE(s). The response fields must be
// written. woke: the caller was asleep on the slot and has been woken.
func complete(h *slotHeader, seq uint32) (out completeOutcome, woke bool) {
	if ok, was := transition(h, stateServing, seq, stateResponse, seq); ok {
		return completeDelivered, was&ctlWaiting != 0
	}
	if ok, was := transition(h, stateAbandoned, seq, stateFree, seq); ok {
		return completeDiscarded, was&ctlWaiting != 0
	}
	return completeLost, false
}

// writeErrorResponse fills the response fields of a SYSTEM_ERROR answer. Only the owner of the response side
// may call it.
func writeErrorResponse(h *slotHeader, e WireError) {
	atomic.StoreUint32(&h.respType, uint32(MsgTypeSystemError))
	atomic.StoreUint32(&h.respSize, 0)
	atomic.StoreUint32(&h.respError, uint32(e))
}

// sweepHostSlot is recovery of a host slot by a guest that has just taken the guest seat (SPECIFICATION.md
// §10.2): every earlier guest is dead or gone, so this one answers what a dead guest was serving and frees what it
// had left abandoned. It reports whether it answered one.
func sweepHostSlot(h *slotHeader) bool {
	cur := atomic.LoadUint32(&h.ctl)
	seq := ctlSeq(cur)
	switch ctlState(cur) {
	case stateServing:
		writeErrorResponse(h, WireErrPeerRestarted)
		complete(h, seq)
		return true
	case stateAbandoned:
		transition(h, stateAbandoned, seq, stateFree, seq)
	}
	return false
}

// sweepGuestSlot is recovery of a guest slot: whatever a dead guest held is given back (T8, T11); a call the
// host is serving is abandoned (T6), so the host frees it when done.
func sweepGuestSlot(h *slotHeader) {
	cur := atomic.LoadUint32(&h.ctl)
	seq := ctlSeq(cur)
	switch ctlState(cur) {
	case stateClaimed, stateResponse:
		release(h, seq)
	case stateRequest:
		transition(h, stateRequest, seq, stateFree, seq)
	case stateServing:
		transition(h, stateServing, seq, stateAbandoned, seq)
	}
}

// nudge makes every sleeper on a slot word re-check conditions kept outside the word (close): it clears W
// (so a waiter about to sleep sees the word change) and wakes. The condition must be stored first.
func nudge(word *uint32) {
	for {
		v := atomic.LoadUint32(word)
		if v&ctlWaiting == 0 {
			return
		}
		if atomic.CompareAndSwapUint32(word, v, v&^ctlWaiting) {
			futexWakeAll(word, v)
			return
		}
	}
}

// stageInline moves a request of at most inlineSize bytes, written at the start or the end of s's request
// buffer, into the header, where §8.1 says it travels (as the C++ Endpoint::StageInline). An invalid size is
// left for the call to refuse.
func stageInline(s *slotView, size int32) {
	if off, length, ok := placement(size, s.capacity); ok && length != 0 && length <= inlineSize {
		dst, _ := messageBytes(s.h, s.req, s.capacity, size)
		copy(dst, s.req[off:off+length])
	}
}

// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"sync/atomic"
	"time"
)

// The caller half of a transaction on a guest slot (SPECIFICATION.md §8.3): the guest calls the host.

// answer is a validated response. data lies in the slot's response buffer, or in its header for an answer
// of at most inlineSize bytes (§8.1).
type answer struct {
	typ      MsgType
	wireSize int32
	data     []byte
}

func (c *Client) deadline(timeout time.Duration) int64 {
	if timeout < 0 {
		timeout = c.defaultTimeout
	}
	return deadlineAfter(timeout)
}

// deadlineAfter is the monoNow deadline timeout from now, saturating instead of overflowing.
func deadlineAfter(timeout time.Duration) int64 {
	now := monoNow()
	if int64(timeout) > noDeadline-now {
		return noDeadline
	}
	return now + int64(timeout)
}

// claimAny claims a free guest slot (T1), else takes a parked one (then held in RESPONSE), until the
// deadline. While every slot is busy it backs off as the C++ library's claim does: 16 yields of the CPU, then
// sleeps doubling from 1 µs to 1 ms; every 64th round it asks whether the host is alive (a system call). The
// caller holds c.mu for reading.
func (c *Client) claimAny(deadline int64) (*slotView, uint32, error) {
	g := c.seg.geo
	if g.guestSlots == 0 {
		return nil, 0, newErr(ErrInvalidArgument, "segment %s has no guest slots", c.seg.name)
	}
	backoff := time.Microsecond
	for round := 0; ; round++ {
		// The client's own Close comes first: ErrShuttingDown is the host's.
		if c.isClosing() {
			return nil, 0, errClientClosed()
		}
		if c.seg.hostShuttingDown() {
			return nil, 0, newErr(ErrShuttingDown, "the host of %s is shutting down", c.seg.name)
		}
		for i := g.hostSlots; i < g.slotCount(); i++ {
			s := &c.seg.slots[i]
			if seq, ok := tryClaim(s.h); ok {
				return s, seq, nil
			}
		}
		for i := g.hostSlots; i < g.slotCount(); i++ {
			if seq, ok := c.unpark(i); ok {
				return &c.seg.slots[i], seq, nil
			}
		}
		now := monoNow()
		if now >= deadline {
			return nil, 0, newErr(ErrNoFreeSlot, "all %d guest slots stayed busy until the deadline", g.guestSlots)
		}
		if round%64 == 63 && !c.seg.hostAlive() {
			return nil, 0, newErr(ErrHostGone, "the host of %s died", c.seg.name)
		}
		// Every slot is busy: this is contention, not the busy path. Offer the CPU first (the holder may be
		// waiting for it), then sleep, bounded.
		if round < 16 {
			schedYield()
			continue
		}
		if left := time.Duration(deadline - now); backoff > left {
			time.Sleep(left)
		} else {
			time.Sleep(backoff)
		}
		if backoff < time.Millisecond {
			backoff *= 2
		}
	}
}

// call publishes the request already written in slot s (owned at *seq, CLAIMED or RESPONSE) and waits for
// its answer. On return *seq is the transaction's seq and owned says whether the caller still owns the slot
// (false: it is the host's until it finishes, or the segment is dead or broken). The caller holds c.mu for
// reading.
//
// A CHUNK answer (the first chunk of a large one) returns errChunked, a CHUNK_ACK errChunkAck, both with the
// slot owned in RESPONSE: only a transfer (transfer.go) takes them. A plain answer counts as a call whose
// latency runs from started (callClock at the call's start, §5.4); a transfer counts its call when it ends.
func (c *Client) call(s *slotView, seq *uint32, size int32, t MsgType, deadline, started int64) (a answer, owned bool, err error) {
	if _, _, ok := placement(size, s.capacity); !ok {
		return a, true, newErr(ErrTooLarge, "request size %d does not fit the slot's %d-byte buffer", size, s.capacity)
	}
	if !IsRequestType(t) {
		return a, true, newErr(ErrInvalidArgument, "message type %v is reserved by the protocol", t)
	}
	return c.transact(s, seq, size, t, deadline, started)
}

// callClock is the clock reading a call's latency counts from: 0 without a histogram (no clock is read).
func (c *Client) callClock() int64 {
	if c.latency != nil {
		return monoNow()
	}
	return 0
}

// countCall counts a call on slot s that ended with an accepted answer of n bytes, begun at started
// (callClock): once per call, however many transactions it took.
func (c *Client) countCall(s *slotView, n uint64, started int64) {
	cnt := &c.seg.blocks[s.index]
	count(cnt, cntCalls, 1)
	count(cnt, cntCallBytesIn, n)
	if c.latency != nil {
		c.latency.add(uint64(monoNow() - started))
	}
}

// transact is call without the checks of the size and type, which the caller made: a transfer's chunks
// and CHUNK_NEXT requests have types of their own.
func (c *Client) transact(s *slotView, seq *uint32, size int32, t MsgType, deadline, started int64) (a answer, owned bool, err error) {
	if c.isClosing() {
		return a, true, errClientClosed()
	}
	if c.seg.hostShuttingDown() {
		return a, true, newErr(ErrShuttingDown, "the host of %s is shutting down", c.seg.name)
	}
	cnt := &c.seg.blocks[s.index]
	atomic.StoreUint32(&s.h.reqType, uint32(t))
	atomic.StoreUint32(&s.h.reqSize, uint32(size))
	if t != MsgTypeChunkNext { // message bytes only
		_, reqLen, _ := placement(size, s.capacity)
		count(cnt, cntCallBytesOut, uint64(reqLen))
	}
	tx, wokeHost, ok := publish(s.h, *seq)
	if !ok {
		countShared(cnt, cntProtocol, 1)
		return a, false, newErr(ErrProtocol, "guest slot %d was taken from its caller", s.index)
	}
	*seq = tx
	c.seg.ringDoorbell()

	var cause error
	inFlight := func(w uint32) bool {
		return ctlSeq(w) == tx && (ctlState(w) == stateRequest || ctlState(w) == stateServing)
	}
	abort := func(slow bool) bool {
		if c.isClosing() {
			cause = newErr(ErrClosed, "the client was closed during the call")
			return true
		}
		if !slow {
			return false
		}
		// Host servers answer ShuttingDown themselves; a request nobody took ends here. Before the liveness
		// test: a host that shuts down closes the guest connection right after setting SHUTTING_DOWN.
		if c.seg.hostShuttingDown() && ctlState(atomic.LoadUint32(&s.h.ctl)) == stateRequest {
			cause = newErr(ErrShuttingDown, "the host of %s is shutting down", c.seg.name)
			return true
		}
		if !c.seg.hostAlive() {
			cause = newErr(ErrHostGone, "the host of %s died during the call", c.seg.name)
			return true
		}
		return false
	}
	// Having woken a server asleep on the slot, offer this CPU from the start: it may be queued on it.
	start := startSpin
	if wokeHost {
		start = startYield
	}
	var waitedFrom int64
	w, st := waitFor(&s.h.ctl, &s.h.wakeStampNs, deadline, c.spin, func(w uint32) bool { return !inFlight(w) },
		abort, ctlWaiting, start, nil, &waitedFrom)
	if waitedFrom != 0 {
		// A round trip longer than a spin budget can last: this side or the host lost its CPU meanwhile (or the
		// handler is slow, where sleeping is right too). Evidence of crowding (§7.3) the waits may miss: a
		// waiter preempted mid-spin finds its answer when it runs again, without another look at the clock.
		if now := monoNow(); now-waitedFrom > preemptedNs {
			c.spin.noteCrowded(now)
		}
	}
	if st != waitReady {
		if st == waitTimeout {
			cause = newErr(ErrTimeout, "guest call on slot %d did not finish in time", s.index)
		}
		if errorIs(cause, ErrHostGone) {
			countShared(cnt, cntPeerDead, 1)
			return a, false, cause // the segment is dead: nothing to give back
		}
		outcome := cancel(s.h, tx)
		if outcome != cancelAnswered {
			if errorIs(cause, ErrTimeout) {
				countShared(cnt, cntTimeouts, 1)
			} else {
				countShared(cnt, cntEnded, 1)
			}
		}
		switch outcome {
		case cancelWithdrawn:
			return a, true, cause
		case cancelAbandoned, cancelLost:
			return a, false, cause
		case cancelAnswered:
			w = atomic.LoadUint32(&s.h.ctl)
		}
	}
	if ctlState(w) != stateResponse || ctlSeq(w) != tx {
		countShared(cnt, cntProtocol, 1)
		return a, false, newErr(ErrProtocol, "guest slot %d left its transaction (word %#x, expected seq %d)",
			s.index, w, tx)
	}
	a, err = readAnswer(s)
	switch e := err.(type) {
	case nil:
		c.countCall(s, uint64(len(a.data)), started)
	case *RemoteError:
		countRemote(cnt, e.Code)
	default:
		if err != errChunked && err != errChunkAck { // a transfer's, counted there
			countShared(cnt, cntProtocol, 1)
		}
	}
	return a, true, err
}

// readAnswer reads the response fields once and validates them (§8.3 step 4). The caller observed RESPONSE
// with its seq, so the host has finished writing them.
func readAnswer(s *slotView) (answer, error) {
	var a answer
	a.typ = MsgType(atomic.LoadUint32(&s.h.respType))
	a.wireSize = int32(atomic.LoadUint32(&s.h.respSize))
	if a.typ == MsgTypeSystemError {
		return a, &RemoteError{Code: WireError(atomic.LoadUint32(&s.h.respError)), Slot: int(s.index)}
	}
	data, ok := messageBytes(s.h, s.resp, s.capacity, a.wireSize)
	if !ok {
		return a, newErr(ErrProtocol, "the host answered size %d on guest slot %d, outside the %d-byte buffer",
			a.wireSize, s.index, s.capacity)
	}
	if a.typ != MsgTypeHeartbeatResp && !IsResponseType(a.typ) {
		// Off the path of a plain answer: a transfer's types (§8.5), checked by whoever takes them.
		switch a.typ {
		case MsgTypeChunk:
			return a, errChunked
		case MsgTypeChunkAck:
			return a, errChunkAck
		}
		return a, newErr(ErrProtocol, "the host answered reserved type %v on guest slot %d", a.typ, s.index)
	}
	a.data = data
	return a, nil
}

func errorIs(err, kind error) bool {
	e, ok := err.(*shmError)
	return ok && e.kind == kind
}

// SendGuestCall calls the host with a copy of data and type t on any free guest slot, waiting up to the
// configured DefaultTimeout, and returns a copy of the answer and its type. Both may be of any size: a
// request larger than a guest slot is sent as a transfer of slot-sized chunks on one slot, and so comes an
// answer larger than a slot, up to ClientConfig.MaxMessageSize (SPECIFICATION.md §8.5); a message that fits
// a slot takes one transaction, as it always has. data is only read, and not after the call returns. An
// answered call keeps its slot
// parked for the next copying guest call, which then publishes at once without claiming one (see
// ReleaseParkedSlots). See SendGuestCallWithTimeout for the errors. Safe for concurrent use (each call uses
// its own slot).
func (c *Client) SendGuestCall(data []byte, t MsgType) ([]byte, MsgType, error) {
	return c.SendGuestCallWithTimeout(data, t, -1)
}

// SendGuestCallWithTimeout is SendGuestCall with its own deadline (timeout < 0: the default), slot
// acquisition and every chunk of a transfer included. A MsgTypeSystemError answer is returned as a
// *RemoteError, never as data (a request above the host's limit: WireErrRequestTooLarge). Errors:
// ErrTimeout, ErrNoFreeSlot, ErrTooLarge (an answer above MaxMessageSize), ErrInvalidArgument (reserved
// type, a MsgTypeHeartbeatReq larger than a slot, no guest slots), *RemoteError (ErrRemote), ErrHostGone,
// ErrShuttingDown, ErrProtocol (also a transfer that breaks §8.5), ErrClosed. The arguments are checked at
// once, in this order, before any wait for a free slot: the client is open (ErrClosed), it has guest slots
// (ErrInvalidArgument), t is a request type (ErrInvalidArgument). A call that fails releases its slot, or
// leaves it to the host while the host serves it, mid-transfer as for a plain call. Safe for concurrent use.
func (c *Client) SendGuestCallWithTimeout(data []byte, t MsgType, timeout time.Duration) ([]byte, MsgType, error) {
	return c.sendCopy(data, t, timeout, nil)
}

// SendGuestCallBuffer is SendGuestCall that returns the answer in buf[:n] instead of a new slice, so a
// caller that reuses buf does not allocate. Errors: those of SendGuestCallWithTimeout, and ErrBufferTooSmall
// when the answer is longer than len(buf) (the answer is then dropped; a large one is refused when its first
// chunk arrives). buf[:n] may have been partly written by a call that fails. Safe for concurrent use.
func (c *Client) SendGuestCallBuffer(data []byte, buf []byte, t MsgType, timeout time.Duration) ([]byte, MsgType, error) {
	if buf == nil {
		buf = []byte{}
	}
	return c.sendCopy(data, t, timeout, buf)
}

func (c *Client) sendCopy(data []byte, t MsgType, timeout time.Duration, buf []byte) ([]byte, MsgType, error) {
	if !c.connected() {
		return nil, 0, errNotConnected()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.isClosing() {
		return nil, 0, errClientClosed()
	}
	// Every guest slot has the same capacity: a request that cannot fit fails now, not after waiting for a
	// free slot.
	g := c.seg.geo
	if g.guestSlots == 0 {
		return nil, 0, newErr(ErrInvalidArgument, "segment %s has no guest slots", c.seg.name)
	}
	if !IsRequestType(t) {
		return nil, 0, newErr(ErrInvalidArgument, "message type %v is reserved by the protocol", t)
	}
	if uint64(len(data)) > uint64(g.guestPayload) {
		return c.sendCopyLarge(data, t, timeout, buf)
	}
	deadline := c.deadline(timeout)
	s, seq, err := c.claimCopy(deadline)
	if err != nil {
		return nil, 0, err
	}
	// Straight into the request's area: the header for a small one, else the buffer (§8.1).
	dst, _ := messageBytes(s.h, s.req, s.capacity, int32(len(data)))
	copy(dst, data)
	started := c.callClock()
	a, owned, err := c.call(s, &seq, int32(len(data)), t, deadline, started)
	if err == errChunked || err == errChunkAck {
		// A large answer: the transfer takes it over, slot and all.
		return c.finishLarge(s, seq, a, err, deadline, started, copySink(buf))
	}
	answered := err == nil
	var out []byte
	if answered {
		src := a.data
		if buf != nil {
			if len(src) > len(buf) {
				err = newErr(ErrBufferTooSmall, "the answer has %d bytes; the buffer holds %d", len(src), len(buf))
			} else {
				out = buf[:copy(buf, src)]
			}
		} else {
			out = append([]byte{}, src...)
		}
	}
	// An answered call keeps its slot, held in RESPONSE, for the next call; a failed one frees it if it is
	// still this caller's.
	if owned && answered {
		c.park(s.index, seq)
	} else if owned {
		release(s.h, seq)
	}
	if err != nil {
		return nil, 0, err
	}
	return out, a.typ, nil
}

// claimCopy finds a slot for a copying guest call: the slot parked last first (parked.go), else any free
// slot, else any parked one. The caller holds c.mu for reading.
func (c *Client) claimCopy(deadline int64) (*slotView, uint32, error) {
	if h := atomic.LoadUint32(&c.parkHint); h != 0 {
		if sq, ok := c.unpark(h - 1); ok {
			return &c.seg.slots[h-1], sq, nil
		}
	}
	return c.claimAny(deadline)
}

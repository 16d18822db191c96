// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import "time"

// GuestSlot is a guest slot held for zero-copy calls to the host: write the request into RequestBuffer, Send
// (or SendFlatBuffer), read Response in place; repeat as often as wanted; Release gives the slot back.
//
// Ownership and lifetime: the slices RequestBuffer and Response return point into shared memory; they are
// valid while the slot is held and its Client is open, and Response only until the next Send. After Close
// every method fails with ErrClosed or returns nil; so does a nil or zero GuestSlot (Index is then -1).
// Concurrency: a GuestSlot is not safe for concurrent use; use it from one goroutine at a time (different
// GuestSlots may be used concurrently).
type GuestSlot struct {
	c        *Client
	s        *slotView
	seq      uint32
	held     bool
	answered bool
	ans      answer
}

// AcquireGuestSlot claims a free guest slot, else takes one that a copying guest call parked (see
// ReleaseParkedSlots), waiting up to timeout (< 0: the default timeout) while all are busy. Errors: ErrNoFreeSlot, ErrShuttingDown, ErrHostGone, ErrInvalidArgument (no guest slots), ErrClosed.
// Safe for concurrent use.
func (c *Client) AcquireGuestSlot(timeout time.Duration) (*GuestSlot, error) {
	if !c.connected() {
		return nil, errNotConnected()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.isClosing() {
		return nil, errClientClosed()
	}
	s, seq, err := c.claimAny(c.deadline(timeout))
	if err != nil {
		return nil, err
	}
	return &GuestSlot{c: c, s: s, seq: seq, held: true}, nil
}

// usable reports whether g came from AcquireGuestSlot (a nil or zero GuestSlot did not).
func (g *GuestSlot) usable() bool { return g != nil && g.c != nil && g.s != nil }

func errNoGuestSlot() error {
	return newErr(ErrClosed, "the GuestSlot was not acquired (a nil or zero GuestSlot; use AcquireGuestSlot)")
}

// Index returns the slot's index in the segment (guest slots follow the host slots). Valid after Release; -1
// for a nil or zero GuestSlot.
func (g *GuestSlot) Index() int {
	if !g.usable() {
		return -1
	}
	return int(g.s.index)
}

// Capacity returns the size in bytes of the request buffer (and of the response buffer). Valid after Release;
// 0 for a nil or zero GuestSlot.
func (g *GuestSlot) Capacity() int {
	if !g.usable() {
		return 0
	}
	return int(g.s.capacity)
}

// RequestBuffer returns the whole request buffer, to write the request into; nil if the slot is not held.
func (g *GuestSlot) RequestBuffer() []byte {
	if !g.usable() {
		return nil
	}
	g.c.mu.RLock()
	defer g.c.mu.RUnlock()
	if !g.held || g.c.closed {
		return nil
	}
	return g.s.req
}

// Send sends the request already written in RequestBuffer: size bytes at its start or, if size is negative,
// its last -size bytes (end-aligned). It waits up to the default timeout; see SendWithTimeout.
func (g *GuestSlot) Send(size int32, t MsgType) error { return g.SendWithTimeout(size, t, -1) }

// SendFlatBuffer sends a FlatBuffer of size bytes finished at the end of RequestBuffer (as a FlatBuffers
// builder leaves it), with type MsgTypeFlatbuffer: Send(-size, MsgTypeFlatbuffer). A size below 0 or above
// Capacity fails with ErrTooLarge before anything is sent, and the slot stays held. See SendWithTimeout for
// the other errors and the order of the checks.
func (g *GuestSlot) SendFlatBuffer(size int) error {
	return g.send(func() error {
		if size < 0 || size > int(g.s.capacity) {
			return newErr(ErrTooLarge, "FlatBuffer of %d bytes does not fit the slot's %d-byte buffer", size,
				g.s.capacity)
		}
		return g.sendLocked(-int32(size), MsgTypeFlatbuffer, -1)
	})
}

// SendWithTimeout is Send with its own deadline (timeout < 0: the default). On success the answer is readable
// through Response, ResponseSize and ResponseType. A MsgTypeSystemError answer is a *RemoteError. A timeout
// before the host took the request keeps the slot; a timeout while the host was serving it loses the slot
// (the next Send fails with ErrSlotLost). Errors: those of Client.SendGuestCallWithTimeout, and ErrSlotLost.
// Checked in this order before anything is sent: the client is open (ErrClosed), the slot is held
// (ErrSlotLost), the size is valid for Capacity (ErrTooLarge: |size| > Capacity, or math.MinInt32), the type
// is a request type (ErrInvalidArgument), the host is not shutting down (ErrShuttingDown). A refused request
// leaves the slot held. A GuestSlot sends and takes at most Capacity bytes: an answer larger than that (the
// host began a transfer, SPECIFICATION.md §8.5) fails with ErrTooLarge and the slot stays held.
func (g *GuestSlot) SendWithTimeout(size int32, t MsgType, timeout time.Duration) error {
	return g.send(func() error { return g.sendLocked(size, t, timeout) })
}

// send runs the checks every Send starts with (a usable slot, then sendable), then do, with g.c.mu held for
// reading throughout.
func (g *GuestSlot) send(do func() error) error {
	if !g.usable() {
		return errNoGuestSlot()
	}
	g.c.mu.RLock()
	defer g.c.mu.RUnlock()
	if err := g.sendable(); err != nil {
		return err
	}
	return do()
}

// sendable is the first two checks of a Send. The caller holds g.c.mu for reading.
func (g *GuestSlot) sendable() error {
	if g.c.closed || g.c.isClosing() {
		return errClientClosed()
	}
	if !g.held {
		return newErr(ErrSlotLost, "this GuestSlot no longer holds a slot")
	}
	return nil
}

// sendLocked makes the call. The caller holds g.c.mu for reading and checked sendable.
func (g *GuestSlot) sendLocked(size int32, t MsgType, timeout time.Duration) error {
	g.answered = false
	stageInline(g.s, size) // a small request travels in the slot header (§8.1)
	a, owned, err := g.c.call(g.s, &g.seq, size, t, g.c.deadline(timeout), g.c.callClock())
	g.held = owned
	switch err {
	case errChunked:
		// A large answer cannot be read in place; the slot stays held, and its next request ends the
		// host's transfer.
		return newErr(ErrTooLarge, "the host answered a large message on guest slot %d; a GuestSlot takes "+
			"answers of at most %d bytes (use SendGuestCall)", g.s.index, g.s.capacity)
	case errChunkAck:
		return g.c.protocolErr(g.s, "the host acknowledged a chunk nobody sent on guest slot %d", g.s.index)
	}
	if err != nil {
		return err
	}
	g.ans = a
	g.answered = true
	return nil
}

// Response returns the last answer's bytes in place in shared memory: in the response buffer, or in the slot's
// header for an answer of at most 32 bytes (SPECIFICATION.md §8.1). Valid until the next Send or Release; nil
// before a successful Send.
func (g *GuestSlot) Response() []byte {
	if !g.usable() {
		return nil
	}
	g.c.mu.RLock()
	defer g.c.mu.RUnlock()
	if !g.answered || !g.held || g.c.closed {
		return nil
	}
	return g.ans.data
}

// ResponseSize returns the last answer's wire size (negative: it was end-aligned); 0 before a successful Send.
func (g *GuestSlot) ResponseSize() int32 {
	if g == nil || !g.answered {
		return 0
	}
	return g.ans.wireSize
}

// ResponseType returns the last answer's type; MsgTypeNormal before a successful Send.
func (g *GuestSlot) ResponseType() MsgType {
	if g == nil || !g.answered {
		return MsgTypeNormal
	}
	return g.ans.typ
}

// Release gives the slot back. Idempotent; harmless after Close and on a nil or zero GuestSlot.
func (g *GuestSlot) Release() {
	if !g.usable() {
		return
	}
	g.c.mu.RLock()
	defer g.c.mu.RUnlock()
	if g.held && !g.c.closed {
		release(g.s.h, g.seq)
	}
	g.held = false
	g.answered = false
}

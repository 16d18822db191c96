// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import "sync/atomic"

// Parked slots, as in the C++ library (docs/design/parked-slots.md). A copying guest call (SendGuestCall and
// its variants) leaves its slot held in RESPONSE, which the protocol allows a caller (SPECIFICATION.md §6,
// last line), and parks it instead of freeing it, so the next copying call publishes at once: two
// compare-and-swaps on the slot's control line fewer (release, claim), each of which the host's polling would
// otherwise pull back across cores. Nothing of it is on the wire, and the host never looks at a slot in
// RESPONSE.
//
// C++ parks a slot for the calling thread's next call. A goroutine has no identity to remember it by, so the
// Client remembers the slot parked last (parkHint) and its next copying call tries that one first: one
// goroutine calling in a loop reuses its slot on every call, as a C++ thread does. Any claim takes a parked
// slot when no slot is free (claimAny), so parking never makes a call wait; Close frees every parked slot.

// parkedBit marks a parked word: parked[i] is 0, or parkedBit | the seq at which slot i is held in RESPONSE.
const parkedBit uint32 = 1 << 31

// unpark takes parked slot i. On success the caller owns it in RESPONSE at seq. The caller holds c.mu for
// reading.
func (c *Client) unpark(i uint32) (seq uint32, ok bool) {
	// Look before writing: claimAny scans every slot's parked word, and a swap would write each one's line.
	if atomic.LoadUint32(&c.parked[i]) == 0 {
		return 0, false
	}
	p := atomic.SwapUint32(&c.parked[i], 0)
	if p == 0 {
		return 0, false
	}
	seq = p & ctlSeqMask
	// Only a broken host can move a caller-held slot; then it is neither ours to use nor to free: it stays
	// out of use, as every slot does that the host took from this client.
	if cur := atomic.LoadUint32(&c.seg.slots[i].h.ctl); ctlState(cur) != stateResponse || ctlSeq(cur) != seq {
		return 0, false
	}
	return seq, true
}

// park parks slot i, owned in RESPONSE at seq, or frees it if the client is closing. The caller holds c.mu
// for reading.
func (c *Client) park(i, seq uint32) {
	atomic.StoreUint32(&c.parked[i], parkedBit|seq&ctlSeqMask)
	atomic.StoreUint32(&c.parkHint, i+1)
	// sync/atomic is sequentially consistent: either Close's releaseAllParked sees this parked word, or this
	// load sees Close's closing flag (the store-buffer pattern of docs/design/memory-ordering.md §5).
	if c.isClosing() {
		c.releaseParked(i)
	}
}

// releaseParked frees slot i (T8) if it is parked. The mapping must be valid.
func (c *Client) releaseParked(i uint32) {
	if seq, ok := c.unpark(i); ok {
		release(c.seg.slots[i].h, seq)
	}
}

// releaseAllParked frees every parked guest slot. The mapping must be valid.
func (c *Client) releaseAllParked() {
	for i := c.seg.geo.hostSlots; i < c.seg.geo.slotCount(); i++ {
		c.releaseParked(i)
	}
}

// ReleaseParkedSlots frees the guest slots that copying guest calls keep parked for the next call. It is
// never needed for correctness (any guest call or AcquireGuestSlot of this Client takes a parked slot when
// no slot is free, and Close frees them); it is for tools and tests that count free slots from outside, where a
// parked slot looks held (RESPONSE). Harmless after Close and on a nil or zero Client. Safe for concurrent use.
func (c *Client) ReleaseParkedSlots() {
	if !c.connected() {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.closed {
		c.releaseAllParked()
	}
}

// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// Parked slots (parked.go), checked through the segment's control words as the host sees them.

// guestWords returns the state and seq of every guest slot.
func guestWords(h *fakeHost) (states, seqs []uint32) {
	for i := h.geo.hostSlots; i < h.geo.slotCount(); i++ {
		w := atomic.LoadUint32(&h.slots[i].h.ctl)
		states = append(states, ctlState(w))
		seqs = append(seqs, ctlSeq(w))
	}
	return states, seqs
}

// onlyParked returns the index of the one guest slot in RESPONSE, failing the test unless every other one is
// FREE.
func onlyParked(t *testing.T, h *fakeHost) (index, seq uint32) {
	t.Helper()
	states, seqs := guestWords(h)
	found := -1
	for i, st := range states {
		switch {
		case st == stateResponse && found < 0:
			found = i
		case st != stateFree:
			t.Fatalf("guest slot states %v: want one RESPONSE, the others FREE", states)
		}
	}
	if found < 0 {
		t.Fatalf("guest slot states %v: none parked", states)
	}
	return h.geo.hostSlots + uint32(found), seqs[found]
}

func TestParkedSlotIsReusedByTheNextCall(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 3, hostPayload: 64, guestPayload: 64})
	h.serveGuestCalls(nil)
	c := connect(t, h)
	if _, _, err := c.SendGuestCall([]byte("first"), MsgTypeGuestCall); err != nil {
		t.Fatal(err)
	}
	index, seq := onlyParked(t, h)
	buf := make([]byte, 64)
	for i := 0; i < 10; i++ {
		req := []byte{byte(i), 1, 2}
		var got []byte
		var err error
		if i%2 == 0 {
			got, _, err = c.SendGuestCall(req, MsgTypeGuestCall)
		} else {
			got, _, err = c.SendGuestCallBuffer(req, buf, MsgTypeGuestCall, -1)
		}
		if err != nil || !bytes.Equal(got, complement(req)) {
			t.Fatalf("call %d: %q %v", i, got, err)
		}
		// Published straight from RESPONSE (T2): no claim, no release, the next seq on the same slot.
		if again, s := onlyParked(t, h); again != index || s != nextSeq(seq) {
			t.Fatalf("call %d: slot %d seq %d parked, want slot %d seq %d", i, again, s, index, nextSeq(seq))
		}
		seq = nextSeq(seq)
	}
	if _, _, err := c.SendGuestCallBuffer([]byte("abc"), make([]byte, 2), MsgTypeNormal, -1); !errors.Is(err, ErrBufferTooSmall) {
		t.Fatalf("small buffer: %v", err)
	}
	// (ErrBufferTooSmall is the caller's: the call itself was answered, and the slot stays parked.)
	if again, _ := onlyParked(t, h); again != index {
		t.Fatalf("slot %d parked after ErrBufferTooSmall, want %d", again, index)
	}
	// A call that fails frees its slot instead of parking it.
	h.stopServing()
	if _, _, err := c.SendGuestCallWithTimeout([]byte("x"), MsgTypeNormal, time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("unserved call: %v", err)
	}
	if states, _ := guestWords(h); states[index-h.geo.hostSlots] != stateFree {
		t.Fatalf("guest slot states %v after a withdrawn call: want slot %d FREE", states, index)
	}
}

func TestAnotherGoroutineTakesAParkedSlotWhenNoneIsFree(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 2, hostPayload: 64, guestPayload: 64})
	h.serveGuestCalls(nil)
	c := connect(t, h)
	inGoroutine := func(f func() error) error {
		done := make(chan error, 1)
		go func() { done <- f() }()
		return waitErr(t, done, "the goroutine")
	}
	if err := inGoroutine(func() error { _, _, err := c.SendGuestCall([]byte("a"), MsgTypeNormal); return err }); err != nil {
		t.Fatal(err)
	}
	parked, seq := onlyParked(t, h)
	// A claim takes a free slot before a parked one.
	held, err := c.AcquireGuestSlot(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if uint32(held.Index()) == parked {
		t.Fatalf("AcquireGuestSlot took parked slot %d while another was free", parked)
	}
	// No slot is free now: another goroutine's claim takes the parked one, as it is (RESPONSE, same seq).
	var taken *GuestSlot
	if err := inGoroutine(func() (err error) { taken, err = c.AcquireGuestSlot(time.Second); return err }); err != nil {
		t.Fatalf("AcquireGuestSlot with only a parked slot: %v", err)
	}
	if uint32(taken.Index()) != parked {
		t.Fatalf("took slot %d, want the parked slot %d", taken.Index(), parked)
	}
	if w := atomic.LoadUint32(&h.slots[parked].h.ctl); w != makeCtl(stateResponse, seq) {
		t.Fatalf("the parked slot's word moved when taken: %#x", w)
	}
	// Taken means taken: a copying call that would reuse it finds no slot.
	if _, _, err := c.SendGuestCallWithTimeout([]byte("b"), MsgTypeNormal, 20*time.Millisecond); !errors.Is(err, ErrNoFreeSlot) {
		t.Fatalf("call with every slot held: %v", err)
	}
	copy(taken.RequestBuffer(), "zc")
	if err := taken.Send(2, MsgTypeNormal); err != nil || !bytes.Equal(taken.Response(), complement([]byte("zc"))) {
		t.Fatalf("send on the taken slot: %v", err)
	}
	taken.Release()
	if w := atomic.LoadUint32(&h.slots[parked].h.ctl); w != makeCtl(stateFree, nextSeq(seq)) {
		t.Fatalf("released slot: %#x", w)
	}
	// A copying call in another goroutine parks it again, and a third goroutine's call reuses it while the
	// other slot stays held.
	for i := 0; i < 2; i++ {
		if err := inGoroutine(func() error { _, _, err := c.SendGuestCall([]byte("c"), MsgTypeNormal); return err }); err != nil {
			t.Fatal(err)
		}
		if w := atomic.LoadUint32(&h.slots[parked].h.ctl); w != makeCtl(stateResponse, nextSeq(nextSeq(seq))+uint32(i)) {
			t.Fatalf("goroutine %d: parked slot word %#x", i, w)
		}
	}
}

func TestCloseFreesParkedSlots(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 2, hostPayload: 64, guestPayload: 64})
	// Type 400 is answered only once the other guest slot is held too: two calls in flight at once, so both
	// slots end up parked.
	h.serveGuestCalls(func(s *slotView, req []byte, typ MsgType) bool {
		other := &h.slots[h.geo.hostSlots+(s.index-h.geo.hostSlots+1)%2]
		for end := time.Now().Add(10 * time.Second); typ == 400 && time.Now().Before(end); {
			if ctlState(atomic.LoadUint32(&other.h.ctl)) != stateFree {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		return false
	})
	c := connect(t, h)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() { _, _, err := c.SendGuestCall([]byte("p"), 400); errs <- err }()
	}
	for i := 0; i < 2; i++ {
		if err := waitErr(t, errs, "a guest call"); err != nil {
			t.Fatal(err)
		}
	}
	if states, _ := guestWords(h); states[0] != stateResponse || states[1] != stateResponse {
		t.Fatalf("guest slot states %v: want both parked (RESPONSE)", states)
	}
	// A call that parks while Close runs frees its slot itself: park sees closing (white box: closing is set
	// here without the rest of Close, and cleared again so that Close below runs in full).
	c.mu.RLock()
	seq, ok := c.unpark(h.geo.hostSlots)
	if !ok {
		c.mu.RUnlock()
		t.Fatal("slot not parked")
	}
	atomic.StoreUint32(&c.closing, 1)
	c.park(h.geo.hostSlots, seq)
	atomic.StoreUint32(&c.closing, 0)
	c.mu.RUnlock()
	if states, _ := guestWords(h); states[0] != stateFree || states[1] != stateResponse {
		t.Fatalf("guest slot states %v after parking while closing: want FREE, RESPONSE", states)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if states, _ := guestWords(h); states[0] != stateFree || states[1] != stateFree {
		t.Fatalf("guest slot states %v after Close: want every slot FREE", states)
	}
	c.ReleaseParkedSlots() // harmless after Close
}

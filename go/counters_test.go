// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"encoding/binary"
	"testing"
	"time"
)

// guestCounter reads counter i of the guest's block of slot, as the host (or shm-inspect) sees it in the memfd.
func (h *fakeHost) guestCounter(slot uint32, i int) uint64 {
	return binary.LittleEndian.Uint64(h.mem[h.geo.guestBlockOffset(slot)+uint64(8*i):])
}

func TestStatsCountServedCallsAndGuestCallsInTheSegment(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 2, guestSlots: 1, hostPayload: 128, guestPayload: 128})
	c := connect(t, h)
	if st := c.Stats(); !st.Shared || st.Served.Served != 0 || len(st.ServeSlots) != 2 || len(st.CallSlots) != 1 {
		t.Fatalf("a new guest's stats: %+v", st)
	}
	if err := c.Start(testHandler); err != nil {
		t.Fatal(err)
	}
	req := []byte("hello")
	for i := 0; i < 4; i++ {
		if _, _, _, err := h.call(uint32(i%2), req, int32(len(req)), MsgTypeNormal, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, we, err := h.call(0, req, 1, 200, 30*time.Second); err != nil || we != WireErrHandlerFailed {
		t.Fatalf("panicking handler: %v %v", we, err)
	}
	if _, _, _, err := h.call(1, nil, 0, MsgTypeHeartbeatReq, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	h.serveGuestCalls(nil)
	if _, _, err := c.SendGuestCall([]byte("abc"), MsgTypeGuestCall); err != nil {
		t.Fatal(err)
	}

	st := c.Stats()
	if st.Served.Served != 6 || st.Served.Heartbeats != 1 || st.Served.AnsweredErrors[WireErrHandlerFailed] != 1 {
		t.Errorf("served: %+v", st.Served)
	}
	if st.Served.BytesIn != 4*5+1 || st.Served.BytesOut != 4*5 {
		t.Errorf("served bytes: in %d, out %d", st.Served.BytesIn, st.Served.BytesOut)
	}
	if st.ServeSlots[0].Served+st.ServeSlots[1].Served != st.Served.Served {
		t.Errorf("per-slot sums: %+v", st.ServeSlots)
	}
	if st.Calls.Calls != 1 || st.Calls.BytesOut != 3 || st.Calls.BytesIn != 3 || st.CallSlots[0].Calls != 1 {
		t.Errorf("guest calls: %+v", st.Calls)
	}
	// The same numbers are in the guest's blocks of the segment, where the host and shm-inspect read them.
	if got := h.guestCounter(0, cntServed) + h.guestCounter(1, cntServed); got != 6 {
		t.Errorf("served in the segment: %d", got)
	}
	if got := h.guestCounter(2, cntCalls); got != 1 {
		t.Errorf("guest calls in the segment: %d", got)
	}
	if got := binary.LittleEndian.Uint64(h.mem[h.geo.hostBlockOffset(0):]); got != 0 {
		t.Errorf("the guest wrote the host's block: %d", got)
	}
}

func TestStatsOfAGuestCallThatTimesOut(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 1, hostPayload: 64, guestPayload: 64})
	c := connect(t, h)
	// Nobody serves guest calls: the call times out (withdrawn before any server took it).
	if _, _, err := c.SendGuestCallWithTimeout([]byte("x"), MsgTypeGuestCall, 20*time.Millisecond); err == nil {
		t.Fatal("a guest call nobody serves succeeded")
	}
	st := c.Stats()
	if st.Calls.Timeouts != 1 || st.Calls.Calls != 0 || st.Calls.BytesOut != 1 {
		t.Errorf("after a timeout: %+v", st.Calls)
	}
}

func TestStatsOfAClosedOrZeroClientAreZero(t *testing.T) {
	var c *Client
	if st := c.Stats(); st.Shared || st.Calls.Calls != 0 {
		t.Errorf("nil client: %+v", st)
	}
	h := newFakeHost(t, smallGeometry)
	cl := connect(t, h)
	_ = cl.Close()
	if st := cl.Stats(); st.Shared || len(st.ServeSlots) != 0 {
		t.Errorf("closed client: %+v", st)
	}
}

func TestLatencyHistogramOfGuestCalls(t *testing.T) {
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 123456789, 1 << 40, ^uint64(0)} {
		i := latencyIndex(v)
		if ub := latencyUpperBound(i); ub < v || (i > 0 && latencyUpperBound(i-1) >= v) {
			t.Errorf("value %d in bucket %d with upper bound %d", v, i, ub)
		}
	}
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 1, hostPayload: 64, guestPayload: 64})
	c, err := Connect(ClientConfig{ShmName: h.name, LatencyHistogram: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h.serveGuestCalls(nil)
	for i := 0; i < 20; i++ {
		if _, _, err := c.SendGuestCall([]byte("x"), MsgTypeGuestCall); err != nil {
			t.Fatal(err)
		}
	}
	l := c.Stats().Latency
	if !l.Enabled || l.Count != 20 || l.P50Ns == 0 || l.P50Ns > l.P99Ns || l.P99Ns > l.MaxNs || l.MinNs > l.P50Ns {
		t.Errorf("latency: %+v", l)
	}
	c2 := connect(t, newFakeHost(t, smallGeometry))
	if l := c2.Stats().Latency; l.Enabled || l.Count != 0 {
		t.Errorf("off by default: %+v", l)
	}
}

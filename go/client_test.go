// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func connect(t *testing.T, h *fakeHost) *Client {
	t.Helper()
	c, err := Connect(ClientConfig{ShmName: h.name, DefaultTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitDone fails the test if ch is not closed or sent to within a generous deadline.
func waitErr(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

func complement(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = ^c
	}
	return out
}

// testHandler: echo complemented (end-aligned for FLATBUFFER), or what the type asks for.
func testHandler(req, resp []byte, t MsgType) (int32, MsgType) {
	switch t {
	case 200:
		panic("asked to panic")
	case 201:
		return int32(len(resp) + 1), MsgTypeNormal
	case 202:
		return -int32(len(resp)) - 1, MsgTypeNormal
	case 203:
		return -1 << 31, MsgTypeNormal
	case 204:
		return 0, MsgTypeSystemError
	case 205:
		return 0, MsgType(5)
	case 206:
		return 0, MsgTypeHeartbeatReq
	case MsgTypeHeartbeatReq:
		panic("the handler saw a heartbeat")
	case MsgTypeFlatbuffer:
		copy(resp[len(resp)-len(req):], complement(req))
		return -int32(len(req)), t
	}
	copy(resp, complement(req))
	return int32(len(req)), t
}

func TestServeAnswersAndRefuses(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	c := connect(t, h)
	if err := c.Start(testHandler); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(testHandler); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("second Start: %v", err)
	}
	capacity := int32(smallGeometry.hostPayload)
	req := []byte("hello, guest")
	cases := []struct {
		name    string
		size    int32
		typ     MsgType
		want    []byte
		rtype   MsgType
		wireErr WireError
	}{
		{"echo", int32(len(req)), MsgTypeNormal, complement(req), MsgTypeNormal, 0},
		{"end-aligned echo", int32(len(req)), MsgTypeFlatbuffer, complement(req), MsgTypeFlatbuffer, 0},
		{"app type", int32(len(req)), 0xFFFFFFFF, complement(req), 0xFFFFFFFF, 0},
		{"empty", 0, MsgTypeGuestCall, []byte{}, MsgTypeGuestCall, 0},
		{"heartbeat", 0, MsgTypeHeartbeatReq, []byte{}, MsgTypeHeartbeatResp, 0},
		{"panic", 1, 200, nil, MsgTypeSystemError, WireErrHandlerFailed},
		{"answer too large", 1, 201, nil, MsgTypeSystemError, WireErrResponseTooLarge},
		{"answer too large, end-aligned", 1, 202, nil, MsgTypeSystemError, WireErrResponseTooLarge},
		{"answer INT32_MIN", 1, 203, nil, MsgTypeSystemError, WireErrResponseTooLarge},
		{"answer SYSTEM_ERROR", 1, 204, nil, MsgTypeSystemError, WireErrHandlerFailed},
		{"answer reserved type", 1, 205, nil, MsgTypeSystemError, WireErrReservedType},
		{"answer HEARTBEAT_REQ", 1, 206, nil, MsgTypeSystemError, WireErrReservedType},
		{"request too large", capacity + 1, MsgTypeNormal, nil, MsgTypeSystemError, WireErrRequestTooLarge},
		{"request INT32_MIN", -1 << 31, MsgTypeNormal, nil, MsgTypeSystemError, WireErrRequestTooLarge},
		{"reserved request type", 0, 3, nil, MsgTypeSystemError, WireErrReservedType},
		{"SYSTEM_ERROR request", 0, MsgTypeSystemError, nil, MsgTypeSystemError, WireErrReservedType},
	}
	for round := 0; round < 3; round++ { // workers go on after every failure
		for _, k := range cases {
			slot := uint32(round) % smallGeometry.hostSlots
			data := req
			if k.typ == MsgTypeFlatbuffer { // the request end-aligned too
				data = append(make([]byte, capacity-int32(len(req))), req...)
			}
			size := k.size
			if k.typ == MsgTypeFlatbuffer {
				size = -size
			}
			got, rt, we, err := h.call(slot, data, size, k.typ, 30*time.Second)
			if err != nil || rt != k.rtype || we != k.wireErr || (k.want != nil && !bytes.Equal(got, k.want)) {
				t.Errorf("%s on slot %d: %q, %v, %v, %v", k.name, slot, got, rt, we, err)
			}
		}
	}
}

func TestGuestCallsConcurrentlyWithChecksums(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 1, guestSlots: 3, hostPayload: 64, guestPayload: 1024})
	h.serveGuestCalls(nil)
	c := connect(t, h)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < 300; i++ {
				req := make([]byte, rng.Intn(1025))
				rng.Read(req)
				if i%2 == 0 {
					got, rt, err := c.SendGuestCall(req, MsgTypeGuestCall)
					if err != nil || rt != MsgTypeGuestCall || !bytes.Equal(got, complement(req)) {
						errs <- fmt.Errorf("worker %d call %d: %v", w, i, err)
						return
					}
					continue
				}
				slot, err := c.AcquireGuestSlot(-1)
				if err != nil {
					errs <- err
					return
				}
				copy(slot.RequestBuffer(), req)
				err = slot.Send(int32(len(req)), MsgTypeAppStart)
				ok := err == nil && bytes.Equal(slot.Response(), complement(req)) && slot.ResponseType() == MsgTypeAppStart
				slot.Release()
				if !ok {
					errs <- fmt.Errorf("worker %d zero-copy call %d: %v", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestGuestCallErrors(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 64, guestPayload: 128}
	h := newFakeHost(t, g)
	h.serveGuestCalls(func(s *slotView, req []byte, typ MsgType) bool {
		switch typ {
		case 300:
			writeErrorResponse(s.h, WireErrHandlerFailed)
		case 301:
			writeErrorResponse(s.h, WireError(42))
		case 302:
			writeErrorResponse(s.h, WireErrShuttingDown)
		default:
			return false
		}
		return true
	})
	c := connect(t, h)
	_, _, err := c.SendGuestCall([]byte("x"), 300)
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != WireErrHandlerFailed || !errors.Is(err, ErrRemote) ||
		!errors.Is(err, &RemoteError{Code: WireErrHandlerFailed}) || errors.Is(err, ErrShuttingDown) {
		t.Errorf("HandlerFailed: %v", err)
	}
	if _, _, err = c.SendGuestCall([]byte("x"), 301); !errors.As(err, &re) || re.Code != 42 {
		t.Errorf("unknown code: %v", err)
	}
	if _, _, err = c.SendGuestCall([]byte("x"), 302); !errors.Is(err, ErrShuttingDown) || !errors.Is(err, ErrRemote) {
		t.Errorf("remote ShuttingDown: %v", err)
	}
	if _, _, err = c.SendGuestCall(nil, MsgTypeSystemError); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("reserved type: %v", err)
	}
	if _, _, err = c.SendGuestCallBuffer([]byte("abc"), make([]byte, 2), MsgTypeNormal, -1); !errors.Is(err, ErrBufferTooSmall) {
		t.Errorf("small buffer: %v", err)
	}
	if got, _, err := c.SendGuestCallBuffer([]byte("abc"), make([]byte, 3), MsgTypeNormal, -1); err != nil || !bytes.Equal(got, complement([]byte("abc"))) {
		t.Errorf("exact buffer: %v", err)
	}
	// The longest timeouts saturate instead of overflowing into the past.
	if got, _, err := c.SendGuestCallWithTimeout([]byte("abc"), MsgTypeNormal, math.MaxInt64); err != nil || !bytes.Equal(got, complement([]byte("abc"))) {
		t.Errorf("MaxInt64 timeout: %v", err)
	}
	// No failure above kept the only guest slot (each call found it); the answered calls parked it, held in
	// RESPONSE, and ReleaseParkedSlots frees it.
	if got := ctlState(atomic.LoadUint32(&h.slots[1].h.ctl)); got != stateResponse {
		t.Errorf("guest slot left in state %d, want RESPONSE (parked)", got)
	}
	c.ReleaseParkedSlots()
	if got := ctlState(atomic.LoadUint32(&h.slots[1].h.ctl)); got != stateFree {
		t.Errorf("guest slot left in state %d after ReleaseParkedSlots", got)
	}
}

func TestGuestCallTimeoutWithdrawsAndAbandons(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 64, guestPayload: 64}
	h := newFakeHost(t, g)
	c := connect(t, h)
	s := &h.slots[1]
	// Nobody serves: the request is withdrawn (T5) and the slot given back.
	if _, _, err := c.SendGuestCallWithTimeout([]byte("x"), MsgTypeNormal, time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v", err)
	}
	if st := ctlState(atomic.LoadUint32(&s.h.ctl)); st != stateFree {
		t.Fatalf("state %d after a withdrawn call", st)
	}
	// The host takes the request and never answers: the call abandons it (T6) and the slot is the host's.
	taken := make(chan uint32, 1)
	go func() {
		for {
			if seq, ok := tryTake(s.h); ok {
				taken <- seq
				return
			}
			time.Sleep(10 * time.Microsecond)
		}
	}()
	slot, err := c.AcquireGuestSlot(-1)
	if err != nil {
		t.Fatal(err)
	}
	copy(slot.RequestBuffer(), "y")
	// The call must time out after the host took it. A taker that does not run before the deadline (a loaded
	// machine) lets the call withdraw the request instead, which keeps the slot: then again, with twice the time.
	for timeout := 200 * time.Millisecond; ; timeout *= 2 {
		done := make(chan error, 1)
		go func() { done <- slot.SendWithTimeout(1, MsgTypeNormal, timeout) }()
		if err := waitErr(t, done, "Send"); !errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v", err)
		}
		if slot.RequestBuffer() == nil { // the slot is lost: the host had taken the request
			break
		}
		if timeout > 10*time.Second {
			t.Fatal("the host never took the request")
		}
	}
	seq := <-taken
	if w := atomic.LoadUint32(&s.h.ctl); ctlState(w) != stateAbandoned || ctlSeq(w) != seq {
		t.Fatalf("word %#x, want ABANDONED(%d)", w, seq)
	}
	if err := slot.Send(1, MsgTypeNormal); !errors.Is(err, ErrSlotLost) {
		t.Errorf("send on a lost slot: %v", err)
	}
	slot.Release()
	// The host's late answer is discarded (T7); the next call gets its own answer.
	atomic.StoreUint32(&s.h.respType, uint32(MsgTypeNormal))
	atomic.StoreUint32(&s.h.respSize, 1)
	if outcome(complete(s.h, seq)) != completeDiscarded {
		t.Fatal("late answer not discarded")
	}
	h.serveGuestCalls(nil)
	if got, _, err := c.SendGuestCall([]byte("z"), MsgTypeNormal); err != nil || !bytes.Equal(got, complement([]byte("z"))) {
		t.Errorf("next call: %q %v", got, err)
	}
}

// servingWithPendingCall connects a guest that serves, then makes a guest call nobody answers; it returns once
// that call's request is published (in either guest slot), with the channel the call's error arrives on.
func servingWithPendingCall(t *testing.T) (*fakeHost, *Client, chan error) {
	t.Helper()
	h := newFakeHost(t, smallGeometry)
	c := connect(t, h)
	if err := c.Start(testHandler); err != nil {
		t.Fatal(err)
	}
	call := make(chan error, 1)
	go func() {
		_, _, err := c.SendGuestCallWithTimeout([]byte("x"), MsgTypeNormal, time.Minute)
		call <- err
	}()
	for ctlState(atomic.LoadUint32(&h.slots[2].h.ctl)) != stateRequest &&
		ctlState(atomic.LoadUint32(&h.slots[3].h.ctl)) != stateRequest {
		time.Sleep(time.Millisecond)
	}
	return h, c, call
}

func TestShutdownEndsWorkersAndCalls(t *testing.T) {
	h, c, call := servingWithPendingCall(t)
	h.shutdown()
	if err := waitErr(t, call, "the guest call"); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("call: %v", err)
	}
	wait := make(chan error, 1)
	go func() { wait <- c.Wait() }()
	if err := waitErr(t, wait, "Wait"); err != nil {
		t.Errorf("Wait after shutdown: %v", err)
	}
	if _, err := c.AcquireGuestSlot(time.Second); !errors.Is(err, ErrShuttingDown) {
		t.Errorf("acquire after shutdown: %v", err)
	}
}

func TestHostDeathEndsWaitWithErrHostGone(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	c := connect(t, h)
	if err := c.Start(testHandler); err != nil {
		t.Fatal(err)
	}
	h.die()
	wait := make(chan error, 1)
	go func() { wait <- c.Wait() }()
	if err := waitErr(t, wait, "Wait"); !errors.Is(err, ErrHostGone) {
		t.Errorf("Wait: %v", err)
	}
	if _, _, err := c.SendGuestCall([]byte("x"), MsgTypeNormal); !errors.Is(err, ErrHostGone) {
		t.Errorf("call to a dead host: %v", err)
	}
	if c.HostAlive() {
		t.Error("HostAlive after death")
	}
}

func TestCloseEndsCallsAndWorkers(t *testing.T) {
	h := newFakeHost(t, geometry{hostSlots: 3, guestSlots: 3, hostPayload: 64, guestPayload: 64})
	c := connect(t, h)
	if err := c.Start(testHandler); err != nil {
		t.Fatal(err)
	}
	calls := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() {
			_, _, err := c.SendGuestCallWithTimeout([]byte("x"), MsgTypeNormal, time.Minute)
			calls <- err
		}()
	}
	// Idle workers and waiting callers sleep: each publishes the W bit before FUTEX_WAIT.
	for i := range h.slots {
		for atomic.LoadUint32(&h.slots[i].h.ctl)&ctlWaiting == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := waitErr(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := waitErr(t, calls, "a guest call"); !errors.Is(err, ErrClosed) {
			t.Errorf("call during Close: %v", err)
		}
	}
	if err := c.Wait(); err != nil {
		t.Errorf("Wait after Close: %v", err)
	}
	// The guest lock is free again: another guest can attach.
	c2 := connect(t, h)
	c2.Close()
}

// A handler that is still running when Close is called finishes; Close waits for it.
func TestCloseWaitsForARunningHandler(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	c := connect(t, h)
	entered := make(chan struct{})
	release := make(chan struct{})
	if err := c.Start(func(req, resp []byte, t MsgType) (int32, MsgType) {
		close(entered)
		<-release
		return int32(copy(resp, "done")), MsgTypeNormal
	}); err != nil {
		t.Fatal(err)
	}
	answer := make(chan error, 1)
	go func() {
		got, _, _, err := h.call(0, nil, 0, MsgTypeNormal, time.Minute)
		if err == nil && string(got) != "done" {
			err = fmt.Errorf("answer %q", got)
		}
		answer <- err
	}()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := waitErr(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
	if err := waitErr(t, answer, "the host call"); err != nil {
		t.Error(err)
	}
}

// A handler may close its own Client: Close returns without waiting for that handler's worker (which would
// wait for itself), the handler's answer is still delivered, Wait returns, and every later call is ErrClosed.
func TestHandlerMayCloseItsClient(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	c := connect(t, h)
	closed := make(chan error, 1)
	if err := c.Start(func(req, resp []byte, t MsgType) (int32, MsgType) {
		closed <- c.Close()
		return int32(copy(resp, "bye")), MsgTypeNormal
	}); err != nil {
		t.Fatal(err)
	}
	got, _, _, err := h.call(0, nil, 0, MsgTypeNormal, time.Minute)
	if err != nil || string(got) != "bye" {
		t.Fatalf("the closing handler's answer: %q, %v", got, err)
	}
	if err := waitErr(t, closed, "Close from the handler"); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	if err := waitErr(t, waited, "Wait after a handler's Close"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AcquireGuestSlot(time.Second); !errors.Is(err, ErrClosed) {
		t.Errorf("a call after the handler's Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// A copying call whose request cannot be valid fails at once, before waiting for a free guest slot: here
// every slot is held, and the call's deadline is long.
func TestCopyingCallRefusedBeforeWaitingForASlot(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 2, hostPayload: 64, guestPayload: 128}
	h := newFakeHost(t, g)
	c := connect(t, h)
	for i := 0; i < int(g.guestSlots); i++ {
		slot, err := c.AcquireGuestSlot(-1)
		if err != nil {
			t.Fatal(err)
		}
		defer slot.Release()
	}
	for _, k := range []struct {
		name string
		data []byte
		typ  MsgType
		want error
	}{
		{"large heartbeat", make([]byte, g.guestPayload+1), MsgTypeHeartbeatReq, ErrInvalidArgument},
		{"large and reserved type", make([]byte, g.guestPayload+1), MsgTypeSystemError, ErrInvalidArgument},
		{"reserved type", []byte("x"), MsgTypeShutdown, ErrInvalidArgument},
	} {
		start := time.Now()
		_, _, err := c.SendGuestCallWithTimeout(k.data, k.typ, 10*time.Second)
		if !errors.Is(err, k.want) {
			t.Errorf("%s: got %v, want %v", k.name, err, k.want)
		}
		_, _, err = c.SendGuestCallBuffer(k.data, make([]byte, 8), k.typ, 10*time.Second)
		if !errors.Is(err, k.want) {
			t.Errorf("%s (into a buffer): got %v, want %v", k.name, err, k.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: refused after %v, not at once", k.name, d)
		}
	}
}

// A nil or zero Client, and a nil or zero GuestSlot, are not connected: every method returns ErrClosed or a
// zero value, never panics.
func TestNilAndZeroClientDoNotPanic(t *testing.T) {
	handler := func([]byte, []byte, MsgType) (int32, MsgType) { return 0, MsgTypeNormal }
	for _, k := range []struct {
		name string
		c    *Client
	}{{"nil", nil}, {"zero", &Client{}}} {
		c := k.c
		expect := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s Client: %s: got %v, want ErrClosed", k.name, what, err)
			}
		}
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Errorf("%s Client panicked: %v", k.name, v)
				}
			}()
			if c.HostSlots() != 0 || c.GuestSlots() != 0 || c.HostPayloadCapacity() != 0 || c.GuestPayloadCapacity() != 0 {
				t.Errorf("%s Client: non-zero geometry", k.name)
			}
			if c.HostAlive() {
				t.Errorf("%s Client: HostAlive", k.name)
			}
			if s := c.String(); s != "shm.Client(not connected)" {
				t.Errorf("%s Client: String %q", k.name, s)
			}
			expect("Start", c.Start(handler))
			expect("Start(nil)", c.Start(nil))
			expect("Wait", c.Wait())
			_, _, err := c.SendGuestCall([]byte("x"), MsgTypeNormal)
			expect("SendGuestCall", err)
			_, _, err = c.SendGuestCallWithTimeout(nil, MsgTypeNormal, time.Second)
			expect("SendGuestCallWithTimeout", err)
			_, _, err = c.SendGuestCallBuffer(nil, nil, MsgTypeNormal, time.Second)
			expect("SendGuestCallBuffer", err)
			slot, err := c.AcquireGuestSlot(time.Second)
			expect("AcquireGuestSlot", err)
			if slot != nil {
				t.Errorf("%s Client: AcquireGuestSlot returned a slot", k.name)
			}
			c.ReleaseParkedSlots()
			expect("Close", c.Close())
			expect("Close again", c.Close())
		}()
	}
	for _, k := range []struct {
		name string
		g    *GuestSlot
	}{{"nil", nil}, {"zero", &GuestSlot{}}} {
		g := k.g
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Errorf("%s GuestSlot panicked: %v", k.name, v)
				}
			}()
			if g.Index() != -1 || g.Capacity() != 0 || g.RequestBuffer() != nil || g.Response() != nil ||
				g.ResponseSize() != 0 || g.ResponseType() != MsgTypeNormal {
				t.Errorf("%s GuestSlot: non-zero accessors", k.name)
			}
			for what, err := range map[string]error{"Send": g.Send(1, MsgTypeNormal),
				"SendWithTimeout": g.SendWithTimeout(1, MsgTypeNormal, time.Second), "SendFlatBuffer": g.SendFlatBuffer(1)} {
				if !errors.Is(err, ErrClosed) {
					t.Errorf("%s GuestSlot: %s: got %v, want ErrClosed", k.name, what, err)
				}
			}
			g.Release()
		}()
	}
}

// Once the Client's own Close has begun, every call fails with ErrClosed, also while the host is shutting
// down: ErrShuttingDown is the host's shutdown, not this client's. Close is held in progress here by a
// handler that has not returned.
func TestCallsAfterCloseFailWithErrClosed(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	c, err := Connect(ClientConfig{ShmName: h.name, DefaultTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	release := make(chan struct{})
	if err := c.Start(func(req, resp []byte, t MsgType) (int32, MsgType) {
		close(entered)
		<-release
		return 0, MsgTypeNormal
	}); err != nil {
		t.Fatal(err)
	}
	slot, err := c.AcquireGuestSlot(-1)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _, _, _ = h.call(0, nil, 0, MsgTypeNormal, time.Minute) }()
	<-entered
	h.shutdown()
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	for !c.isClosing() {
		time.Sleep(time.Millisecond)
	}
	check := func(when string) {
		t.Helper()
		_, _, err := c.SendGuestCall([]byte("x"), MsgTypeNormal)
		expectClosed(t, when+": SendGuestCall", err)
		_, _, err = c.SendGuestCallWithTimeout(make([]byte, 1<<20), MsgTypeNormal, time.Second)
		expectClosed(t, when+": SendGuestCallWithTimeout, too large", err)
		_, _, err = c.SendGuestCallBuffer([]byte("x"), make([]byte, 8), MsgTypeSystemError, time.Second)
		expectClosed(t, when+": SendGuestCallBuffer, reserved type", err)
		_, err = c.AcquireGuestSlot(time.Second)
		expectClosed(t, when+": AcquireGuestSlot", err)
		expectClosed(t, when+": Send", slot.Send(1, MsgTypeNormal))
		expectClosed(t, when+": Send, too large", slot.Send(-1<<31, MsgTypeNormal))
		expectClosed(t, when+": SendFlatBuffer", slot.SendFlatBuffer(1))
		expectClosed(t, when+": SendFlatBuffer, negative size", slot.SendFlatBuffer(-1))
		expectClosed(t, when+": Start", c.Start(testHandler))
		expectClosed(t, when+": Start(nil)", c.Start(nil))
	}
	check("during Close")
	close(release)
	if err := waitErr(t, closed, "Close"); err != nil {
		t.Fatal(err)
	}
	check("after Close")
	slot.Release()
}

func expectClosed(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrClosed) || errors.Is(err, ErrShuttingDown) {
		t.Errorf("%s: got %v, want ErrClosed", what, err)
	}
}

// The sizes a held slot refuses (SPECIFICATION.md §8.1: valid iff n != INT32_MIN and |n| <= capacity) fail
// with ErrTooLarge before anything is published, before the type is looked at, and leave the slot held.
func TestZeroCopySizeChecks(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 64, guestPayload: 128}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connect(t, h)
	slot, err := c.AcquireGuestSlot(-1)
	if err != nil {
		t.Fatal(err)
	}
	defer slot.Release()
	capacity := int32(g.guestPayload)
	word := func() uint32 { return atomic.LoadUint32(&h.slots[1].h.ctl) }
	before := word()
	for _, size := range []int32{capacity + 1, -capacity - 1, -1 << 31, 1<<31 - 1} {
		for _, typ := range []MsgType{MsgTypeNormal, MsgTypeSystemError} {
			if err := slot.Send(size, typ); !errors.Is(err, ErrTooLarge) {
				t.Errorf("Send(%d, %v): got %v, want ErrTooLarge", size, typ, err)
			}
		}
	}
	for _, size := range []int{-1, int(capacity) + 1, -1 << 31, math.MaxInt} {
		if err := slot.SendFlatBuffer(size); !errors.Is(err, ErrTooLarge) {
			t.Errorf("SendFlatBuffer(%d): got %v, want ErrTooLarge", size, err)
		}
	}
	if w := word(); w != before || ctlState(w) != stateClaimed {
		t.Fatalf("a refused size moved the slot: word %#x, was %#x", w, before)
	}
	// The valid extremes go through, end-aligned ones included.
	rb := slot.RequestBuffer()
	for i := range rb {
		rb[i] = byte(i)
	}
	for _, size := range []int32{0, capacity, -1, -capacity} {
		if err := slot.Send(size, MsgTypeNormal); err != nil {
			t.Errorf("Send(%d): %v", size, err)
			continue
		}
		off, n, _ := placement(size, uint32(capacity))
		if !bytes.Equal(slot.Response(), complement(rb[off:off+n])) {
			t.Errorf("Send(%d): wrong answer", size)
		}
	}
	for _, size := range []int{0, 1, int(capacity)} {
		if err := slot.SendFlatBuffer(size); err != nil || !bytes.Equal(slot.Response(), complement(rb[int(capacity)-size:])) {
			t.Errorf("SendFlatBuffer(%d): %v", size, err)
		}
	}
}

// A host that shuts down cleanly closes the guest connection right after setting SHUTTING_DOWN (§3): a
// guest call nobody took still fails with ErrShuttingDown (§9), not ErrHostGone, and the workers exit as for
// a shutdown.
func TestShutdownThenCloseIsAShutdown(t *testing.T) {
	for round := 0; round < 5; round++ {
		h, c, call := servingWithPendingCall(t)
		h.shutdown()
		h.die()
		if err := waitErr(t, call, "the guest call"); !errors.Is(err, ErrShuttingDown) {
			t.Errorf("round %d: call: %v", round, err)
		}
		wait := make(chan error, 1)
		go func() { wait <- c.Wait() }()
		if err := waitErr(t, wait, "Wait"); err != nil {
			t.Errorf("round %d: Wait after shutdown: %v", round, err)
		}
	}
}

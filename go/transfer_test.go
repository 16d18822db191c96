// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Large messages (SPECIFICATION.md §8.5) against the fake host: both directions, and every hostile case.

func connectCfg(t *testing.T, h *fakeHost, cfg ClientConfig) *Client {
	t.Helper()
	cfg.ShmName = h.name
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = 30 * time.Second
	}
	c, err := Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// largeSizes are the sizes around and well past a capacity c.
func largeSizes(c int) []int {
	return []int{c + 1, 2 * c, 2*c + 1, 3 * c, 7*c - 1, 1<<20 + 3, 4 << 20}
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) || crc32.ChecksumIEEE(got) != crc32.ChecksumIEEE(want) || !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (crc %08x), want %d (crc %08x)", what, len(got), crc32.ChecksumIEEE(got),
			len(want), crc32.ChecksumIEEE(want))
	}
}

// Guest calls of every size: large requests, large answers, into buffers and from readers.
func TestLargeGuestCalls(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 2, hostPayload: 256, guestPayload: 64 << 10}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connect(t, h)
	capacity := int(g.guestPayload)
	for _, n := range largeSizes(capacity) {
		req := pattern(n)
		want := complement(req)
		got, rt, err := c.SendGuestCall(req, MsgTypeGuestCall)
		if err != nil || rt != MsgTypeGuestCall {
			t.Fatalf("%d bytes: %v %v", n, rt, err)
		}
		sameBytes(t, "SendGuestCall", got, want)

		buf := make([]byte, n)
		got, _, err = c.SendGuestCallBuffer(req, buf, MsgTypeAppStart, -1)
		if err != nil {
			t.Fatalf("%d bytes into a buffer: %v", n, err)
		}
		sameBytes(t, "SendGuestCallBuffer", got, want)
		if &got[0] != &buf[0] {
			t.Fatal("SendGuestCallBuffer did not answer in the buffer")
		}
		if _, _, err = c.SendGuestCallBuffer(req, make([]byte, n-1), MsgTypeNormal, -1); !errors.Is(err, ErrBufferTooSmall) {
			t.Fatalf("%d bytes into a short buffer: %v", n, err)
		}

		dst := make([]byte, 0, n)
		got, rt, err = c.SendGuestCallStream(bytes.NewReader(req), int64(n), 2500, dst, -1)
		if err != nil || rt != 2500 {
			t.Fatalf("%d bytes streamed: %v %v", n, rt, err)
		}
		sameBytes(t, "SendGuestCallStream", got, want)
		if unsafe.Pointer(&got[0]) != unsafe.Pointer(&dst[:1][0]) {
			t.Fatal("SendGuestCallStream did not answer in dst")
		}
		// A dst too small for the answer: a new slice.
		got, _, err = c.SendGuestCallStream(bytes.NewReader(req), int64(n), MsgTypeNormal, make([]byte, 10), -1)
		if err != nil {
			t.Fatal(err)
		}
		sameBytes(t, "SendGuestCallStream (new slice)", got, want)

		// A small request with a large answer.
		var ask [8]byte
		binary.LittleEndian.PutUint64(ask[:], uint64(n))
		got, rt, err = c.SendGuestCall(ask[:], fakeBigAnswer)
		if err != nil || rt != fakeBigAnswer {
			t.Fatalf("answer of %d bytes: %v %v", n, rt, err)
		}
		sameBytes(t, "large answer", got, pattern(n))
	}
	// Small messages keep working on the same slots, and a stream of a small size takes the plain path.
	for _, n := range []int{0, 1, 32, 33, capacity} {
		req := pattern(n)
		got, _, err := c.SendGuestCallStream(bytes.NewReader(req), int64(n), MsgTypeNormal, nil, -1)
		if err != nil {
			t.Fatalf("%d bytes streamed: %v", n, err)
		}
		sameBytes(t, "small stream", got, complement(req))
	}
	st := c.Stats()
	if st.Calls.Protocol != 0 || st.Calls.Timeouts != 0 {
		t.Errorf("stats: %+v", st.Calls)
	}
}

// A guest call larger than a slot is one call in the guest's counters, however many transactions it takes
// (§5.4): one count of calls, its bytes once, one latency sample.
func TestLargeGuestCallCountsAsOneCall(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 4096}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connectCfg(t, h, ClientConfig{LatencyHistogram: true})
	req := pattern(3*4096 + 17) // 4 chunks each way: 4 CHUNKs, then 3 CHUNK_NEXT
	got, _, err := c.SendGuestCall(req, MsgTypeGuestCall)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "answer", got, complement(req))
	st := c.Stats()
	n := uint64(len(req))
	if st.Calls.Calls != 1 || st.Calls.BytesOut != n || st.Calls.BytesIn != n || st.Calls.Protocol != 0 {
		t.Errorf("after one large call of %d bytes each way: %+v", n, st.Calls)
	}
	if st.Latency.Count != 1 {
		t.Errorf("latency samples: %d, want 1 for the whole call", st.Latency.Count)
	}
	if _, _, err := c.SendGuestCall([]byte("x"), MsgTypeGuestCall); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Calls.Calls != 2 || st.Latency.Count != 2 {
		t.Errorf("after a plain call too: calls %d, latency samples %d", st.Calls.Calls, st.Latency.Count)
	}
}

// A large answer above the caller's MaxMessageSize is refused (ErrTooLarge) before anything is allocated;
// one at the limit is taken.
func TestLargeAnswerLimit(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 1024}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connectCfg(t, h, ClientConfig{MaxMessageSize: 10000})
	ask := func(n uint64) ([]byte, error) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], n)
		got, _, err := c.SendGuestCall(b[:], fakeBigAnswer)
		return got, err
	}
	if got, err := ask(10000); err != nil || len(got) != 10000 {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := ask(10001); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("above the limit: %v", err)
	}
	if got, err := ask(5000); err != nil || !bytes.Equal(got, pattern(5000)) {
		t.Fatalf("after a refused answer: %v", err)
	}
	// A large request is not bound by this side's limit (the host's counts), but its echo is as large.
	if _, _, err := c.SendGuestCall(pattern(20000), MsgTypeNormal); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("echo above the answer limit: %v", err)
	}
}

// A reader that fails or ends early fails the call with ErrInvalidArgument; the slot is not leaked.
func TestLargeStreamSourceFails(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 1024}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connect(t, h)
	boom := errors.New("boom")
	for _, k := range []struct {
		name string
		src  io.Reader
		size int64
	}{
		{"short reader", bytes.NewReader(make([]byte, 3000)), 5000},
		{"failing reader", io.MultiReader(bytes.NewReader(make([]byte, 2100)), &errReader{boom}), 5000},
		{"short small reader", bytes.NewReader(make([]byte, 10)), 100},
	} {
		_, _, err := c.SendGuestCallStream(k.src, k.size, MsgTypeNormal, nil, -1)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("%s: %v", k.name, err)
		}
		req := pattern(3000)
		got, _, err := c.SendGuestCall(req, MsgTypeNormal)
		if err != nil || !bytes.Equal(got, complement(req)) {
			t.Fatalf("%s: the next call: %v", k.name, err)
		}
	}
	if _, _, err := c.SendGuestCallStream(nil, 1<<40+1, MsgTypeNormal, nil, -1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("above 1<<40: %v", err)
	}
	if _, _, err := c.SendGuestCallStream(nil, 5, MsgTypeNormal, nil, -1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("nil reader: %v", err)
	}
	if _, _, err := c.SendGuestCallStream(bytes.NewReader(nil), -1, MsgTypeNormal, nil, -1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("negative size: %v", err)
	}
	if _, _, err := c.SendGuestCallStream(bytes.NewReader(make([]byte, 2000)), 2000, MsgTypeChunk, nil, -1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("reserved type: %v", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// setAnswer writes a raw answer into the guest slot s as a hostile host would.
func setAnswer(s *slotView, typ MsgType, size int32, ck *chunkHeader) {
	if ck != nil {
		writeChunkHeader(s.h, *ck)
	}
	atomic.StoreUint32(&s.h.respType, uint32(typ))
	atomic.StoreUint32(&s.h.respSize, uint32(size))
	atomic.StoreUint32(&s.h.respError, 0)
}

// A host that breaks the rules of a large answer or of a large request's acknowledgements fails the call
// with the typed error, and the next call works.
func TestLargeAnswerHostile(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 2, hostPayload: 256, guestPayload: 1024}
	const C = 1024
	var mode int32
	h := newFakeHost(t, g)
	// Type 3100 asks for hostile answer mode; chunks and CHUNK_NEXTs of those calls get it too.
	h.serveGuestCalls(func(s *slotView, req []byte, t MsgType) bool {
		m := atomic.LoadInt32(&mode)
		if m == 0 {
			return false
		}
		good := chunkHeader{streamID: 77, total: 3 * C, offset: 0, msgType: uint32(MsgTypeNormal)}
		switch t {
		case MsgTypeChunkNext:
			next := good
			next.offset = C
			switch m {
			case 10: // wrong stream in chunk 1
				next.streamID = 78
			case 11: // wrong offset
				next.offset = 2 * C
			case 12: // lying total
				next.total = 4 * C
			case 13: // another type
				next.msgType = 2500
			case 14: // a plain answer in the middle
				setAnswer(s, MsgTypeNormal, 5, nil)
				return true
			case 15: // wrong size
				setAnswer(s, MsgTypeChunk, C-1, &next)
				return true
			default:
				return false
			}
			setAnswer(s, MsgTypeChunk, C, &next)
			return true
		case MsgTypeChunk:
			ck := readChunkHeader(s.h)
			switch m {
			case 20: // a plain answer to a chunk that is not the last
				setAnswer(s, MsgTypeNormal, 0, nil)
			case 21: // an acknowledgement of the last chunk
				setAnswer(s, MsgTypeChunkAck, 0, nil)
			case 22: // an acknowledgement with a size
				if ck.offset+C >= ck.total {
					return false
				}
				setAnswer(s, MsgTypeChunkAck, 4, nil)
			default:
				return false
			}
			return true
		}
		ck := good
		size := int32(C)
		switch m {
		case 1: // zero stream id
			ck.streamID = 0
		case 2: // a total that fits the slot
			ck.total = C
		case 3: // above 1<<40
			ck.total = 1<<40 + 1
		case 4: // wrong size
			size = C - 1
		case 5: // negative size
			size = -C
		case 6: // a reserved message type
			ck.msgType = 5
		case 7: // not at offset 0
			ck.offset = C
		case 8: // above the caller's limit
			ck.total = 1 << 30
		case 9: // a CHUNK_ACK to a plain request
			setAnswer(s, MsgTypeChunkAck, 0, nil)
			return true
		case 30: // HEARTBEAT_REQ as the answer's type
			ck.msgType = uint32(MsgTypeHeartbeatReq)
		}
		setAnswer(s, MsgTypeChunk, size, &ck)
		return true
	})
	c := connectCfg(t, h, ClientConfig{MaxMessageSize: 1 << 20})
	normal := func(what string) {
		t.Helper()
		atomic.StoreInt32(&mode, 0)
		for _, n := range []int{5, 3*C + 1} {
			req := pattern(n)
			if got, _, err := c.SendGuestCall(req, MsgTypeNormal); err != nil || !bytes.Equal(got, complement(req)) {
				t.Fatalf("%s: a normal call of %d bytes after it: %v", what, n, err)
			}
		}
	}
	for _, k := range []struct {
		mode  int32
		large bool // send a large request (the chunk modes)
		want  error
	}{
		{1, false, ErrProtocol}, {2, false, ErrProtocol}, {3, false, ErrProtocol}, {4, false, ErrProtocol},
		{5, false, ErrProtocol}, {6, false, ErrProtocol}, {7, false, ErrProtocol}, {8, false, ErrTooLarge},
		{9, false, ErrProtocol}, {30, false, ErrProtocol},
		{10, false, ErrProtocol}, {11, false, ErrProtocol}, {12, false, ErrProtocol}, {13, false, ErrProtocol},
		{14, false, ErrProtocol}, {15, false, ErrProtocol},
		{20, true, ErrProtocol}, {21, true, ErrProtocol}, {22, true, ErrProtocol},
	} {
		atomic.StoreInt32(&mode, k.mode)
		req := []byte("hostile")
		if k.large {
			req = pattern(3 * C)
		}
		_, _, err := c.SendGuestCall(req, MsgTypeNormal)
		if !errors.Is(err, k.want) {
			t.Fatalf("mode %d: got %v, want %v", k.mode, err, k.want)
		}
		normal("mode " + utoa(uint64(k.mode)))
	}
	if st := c.Stats(); st.Calls.Protocol == 0 {
		t.Errorf("protocol errors were not counted: %+v", st.Calls)
	}

	// A zero-copy slot refuses a large answer with ErrTooLarge and stays held.
	atomic.StoreInt32(&mode, 0)
	slot, err := c.AcquireGuestSlot(-1)
	if err != nil {
		t.Fatal(err)
	}
	defer slot.Release()
	binary.LittleEndian.PutUint64(slot.RequestBuffer(), 5000)
	if err := slot.Send(8, fakeBigAnswer); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("zero-copy large answer: %v", err)
	}
	if slot.Response() != nil {
		t.Fatal("a refused large answer shows as a response")
	}
	copy(slot.RequestBuffer(), "abc")
	if err := slot.Send(3, MsgTypeNormal); err != nil || !bytes.Equal(slot.Response(), complement([]byte("abc"))) {
		t.Fatalf("zero-copy call after a refused large answer: %v", err)
	}
}

// A deadline that passes in the middle of a transfer ends the call with ErrTimeout, gives the slot up
// exactly as a plain call does, and the next call works.
func TestLargeTimeoutMidTransfer(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 1024}
	var stall int32
	h := newFakeHost(t, g)
	h.serveGuestCalls(func(s *slotView, req []byte, t MsgType) bool {
		if t == MsgTypeChunk && atomic.LoadInt32(&stall) == 1 && readChunkHeader(s.h).offset == 2048 {
			time.Sleep(time.Second) // serving: the caller abandons it (T6)
		}
		if t == MsgTypeChunkNext && atomic.LoadInt32(&stall) == 2 {
			time.Sleep(time.Second)
		}
		return false
	})
	c := connect(t, h)
	for _, m := range []int32{1, 2} {
		atomic.StoreInt32(&stall, m)
		req := pattern(5000)
		start := time.Now()
		var err error
		if m == 1 {
			_, _, err = c.SendGuestCallWithTimeout(req, MsgTypeNormal, 100*time.Millisecond)
		} else {
			var ask [8]byte
			binary.LittleEndian.PutUint64(ask[:], 5000)
			_, _, err = c.SendGuestCallWithTimeout(ask[:], fakeBigAnswer, 100*time.Millisecond)
		}
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("stall %d: got %v, want ErrTimeout", m, err)
		}
		if d := time.Since(start); d > 800*time.Millisecond {
			t.Errorf("stall %d: the timeout took %v", m, d)
		}
		atomic.StoreInt32(&stall, 0)
		// The only guest slot is the host's until it finishes (T7 frees it); the next call claims it then.
		got, _, err := c.SendGuestCallWithTimeout(req, MsgTypeNormal, 5*time.Second)
		if err != nil || !bytes.Equal(got, complement(req)) {
			t.Fatalf("stall %d: the next call: %v", m, err)
		}
	}
}

// ---- The guest as server of large requests ----

func echoReply(req, respBuf []byte, t MsgType) Reply {
	if t == fakeBigAnswer && len(req) == 8 {
		return Reply{Type: t, Large: pattern(int(binary.LittleEndian.Uint64(req)))}
	}
	return Reply{Type: t, Large: complement(req)}
}

// The host's large requests reach the handler whole; large answers travel back in chunks; a plain Handler
// gets large requests too.
func TestLargeHostCalls(t *testing.T) {
	g := geometry{hostSlots: 2, guestSlots: 1, hostPayload: 4096, guestPayload: 256}
	h := newFakeHost(t, g)
	c := connect(t, h)
	if err := c.StartReply(echoReply); err != nil {
		t.Fatal(err)
	}
	capacity := int(g.hostPayload)
	for _, n := range append(largeSizes(capacity), 1, 32, 33, capacity) {
		req := pattern(n)
		got, rt, code, err := h.callLarge(t, uint32(n)%2, req, MsgTypeAppStart, 30*time.Second)
		if err != nil || code != 0 || rt != MsgTypeAppStart {
			t.Fatalf("%d bytes: %v %v %v", n, rt, code, err)
		}
		sameBytes(t, "host call", got, complement(req))
		var ask [8]byte
		binary.LittleEndian.PutUint64(ask[:], uint64(n))
		got, _, code, err = h.callLarge(t, 0, ask[:], fakeBigAnswer, 30*time.Second)
		if err != nil || code != 0 {
			t.Fatalf("answer of %d bytes: %v %v", n, code, err)
		}
		sameBytes(t, "large answer", got, pattern(n))
	}
}

// A plain Handler, and the ReceiveBuffer hook: the request lies in the hook's memory.
func TestLargeHostCallsPlainHandlerAndReceiveBuffer(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 512, guestPayload: 256}
	h := newFakeHost(t, g)
	hook := make([]byte, 1<<20)
	var hooked, inHook int32
	c := connectCfg(t, h, ClientConfig{ReceiveBuffer: func(size uint64, ty MsgType, slot int) []byte {
		atomic.AddInt32(&hooked, 1)
		if ty == 2600 {
			return nil // the package allocates
		}
		if ty == 2601 {
			panic("hook")
		}
		return hook
	}})
	err := c.Start(func(req, respBuf []byte, ty MsgType) (int32, MsgType) {
		if len(req) > 0 && &req[0] == &hook[0] {
			atomic.AddInt32(&inHook, 1)
		}
		binary.LittleEndian.PutUint32(respBuf, crc32.ChecksumIEEE(req))
		return 4, ty
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ty := range []MsgType{MsgTypeNormal, 2600} {
		req := pattern(100000)
		got, _, code, err := h.callLarge(t, 0, req, ty, 30*time.Second)
		if err != nil || code != 0 || len(got) != 4 || binary.LittleEndian.Uint32(got) != crc32.ChecksumIEEE(req) {
			t.Fatalf("type %v: %v %v %x", ty, code, err, got)
		}
	}
	if atomic.LoadInt32(&hooked) != 2 || atomic.LoadInt32(&inHook) != 1 {
		t.Fatalf("hook called %d times, request in it %d times", hooked, inHook)
	}
	if _, _, code, err := h.callLarge(t, 0, pattern(5000), 2601, 30*time.Second); err != nil || code != WireErrHandlerFailed {
		t.Fatalf("a panicking hook: %v %v", code, err)
	}
}

// hostileServer connects a guest serving the echo with cfg, on a host of geometry g.
func hostileServer(t *testing.T, g geometry, cfg ClientConfig) (*fakeHost, *Client) {
	h := newFakeHost(t, g)
	c := connectCfg(t, h, cfg)
	if err := c.StartReply(echoReply); err != nil {
		t.Fatal(err)
	}
	return h, c
}

// Every broken chunk of §8.5 is answered with its WireError, drops the transfer, and the slot serves on.
func TestLargeRequestHostile(t *testing.T) {
	const C = 512
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: C, guestPayload: 256}
	h, _ := hostileServer(t, g, ClientConfig{MaxMessageSize: 64 << 10})
	data := pattern(C)
	type step struct {
		ck   chunkHeader
		size int32 // auto: the chunk's length by the rule
	}
	const auto = int32(1 << 30)
	ck := func(id, total, off uint64) chunkHeader {
		return chunkHeader{streamID: id, total: total, offset: off, msgType: uint32(MsgTypeNormal)}
	}
	typed := func(c chunkHeader, ty uint32) chunkHeader { c.msgType = ty; return c }
	for _, k := range []struct {
		name  string
		steps []step // all but the last must be acknowledged
		want  WireError
	}{
		{"zero stream id", []step{{ck(0, 3*C, 0), auto}}, WireErrStreamInvalid},
		{"total that fits the slot", []step{{ck(1, C, 0), auto}}, WireErrStreamInvalid},
		{"total above 1<<40", []step{{ck(1, 1<<40+1, 0), auto}}, WireErrStreamInvalid},
		{"total above the limit", []step{{ck(1, 64<<10+1, 0), auto}}, WireErrRequestTooLarge},
		{"reserved type", []step{{typed(ck(1, 3*C, 0), 5), auto}}, WireErrReservedType},
		{"heartbeat type", []step{{typed(ck(1, 3*C, 0), uint32(MsgTypeHeartbeatReq)), auto}}, WireErrReservedType},
		{"system error type", []step{{typed(ck(1, 3*C, 0), uint32(MsgTypeSystemError)), auto}}, WireErrReservedType},
		{"short first chunk", []step{{ck(1, 3*C, 0), C - 1}}, WireErrStreamInvalid},
		{"negative size", []step{{ck(1, 3*C, 0), -C}}, WireErrStreamInvalid},
		{"size above capacity", []step{{ck(1, 3*C, 0), C + 1}}, WireErrStreamInvalid},
		{"zero size", []step{{ck(1, 3*C, 0), 0}}, WireErrStreamInvalid},
		{"INT32_MIN size", []step{{ck(1, 3*C, 0), -1 << 31}}, WireErrStreamInvalid},
		{"continuation without a start", []step{{ck(1, 3*C, C), auto}}, WireErrStreamInvalid},
		{"offset past the end", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, 3*C), auto}}, WireErrStreamInvalid},
		{"offset wrapping", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, ^uint64(0)-C/2), auto}}, WireErrStreamInvalid},
		{"lying total", []step{{ck(1, 3*C, 0), auto}, {ck(1, 4*C, C), auto}}, WireErrStreamInvalid},
		{"type changes", []step{{ck(1, 3*C, 0), auto}, {typed(ck(1, 3*C, C), 2500), auto}}, WireErrStreamInvalid},
		{"duplicate", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, C), auto}, {ck(1, 3*C, C), auto}}, WireErrStreamInvalid},
		{"duplicate first chunk", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, 0), auto}}, WireErrStreamInvalid},
		{"overlapping", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, C/2), auto}}, WireErrStreamInvalid},
		{"out of order", []step{{ck(1, 3*C, 0), auto}, {ck(1, 3*C, 2*C), auto}}, WireErrStreamInvalid},
		{"wrong stream id", []step{{ck(1, 3*C, 0), auto}, {ck(2, 3*C, C), auto}}, WireErrStreamInvalid},
		{"wrong size of the last", []step{{ck(1, 3*C-5, 0), auto}, {ck(1, 3*C-5, C), auto}, {ck(1, 3*C-5, 2*C), C}}, WireErrStreamInvalid},
		{"CHUNK_NEXT without an answer", nil, WireErrStreamInvalid},
	} {
		k := k
		t.Run(k.name, func(t *testing.T) {
			hc := h.claim(t, 0)
			defer hc.release()
			var a hostAnswer
			var err error
			if k.steps == nil {
				a, err = hc.chunkNext(1, C, 10*time.Second)
			}
			for i, st := range k.steps {
				size := st.size
				if size == auto {
					size = C
					if st.ck.offset < st.ck.total {
						size = int32(chunkLen(C, st.ck.total, st.ck.offset))
					}
				}
				raw := st.ck.encode()
				a, err = hc.tx(MsgTypeChunk, size, raw[:], data, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if i < len(k.steps)-1 && (a.typ != MsgTypeChunkAck || a.size != 0) {
					t.Fatalf("step %d: answer %v size %d code %v, want CHUNK_ACK", i, a.typ, a.size, a.code)
				}
			}
			if err != nil || a.typ != MsgTypeSystemError || a.code != k.want {
				t.Fatalf("got %v %v (code %v), want %v", err, a.typ, a.code, k.want)
			}
			// The transfer is gone: its next chunk is refused too.
			if len(k.steps) > 1 {
				next := k.steps[1].ck
				next.offset = C
				if a, err = hc.chunk(ck(next.streamID, 3*C, C), data, 0, 10*time.Second); err != nil ||
					a.code != WireErrStreamInvalid {
					t.Fatalf("the dropped transfer went on: %v %v", a.code, err)
				}
			}
			hc.release()
			req := pattern(3*C + 7)
			got, _, code, err := h.callLarge(t, 0, req, MsgTypeNormal, 10*time.Second)
			if err != nil || code != 0 || !bytes.Equal(got, complement(req)) {
				t.Fatalf("a call after it: %v %v", code, err)
			}
		})
	}
}

// A CHUNK_NEXT for the wrong stream or offset, or of the wrong size, ends the outgoing answer.
func TestLargeChunkNextHostile(t *testing.T) {
	const C = 512
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: C, guestPayload: 256}
	h, _ := hostileServer(t, g, ClientConfig{})
	for _, k := range []string{"wrong stream", "wrong offset", "repeated offset", "wrong size", "after the end"} {
		t.Run(k, func(t *testing.T) {
			hc := h.claim(t, 0)
			defer hc.release()
			var ask [8]byte
			binary.LittleEndian.PutUint64(ask[:], 3*C)
			copy(hc.s.req, ask[:])
			stageInline(hc.s, 8)
			a, err := hc.tx(fakeBigAnswer, 8, nil, nil, 10*time.Second)
			first := decodeChunkHeader(&a.inline)
			if err != nil || a.typ != MsgTypeChunk || first.offset != 0 || first.total != 3*C || a.size != C {
				t.Fatalf("chunk 0: %v %v %+v", err, a.typ, first)
			}
			id := first.streamID
			switch k {
			case "wrong stream":
				a, err = hc.chunkNext(id+1, C, 10*time.Second)
			case "wrong offset":
				a, err = hc.chunkNext(id, 2*C, 10*time.Second)
			case "repeated offset":
				a, err = hc.chunkNext(id, C, 10*time.Second)
				if err == nil && a.typ == MsgTypeChunk {
					a, err = hc.chunkNext(id, C, 10*time.Second)
				}
			case "wrong size":
				var raw [16]byte
				putU64(raw[0:], id)
				putU64(raw[8:], C)
				a, err = hc.tx(MsgTypeChunkNext, 15, raw[:], nil, 10*time.Second)
			case "after the end":
				for off := uint64(C); off < 3*C && err == nil; off += C {
					a, err = hc.chunkNext(id, off, 10*time.Second)
				}
				a, err = hc.chunkNext(id, 3*C, 10*time.Second)
			}
			if err != nil || a.typ != MsgTypeSystemError || a.code != WireErrStreamInvalid {
				t.Fatalf("got %v %v %v, want StreamInvalid", err, a.typ, a.code)
			}
			// The answer is dropped: even the right CHUNK_NEXT is refused now.
			if a, err = hc.chunkNext(id, C, 10*time.Second); err != nil || a.code != WireErrStreamInvalid {
				t.Fatalf("the dropped answer went on: %v %v", a.code, err)
			}
		})
	}
}

// MaxTransfers bounds the partial requests of all host slots together; a transfer ended by a new request, or
// swept by the idle timeout, gives its place back.
func TestLargeTooManyTransfersAndIdleSweep(t *testing.T) {
	const C = 256
	g := geometry{hostSlots: 3, guestSlots: 1, hostPayload: C, guestPayload: 256}
	h, c := hostileServer(t, g, ClientConfig{MaxTransfers: 2, TransferIdleTimeout: 500 * time.Millisecond})
	data := pattern(C)
	begin := func(k *hostCaller, id uint64) hostAnswer {
		t.Helper()
		a, err := k.chunk(chunkHeader{streamID: id, total: 4 * C, msgType: uint32(MsgTypeNormal)}, data, 0, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	k0, k1, k2 := h.claim(t, 0), h.claim(t, 1), h.claim(t, 2)
	defer k0.release()
	defer k1.release()
	defer k2.release()
	if a := begin(k0, 1); a.typ != MsgTypeChunkAck {
		t.Fatalf("slot 0: %v %v", a.typ, a.code)
	}
	if a := begin(k1, 2); a.typ != MsgTypeChunkAck {
		t.Fatalf("slot 1: %v %v", a.typ, a.code)
	}
	if a := begin(k2, 3); a.typ != MsgTypeSystemError || a.code != WireErrTooManyTransfers {
		t.Fatalf("a third transfer: %v %v", a.typ, a.code)
	}
	// A plain request on slot 0 ends its transfer: slot 2 may begin one now.
	if a, err := k0.tx(MsgTypeNormal, 0, nil, nil, 10*time.Second); err != nil || a.typ != MsgTypeNormal {
		t.Fatalf("plain request: %v %v", a.typ, err)
	}
	if a := begin(k2, 4); a.typ != MsgTypeChunkAck {
		t.Fatalf("slot 2 after slot 0's transfer ended: %v %v", a.typ, a.code)
	}
	// Nothing comes for longer than the idle timeout: both partial requests are swept.
	time.Sleep(1500 * time.Millisecond)
	if a, err := k1.chunk(chunkHeader{streamID: 2, total: 4 * C, offset: C, msgType: uint32(MsgTypeNormal)}, data, 0, 10*time.Second); err != nil ||
		a.code != WireErrStreamInvalid {
		t.Fatalf("a chunk of a swept transfer: %v %v %v", a.typ, a.code, err)
	}
	if a := begin(k0, 5); a.typ != MsgTypeChunkAck {
		t.Fatalf("after the sweep: %v %v", a.typ, a.code)
	}
	if a := begin(k1, 6); a.typ != MsgTypeChunkAck {
		t.Fatalf("after the sweep (2): %v %v", a.typ, a.code)
	}
	if n := atomic.LoadInt32(&c.partial); n != 2 {
		t.Fatalf("%d partial transfers counted, want 2", n)
	}
	// An outgoing answer the host stops fetching is swept too.
	k0.release()
	var ask [8]byte
	binary.LittleEndian.PutUint64(ask[:], 3*C)
	k0 = h.claim(t, 0)
	copy(k0.s.req, ask[:])
	stageInline(k0.s, 8)
	a, err := k0.tx(fakeBigAnswer, 8, nil, nil, 10*time.Second)
	if err != nil || a.typ != MsgTypeChunk {
		t.Fatalf("large answer: %v %v", a.typ, err)
	}
	time.Sleep(1500 * time.Millisecond)
	if a, err = k0.chunkNext(decodeChunkHeader(&a.inline).streamID, C, 10*time.Second); err != nil || a.code != WireErrStreamInvalid {
		t.Fatalf("CHUNK_NEXT of a swept answer: %v %v", a.code, err)
	}
	// Close frees what is held.
	k0.release()
	k1.release()
	k2.release()
	c.Close()
	if n := atomic.LoadInt32(&c.partial); n != 0 {
		t.Fatalf("%d partial transfers after Close", n)
	}
}

// A host whose call times out in the middle of a large request leaves the transfer on the slot; the next
// request on it ends it and is served.
func TestLargeHostTimeoutThenNormalCall(t *testing.T) {
	const C = 256
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: C, guestPayload: 256}
	h, c := hostileServer(t, g, ClientConfig{MaxTransfers: 1})
	k := h.claim(t, 0)
	if a, err := k.chunk(chunkHeader{streamID: 9, total: 5 * C, msgType: uint32(MsgTypeNormal)}, pattern(C), 0, 10*time.Second); err != nil ||
		a.typ != MsgTypeChunkAck {
		t.Fatalf("first chunk: %v %v", a.typ, err)
	}
	k.release() // the host gives up on the call
	req := pattern(10)
	got, _, code, err := h.callLarge(t, 0, req, MsgTypeNormal, 10*time.Second)
	if err != nil || code != 0 || !bytes.Equal(got, complement(req)) {
		t.Fatalf("the next call: %v %v", code, err)
	}
	if n := atomic.LoadInt32(&c.partial); n != 0 {
		t.Fatalf("%d partial transfers left", n)
	}
	req = pattern(5 * C)
	if got, _, code, err = h.callLarge(t, 0, req, MsgTypeNormal, 10*time.Second); err != nil || code != 0 ||
		!bytes.Equal(got, complement(req)) {
		t.Fatalf("a large call after it: %v %v", code, err)
	}
}

// Small calls keep their cost: no allocation into a buffer; a large call into a big enough dst allocates
// nothing for the answer either.
func TestLargeAndSmallCallAllocations(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 4096}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connect(t, h)
	req := pattern(100)
	buf := make([]byte, 4096)
	if n := testing.AllocsPerRun(50, func() {
		if _, _, err := c.SendGuestCallBuffer(req, buf, MsgTypeNormal, -1); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a small call into a buffer allocates %v times", n)
	}
	large := pattern(5 * 4096)
	dst := make([]byte, len(large))
	r := bytes.NewReader(large)
	if n := testing.AllocsPerRun(20, func() {
		r.Reset(large)
		got, _, err := c.SendGuestCallStream(r, int64(len(large)), MsgTypeNormal, dst, -1)
		if err != nil || &got[0] != &dst[0] {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a large streamed call into dst allocates %v times", n)
	}
}

// A ReplyHandler's errors are a Handler's: a panic or SYSTEM_ERROR fails, a reserved type is refused, Large
// or not; without Large its Size and Type are the answer.
func TestReplyHandlerErrors(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 256}
	h := newFakeHost(t, g)
	c := connect(t, h)
	err := c.StartReply(func(req, respBuf []byte, ty MsgType) Reply {
		switch ty {
		case 2700:
			panic("reply")
		case 2701:
			return Reply{Type: MsgTypeSystemError, Large: make([]byte, 1000)}
		case 2702:
			return Reply{Type: 5, Large: make([]byte, 1000)}
		case 2703:
			return Reply{Type: 5, Large: []byte{}}
		case 2704:
			return Reply{Size: int32(copy(respBuf, "plain")), Type: ty}
		case 2705:
			return Reply{Size: 1 << 20, Type: ty}
		case 2706:
			return Reply{Size: 999, Type: ty, Large: []byte{}} // Large wins: an empty answer
		}
		return Reply{Type: ty, Large: complement(req)}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(testHandler); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Start after StartReply: %v", err)
	}
	for ty, want := range map[MsgType]WireError{2700: WireErrHandlerFailed, 2701: WireErrHandlerFailed,
		2702: WireErrReservedType, 2703: WireErrReservedType, 2705: WireErrResponseTooLarge} {
		_, _, code, err := h.callLarge(t, 0, pattern(700), ty, 10*time.Second)
		if err != nil || code != want {
			t.Errorf("type %v: got %v %v, want %v", ty, code, err, want)
		}
	}
	if got, _, code, err := h.callLarge(t, 0, pattern(700), 2704, 10*time.Second); err != nil || code != 0 ||
		string(got) != "plain" {
		t.Errorf("plain reply: %q %v %v", got, code, err)
	}
	if got, _, code, err := h.callLarge(t, 0, pattern(700), 2706, 10*time.Second); err != nil || code != 0 ||
		len(got) != 0 {
		t.Errorf("empty Large: %q %v %v", got, code, err)
	}
}

// Large calls in both directions at once, on every slot, each with its own stream.
func TestLargeConcurrent(t *testing.T) {
	g := geometry{hostSlots: 2, guestSlots: 3, hostPayload: 1024, guestPayload: 2048}
	h := newFakeHost(t, g)
	h.serveGuestCalls(nil)
	c := connect(t, h)
	if err := c.StartReply(echoReply); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for w := 0; w < 6; w++ {
		go func(w int) {
			for i := 0; i < 20; i++ {
				n := 1 + (w*7919+i*104729)%50000
				req := pattern(n)
				if w < 4 {
					got, _, err := c.SendGuestCall(req, MsgTypeNormal)
					if err != nil || !bytes.Equal(got, complement(req)) {
						errs <- errors.New("guest call " + utoa(uint64(n)) + ": " + errString(err))
						return
					}
					continue
				}
				got, _, code, err := h.callLarge(t, uint32(w-4), req, MsgTypeNormal, 30*time.Second)
				if err != nil || code != 0 || !bytes.Equal(got, complement(req)) {
					errs <- errors.New("host call " + utoa(uint64(n)) + ": " + errString(err))
					return
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < 6; w++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "wrong answer"
	}
	return err.Error()
}

// Close ends a large guest call in flight with ErrClosed.
func TestLargeCallEndsOnClose(t *testing.T) {
	g := geometry{hostSlots: 1, guestSlots: 1, hostPayload: 256, guestPayload: 1024}
	var stalled int32
	h := newFakeHost(t, g)
	h.serveGuestCalls(func(s *slotView, req []byte, t MsgType) bool {
		if t == MsgTypeChunk && readChunkHeader(s.h).offset == 1024 && atomic.CompareAndSwapInt32(&stalled, 0, 1) {
			time.Sleep(300 * time.Millisecond)
		}
		return false
	})
	c := connect(t, h)
	done := make(chan error, 1)
	go func() {
		_, _, err := c.SendGuestCall(pattern(10000), MsgTypeNormal)
		done <- err
	}()
	for atomic.LoadInt32(&stalled) == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	if err := waitErr(t, done, "the large call"); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

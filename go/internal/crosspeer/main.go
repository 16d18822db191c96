// SPDX-License-Identifier: Apache-2.0
// Command crosspeer is the Go side of the cross-language tests (tests/crosslang/cpp_host.cc): a guest that
// a C++ host test starts as `crosspeer MODE SEGMENT`. It is a test program, not part of the package API.
//
// Modes:
//
//	serve                     serve until the host shuts down (exit 0) or anything fails (exit 1)
//	expect-host-gone          serve; Wait and then a guest call must both fail with ErrHostGone
//	call-then-expect-host-gone  the same after one guest call (its host knows then that the segment is mapped)
//	shutdown-during-call      serve, and make a guest call nobody serves: it must end with ErrShuttingDown
//	                          when the host shuts down, and Wait must then return nil
//	expect-already-connected  Connect must fail with ErrGuestAlreadyConnected
//
// The handler's behaviour by request type (the same table is in cpp_host.cc):
//
//	1000 stats         answer 3 little-endian u64: handler calls, heartbeats the handler saw, late answers
//	1001 panic         panic
//	1002 respond-size  answer the int32 size the request carries (an invalid one tests ResponseTooLarge)
//	1003 respond-type  answer the MsgType the request carries, with 0 bytes
//	1004 block         wait until the file named by the request exists, then answer "LATE:" + request
//	1005 guest-calls   u32 n, u32 goroutines, u64 seed: make n checked guest calls, answer "OK" or "FAIL: ..."
//	1006 guest-errors  provoke every guest-call error the host can give; answer "OK" or "FAIL: ..."
//	1007 guest-timeout a guest call the host blocks on must time out and lose its slot; answer "OK"/"FAIL"
//	1008 hostile       u32 k: a guest call the test answers with hostile answer k; answer "OK"/"FAIL: ..."
//	1009 guest-large   u64 size, u64 seed: make one guest call of size bytes in the checked-echo form
//	                   (pseudo-random bytes from seed, then their FNV-1a 64), type GUEST_CALL, streamed
//	                   from a reader with SendGuestCallStream; the answer must be every byte complemented;
//	                   answer "OK" or "FAIL: ..."
//	other              checked echo: the request ends with the FNV-1a 64 of the bytes before it; the answer
//	                   is every request byte complemented, same type, end-aligned for FLATBUFFER when it
//	                   fits the slot; requests and answers of any size (a large request, §8.5, gets a large
//	                   answer); an empty request gets an empty answer; a bad checksum answers SYSTEM_ERROR
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"shmipc/shm"
)

const (
	cmdStats        = shm.MsgType(1000)
	cmdPanic        = shm.MsgType(1001)
	cmdRespondSize  = shm.MsgType(1002)
	cmdRespondType  = shm.MsgType(1003)
	cmdBlock        = shm.MsgType(1004)
	cmdGuestCalls   = shm.MsgType(1005)
	cmdGuestErrors  = shm.MsgType(1006)
	cmdGuestTimeout = shm.MsgType(1007)
	cmdHostile      = shm.MsgType(1008)
	cmdGuestLarge   = shm.MsgType(1009)

	// Guest-call types the C++ host's handler treats specially.
	hostFail         = shm.MsgType(2000) // Reply::Failure()
	hostThrow        = shm.MsgType(2001) // throws
	hostOversize     = shm.MsgType(2002) // answers capacity + 1 bytes
	hostReservedType = shm.MsgType(2003) // answers MsgType 5
	hostBlock        = shm.MsgType(2004) // blocks until the test releases it
)

var (
	handlerCalls   uint64
	heartbeatsSeen uint64
	lateAnswers    uint64
)

func fnv64(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// checkedRequest fills b with pseudo-random bytes ending in their checksum.
func checkedRequest(b []byte, rng *rand.Rand) {
	rng.Read(b[:len(b)-8])
	binary.LittleEndian.PutUint64(b[len(b)-8:], fnv64(b[:len(b)-8]))
}

func checksumOK(b []byte) bool {
	return len(b) >= 8 && binary.LittleEndian.Uint64(b[len(b)-8:]) == fnv64(b[:len(b)-8])
}

func complemented(dst, src []byte) {
	for i, c := range src {
		dst[i] = ^c
	}
}

func isComplementOf(answer, request []byte) bool {
	if len(answer) != len(request) {
		return false
	}
	for i := range answer {
		if answer[i] != ^request[i] {
			return false
		}
	}
	return true
}

// handler serves with Replies, so that the checked echo answers requests of any size.
func handler(client *shm.Client) shm.ReplyHandler {
	return func(req, respBuf []byte, t shm.MsgType) shm.Reply {
		n, rt, large := handle(client, req, respBuf, t)
		return shm.Reply{Size: n, Type: rt, Large: large}
	}
}

func handle(client *shm.Client, req, respBuf []byte, t shm.MsgType) (int32, shm.MsgType, []byte) {
	atomic.AddUint64(&handlerCalls, 1)
	switch t {
	case shm.MsgTypeHeartbeatReq:
		atomic.AddUint64(&heartbeatsSeen, 1) // must never happen: the runtime answers heartbeats
		return 0, shm.MsgTypeHeartbeatResp, nil
	case cmdStats:
		binary.LittleEndian.PutUint64(respBuf[0:], atomic.LoadUint64(&handlerCalls))
		binary.LittleEndian.PutUint64(respBuf[8:], atomic.LoadUint64(&heartbeatsSeen))
		binary.LittleEndian.PutUint64(respBuf[16:], atomic.LoadUint64(&lateAnswers))
		return 24, t, nil
	case cmdPanic:
		panic("crosspeer: the host asked for a panic")
	case cmdRespondSize:
		return int32(binary.LittleEndian.Uint32(req)), shm.MsgTypeNormal, nil
	case cmdRespondType:
		return 0, shm.MsgType(binary.LittleEndian.Uint32(req)), nil
	case cmdBlock:
		path := string(req)
		for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if _, err := os.Stat(path); err == nil {
				break
			}
		}
		n := copy(respBuf, "LATE:")
		n += copy(respBuf[n:], req)
		atomic.AddUint64(&lateAnswers, 1)
		return int32(n), shm.MsgTypeNormal, nil
	case cmdGuestCalls:
		return report(respBuf, guestCalls(client, req))
	case cmdGuestErrors:
		return report(respBuf, guestErrors(client))
	case cmdGuestTimeout:
		return report(respBuf, guestTimeout(client))
	case cmdHostile:
		return report(respBuf, hostile(client, binary.LittleEndian.Uint32(req)))
	case cmdGuestLarge:
		return report(respBuf, guestLarge(client, req))
	}
	// Checked echo. A torn or stale request would fail the checksum.
	if len(req) == 0 {
		return 0, t, nil
	}
	if !checksumOK(req) {
		return 0, shm.MsgTypeSystemError, nil
	}
	if len(req) > len(respBuf) {
		out := make([]byte, len(req))
		complemented(out, req)
		return 0, t, out
	}
	if t == shm.MsgTypeFlatbuffer {
		complemented(respBuf[len(respBuf)-len(req):], req)
		return -int32(len(req)), t, nil
	}
	complemented(respBuf, req)
	return int32(len(req)), t, nil
}

func report(respBuf []byte, err error) (int32, shm.MsgType, []byte) {
	msg := "OK"
	if err != nil {
		msg = "FAIL: " + err.Error()
	}
	return int32(copy(respBuf, msg)), shm.MsgTypeNormal, nil
}

// checkedReader yields size bytes in the checked-echo form of checkedRequest, a piece at a time: the
// pseudo-random bytes of seed, then their FNV-1a 64.
type checkedReader struct {
	rng  *rand.Rand
	left int64 // random bytes still to come
	hash uint64
	sum  []byte // the checksum's bytes not yet read
	done bool
}

func newCheckedReader(size int64, seed int64) *checkedReader {
	return &checkedReader{rng: rand.New(rand.NewSource(seed)), left: size - 8, hash: 14695981039346656037}
}

func (r *checkedReader) Read(p []byte) (int, error) {
	n := 0
	if r.left > 0 {
		k := len(p)
		if int64(k) > r.left {
			k = int(r.left)
		}
		r.rng.Read(p[:k]) // math/rand yields the same stream however it is cut
		for _, c := range p[:k] {
			r.hash ^= uint64(c)
			r.hash *= 1099511628211
		}
		r.left -= int64(k)
		n = k
		p = p[k:]
	}
	if r.left == 0 && !r.done {
		r.sum = binary.LittleEndian.AppendUint64(nil, r.hash)
		r.done = true
	}
	if r.done && len(p) > 0 {
		k := copy(p, r.sum)
		r.sum = r.sum[k:]
		n += k
	}
	if n == 0 && r.done && len(r.sum) == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// guestLarge makes one guest call of the size the request names, streamed from a checkedReader, and checks
// the answer against the same stream regenerated.
func guestLarge(client *shm.Client, req []byte) error {
	if len(req) < 16 {
		return errors.New("guest-large needs u64 size, u64 seed")
	}
	size := int64(binary.LittleEndian.Uint64(req))
	seed := int64(binary.LittleEndian.Uint64(req[8:]))
	if size < 8 || size > 1<<34 {
		return fmt.Errorf("guest-large: size %d outside 8..1<<34", size)
	}
	got, rt, err := client.SendGuestCallStream(newCheckedReader(size, seed), size, shm.MsgTypeGuestCall, nil, 60*time.Second)
	if err != nil {
		return fmt.Errorf("guest call of %d bytes (seed %d): %w", size, seed, err)
	}
	if rt != shm.MsgTypeGuestCall || int64(len(got)) != size {
		return fmt.Errorf("guest call of %d bytes: answer of %d bytes, type %v", size, len(got), rt)
	}
	want := newCheckedReader(size, seed)
	buf := make([]byte, 64<<10)
	for off := 0; off < len(got); {
		k, _ := io.ReadFull(want, buf[:min(len(buf), len(got)-off)])
		for i := 0; i < k; i++ {
			if got[off+i] != ^buf[i] {
				return fmt.Errorf("guest call of %d bytes (seed %d): answer byte %d is %#x, want %#x", size, seed,
					off+i, got[off+i], ^buf[i])
			}
		}
		off += k
	}
	return nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// oneCheckedCall makes guest call i in one of four ways and checks its answer.
func oneCheckedCall(client *shm.Client, i int, rng *rand.Rand, buf []byte) error {
	capacity := client.GuestPayloadCapacity()
	size := 8 + rng.Intn(capacity-7)
	if i%3 == 0 && capacity >= 40 { // around the 32-byte limit of payloads carried in the slot header
		size = 8 + rng.Intn(32)
	}
	types := []shm.MsgType{shm.MsgTypeNormal, shm.MsgTypeGuestCall, shm.MsgTypeAppStart, 2500, 0xFFFFFFFF}
	switch i % 4 {
	case 0, 1: // copying
		req := buf[:size]
		checkedRequest(req, rng)
		t := types[rng.Intn(len(types))]
		var got []byte
		var rt shm.MsgType
		var err error
		if i%4 == 0 {
			got, rt, err = client.SendGuestCall(req, t)
		} else {
			out := make([]byte, capacity)
			got, rt, err = client.SendGuestCallBuffer(req, out, t, -1)
		}
		if err != nil {
			return fmt.Errorf("call %d (%d bytes, %v): %w", i, size, t, err)
		}
		if rt != t || !isComplementOf(got, req) {
			return fmt.Errorf("call %d: wrong answer (%d bytes, type %v) to %d bytes of %v", i, len(got), rt, size, t)
		}
	case 2, 3: // zero copy; case 3 end-aligned both ways (FLATBUFFER)
		slot, err := client.AcquireGuestSlot(-1)
		if err != nil {
			return fmt.Errorf("call %d: acquire: %w", i, err)
		}
		defer slot.Release()
		rb := slot.RequestBuffer()
		for round := 0; round < 2; round++ { // a held slot sends again from RESPONSE
			var req []byte
			if i%4 == 3 {
				req = rb[len(rb)-size:]
				checkedRequest(req, rng)
				err = slot.SendFlatBuffer(size)
			} else {
				req = rb[:size]
				checkedRequest(req, rng)
				err = slot.Send(int32(size), shm.MsgTypeNormal)
			}
			if err != nil {
				return fmt.Errorf("call %d.%d (zero copy, %d bytes): %w", i, round, size, err)
			}
			want := append([]byte(nil), req...)
			if !isComplementOf(slot.Response(), want) {
				return fmt.Errorf("call %d.%d: wrong zero-copy answer", i, round)
			}
			if end := i%4 == 3; end != (slot.ResponseSize() < 0) {
				return fmt.Errorf("call %d.%d: answer size %d has the wrong alignment", i, round, slot.ResponseSize())
			}
		}
	}
	return nil
}

func guestCalls(client *shm.Client, req []byte) error {
	if len(req) < 16 {
		return errors.New("guest-calls needs u32 n, u32 goroutines, u64 seed")
	}
	n := int(binary.LittleEndian.Uint32(req))
	workers := int(binary.LittleEndian.Uint32(req[4:]))
	seed := int64(binary.LittleEndian.Uint64(req[8:]))
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(w)))
			buf := make([]byte, client.GuestPayloadCapacity())
			for i := w; i < n; i += workers {
				if err := oneCheckedCall(client, i, rng, buf); err != nil {
					errs <- fmt.Errorf("seed %d: %w", seed, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// expectRemote checks that err is a *RemoteError with the code.
func expectRemote(what string, err error, code shm.WireError) error {
	var re *shm.RemoteError
	if !errors.As(err, &re) || re.Code != code || !errors.Is(err, shm.ErrRemote) {
		return fmt.Errorf("%s: got %v, want a RemoteError %v", what, err, code)
	}
	return nil
}

func expectIs(what string, err, kind error) error {
	if !errors.Is(err, kind) {
		return fmt.Errorf("%s: got %v, want %v", what, err, kind)
	}
	return nil
}

func normalCallWorks(client *shm.Client, rng *rand.Rand) error {
	req := make([]byte, 64)
	checkedRequest(req, rng)
	got, _, err := client.SendGuestCall(req, shm.MsgTypeNormal)
	if err != nil || !isComplementOf(got, req) {
		return fmt.Errorf("a normal call after an error failed: %v", err)
	}
	return nil
}

func guestErrors(client *shm.Client) error {
	rng := rand.New(rand.NewSource(7))
	capacity := client.GuestPayloadCapacity()
	check := func(err error) error {
		if err != nil {
			return err
		}
		return normalCallWorks(client, rng)
	}
	_, _, err := client.SendGuestCall([]byte("x"), hostFail)
	if e := check(expectRemote("host handler failure", err, shm.WireErrHandlerFailed)); e != nil {
		return e
	}
	_, _, err = client.SendGuestCall([]byte("x"), hostThrow)
	if e := check(expectRemote("host handler throws", err, shm.WireErrHandlerFailed)); e != nil {
		return e
	}
	_, _, err = client.SendGuestCall([]byte("x"), hostOversize)
	if e := check(expectRemote("host answers too much", err, shm.WireErrResponseTooLarge)); e != nil {
		return e
	}
	_, _, err = client.SendGuestCall([]byte("x"), hostReservedType)
	if e := check(expectRemote("host answers a reserved type", err, shm.WireErrReservedType)); e != nil {
		return e
	}
	// A request of any size fits a transfer; only one the wire cannot carry is refused, before anything is sent.
	_, _, err = client.SendGuestCallStream(nil, 1<<40+1, shm.MsgTypeNormal, nil, -1)
	if e := check(expectIs("request above 1<<40", err, shm.ErrTooLarge)); e != nil {
		return e
	}
	for _, t := range []shm.MsgType{shm.MsgTypeShutdown, shm.MsgTypeSystemError, shm.MsgTypeHeartbeatResp, 5, 127} {
		_, _, err = client.SendGuestCall([]byte("x"), t)
		if e := check(expectIs(fmt.Sprintf("reserved request type %v", t), err, shm.ErrInvalidArgument)); e != nil {
			return e
		}
	}
	got, rt, err := client.SendGuestCall(nil, shm.MsgTypeHeartbeatReq)
	if err != nil || rt != shm.MsgTypeHeartbeatResp || len(got) != 0 {
		return fmt.Errorf("heartbeat to the host: %v, %v, %d bytes", err, rt, len(got))
	}
	small := make([]byte, 8)
	req := make([]byte, 64)
	checkedRequest(req, rng)
	_, _, err = client.SendGuestCallBuffer(req, small, shm.MsgTypeNormal, -1)
	if e := check(expectIs("answer longer than the caller's buffer", err, shm.ErrBufferTooSmall)); e != nil {
		return e
	}
	slot, err := client.AcquireGuestSlot(-1)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	for _, size := range []int32{int32(capacity) + 1, -int32(capacity) - 1, -1 << 31} {
		if err := expectIs(fmt.Sprintf("zero-copy size %d", size), slot.Send(size, shm.MsgTypeNormal), shm.ErrTooLarge); err != nil {
			slot.Release()
			return err
		}
	}
	// Refused sizes are never published: the slot is still held and works.
	rb := slot.RequestBuffer()
	checkedRequest(rb[:100], rng)
	if err := slot.Send(100, shm.MsgTypeNormal); err != nil || !isComplementOf(slot.Response(), rb[:100]) {
		slot.Release()
		return fmt.Errorf("zero-copy call after refused sizes: %v", err)
	}
	// A host failure on a held slot keeps the slot (the answer arrived): send again.
	if err := expectRemote("zero-copy host failure", slot.Send(1, hostFail), shm.WireErrHandlerFailed); err != nil {
		slot.Release()
		return err
	}
	checkedRequest(rb[:capacity], rng)
	if err := slot.Send(int32(capacity), shm.MsgTypeNormal); err != nil || !isComplementOf(slot.Response(), rb[:capacity]) {
		slot.Release()
		return fmt.Errorf("full-size zero-copy call after a remote error: %v", err)
	}
	slot.Release()
	if err := slot.Send(1, shm.MsgTypeNormal); !errors.Is(err, shm.ErrSlotLost) {
		return fmt.Errorf("send on a released slot: %v", err)
	}
	return nil
}

func guestTimeout(client *shm.Client) error {
	slot, err := client.AcquireGuestSlot(-1)
	if err != nil {
		return err
	}
	defer slot.Release()
	copy(slot.RequestBuffer(), "block")
	// The call must time out while the host serves it. A host that has not taken the request by the deadline (a
	// loaded machine) lets the call withdraw it instead, which keeps the slot: then again, with twice the time.
	for timeout := 50 * time.Millisecond; ; timeout *= 2 {
		err = slot.SendWithTimeout(5, hostBlock, timeout)
		if !errors.Is(err, shm.ErrTimeout) {
			return fmt.Errorf("blocked guest call: got %v, want ErrTimeout", err)
		}
		if slot.RequestBuffer() == nil { // the slot is lost: the host had taken the request
			break
		}
		if timeout > 10*time.Second {
			return errors.New("the host never took the blocked guest call")
		}
	}
	// The host was serving it: the slot is the host's until it finishes, so this GuestSlot lost it.
	if err := slot.Send(1, shm.MsgTypeNormal); !errors.Is(err, shm.ErrSlotLost) {
		return fmt.Errorf("send after an abandoned call: got %v, want ErrSlotLost", err)
	}
	if slot.Response() != nil {
		return errors.New("a lost slot still shows a response")
	}
	return nil
}

// hostile makes one guest call that the test's raw server answers with hostile answer k.
func hostile(client *shm.Client, k uint32) error {
	capacity := client.GuestPayloadCapacity()
	slot, err := client.AcquireGuestSlot(-1)
	if err != nil {
		return err
	}
	defer slot.Release()
	copy(slot.RequestBuffer(), "hostile")
	err = slot.SendWithTimeout(7, shm.MsgTypeNormal, 30*time.Second)
	switch k {
	case 0, 1, 2, 3, 4, 7, 8:
		return expectIs(fmt.Sprintf("hostile answer %d", k), err, shm.ErrProtocol)
	case 5:
		return expectRemote("unknown wire error", err, shm.WireError(99))
	case 6:
		return expectRemote("PeerRestarted", err, shm.WireErrPeerRestarted)
	case 9:
		want := bytes.Repeat([]byte{0xA5}, capacity)
		if err != nil || !bytes.Equal(slot.Response(), want) || slot.ResponseSize() != -int32(capacity) {
			return fmt.Errorf("valid end-aligned answer: %v (size %d)", err, slot.ResponseSize())
		}
		return nil
	}
	return fmt.Errorf("unknown hostile case %d", k)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: crosspeer MODE SEGMENT")
		os.Exit(2)
	}
	mode, name := os.Args[1], os.Args[2]
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "crosspeer %s: %s\n", mode, fmt.Sprintf(format, args...))
		os.Exit(1)
	}
	cfg := shm.ClientConfig{ShmName: name, ConnectionTimeout: 30 * time.Second,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }}
	if mode == "expect-already-connected" {
		// Connect retries while another guest holds the segment; a short deadline makes it report that.
		cfg.ConnectionTimeout = 500 * time.Millisecond
	}
	client, err := shm.Connect(cfg)
	if mode == "expect-already-connected" {
		if !errors.Is(err, shm.ErrGuestAlreadyConnected) {
			fail("Connect: got %v, want ErrGuestAlreadyConnected", err)
		}
		os.Exit(0)
	}
	if err != nil {
		fail("Connect: %v", err)
	}
	if err := client.StartReply(handler(client)); err != nil {
		fail("Start: %v", err)
	}
	switch mode {
	case "serve":
		if err := client.Wait(); err != nil {
			fail("Wait: %v", err)
		}
	case "expect-host-gone", "call-then-expect-host-gone":
		if mode == "call-then-expect-host-gone" { // one guest call first: the host then knows the segment is mapped
			if _, _, err := client.SendGuestCallWithTimeout([]byte("mapped"), shm.MsgTypeNormal, 30*time.Second); err != nil {
				fail("the first guest call: %v", err)
			}
		}
		if err := client.Wait(); !errors.Is(err, shm.ErrHostGone) {
			fail("Wait: got %v, want ErrHostGone", err)
		}
		if _, _, err := client.SendGuestCallWithTimeout([]byte("x"), shm.MsgTypeNormal, 30*time.Second); !errors.Is(err, shm.ErrHostGone) {
			fail("guest call to a dead host: got %v, want ErrHostGone", err)
		}
	case "shutdown-during-call":
		_, _, err := client.SendGuestCallWithTimeout([]byte("nobody serves this"), shm.MsgTypeGuestCall, 60*time.Second)
		if !errors.Is(err, shm.ErrShuttingDown) {
			fail("guest call during shutdown: got %v, want ErrShuttingDown", err)
		}
		if err := client.Wait(); err != nil {
			fail("Wait: %v", err)
		}
	default:
		fail("unknown mode")
	}
	if err := client.Close(); err != nil {
		fail("Close: %v", err)
	}
}

// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// A minimal host written in the test, speaking the handshake of SPECIFICATION.md §4 like the C++ host: the
// test process creates the segment's memfd, maps it and seals it; a child process (this test binary again,
// see TestMain) listens on the rendezvous socket and answers hellos, by default as a real host does and
// otherwise from a script of chosen, possibly hostile, replies. The child owns every host-side socket, so the
// test process's descriptors are the guest's alone (the leak checks count them), and killing the child is a
// real host death: the kernel closes its sockets. The test process serves and calls the guest through its own
// mapping. The cross-language tests in tests/crosslang run against the real C++ host.

const fakeHostEnv = "SHM_GOTEST_FAKEHOST"

func TestMain(m *testing.M) {
	if spec := os.Getenv(fakeHostEnv); spec != "" {
		os.Exit(runRendezvous(spec))
	}
	os.Exit(m.Run())
}

var nameCounter uint32

// uniqueName is a segment name unique to this process and test.
func uniqueName(t *testing.T) string {
	n := atomic.AddUint32(&nameCounter, 1)
	return fmt.Sprintf("shm-gotest-%d-%d", os.Getpid(), n)
}

// hostScript tells the rendezvous process what to do.
type hostScript struct {
	Name string
	// UID, if not 0, is the user the process becomes before it listens (the test must run as root).
	UID int
	// AcceptAfterMs delays the first accept: guests wait in the listen backlog meanwhile.
	AcceptAfterMs int
	// Replies answer the first hellos, in order; then Repeat says whether the last one answers every later
	// hello too, or the process behaves as a real host (serveHello).
	Replies []scriptedReply
	Repeat  bool
}

// scriptedReply is one answer to a hello.
type scriptedReply struct {
	Status, HostPID, Detail, Reserved uint32
	Size                              int   // bytes sent; 0 means replySize
	Fds                               []int // descriptors sent: indexes of the files handed to the process
	SplitFds                          bool  // each descriptor in a control message of its own
	Hangup                            bool  // close the connection without replying
	Silent                            bool  // never reply, and keep the connection open
}

// Descriptors 0, 1 and 2 of the rendezvous process are stdin, stdout and stderr; the files it was given
// follow.
const firstExtraFd = 3

// runRendezvous is the rendezvous process: it listens on the script's name, says "ready" on stdout, and
// answers hellos until its stdin closes (the test ended or died).
func runRendezvous(spec string) int {
	var sc hostScript
	if err := json.Unmarshal([]byte(spec), &sc); err != nil {
		fmt.Fprintln(os.Stderr, "fake host:", err)
		return 2
	}
	if sc.UID != 0 {
		if err := syscall.Setgid(sc.UID); err != nil {
			fmt.Fprintln(os.Stderr, "fake host: setgid:", err)
			return 2
		}
		if err := syscall.Setuid(sc.UID); err != nil {
			fmt.Fprintln(os.Stderr, "fake host: setuid:", err)
			return 2
		}
	}
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: "@shm/" + sc.Name, Net: "unixpacket"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake host: listen:", err)
		return 2
	}
	fmt.Println("ready")
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	time.Sleep(time.Duration(sc.AcceptAfterMs) * time.Millisecond)
	var seat seat
	var silent []*net.UnixConn // kept open, never answered
	for hellos := 0; ; hellos++ {
		conn, err := l.AcceptUnix()
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake host: accept:", err)
			return 2
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, _, _, _, err := conn.ReadMsgUnix(buf, nil)
		if err != nil {
			conn.Close()
			continue
		}
		_ = conn.SetReadDeadline(time.Time{})
		var r *scriptedReply
		if hellos < len(sc.Replies) {
			r = &sc.Replies[hellos]
		} else if sc.Repeat && len(sc.Replies) > 0 {
			r = &sc.Replies[len(sc.Replies)-1]
		}
		switch {
		case r == nil:
			serveHello(conn, buf[:n], &seat)
		case r.Silent:
			silent = append(silent, conn)
		case r.Hangup:
			conn.Close()
		default:
			sendReply(conn, *r)
			conn.Close()
		}
	}
}

// sendReply writes r to conn.
func sendReply(conn *net.UnixConn, r scriptedReply) {
	size := r.Size
	if size == 0 {
		size = replySize
	}
	b := make([]byte, 64)
	if r.HostPID == 0 {
		r.HostPID = uint32(os.Getpid())
	}
	le := binary.LittleEndian
	le.PutUint32(b[0:], r.Status)
	le.PutUint32(b[4:], r.HostPID)
	le.PutUint32(b[8:], r.Detail)
	le.PutUint32(b[12:], r.Reserved)
	var oob []byte
	if r.SplitFds {
		for _, i := range r.Fds {
			oob = append(oob, syscall.UnixRights(firstExtraFd+i)...)
		}
	} else if len(r.Fds) > 0 {
		fds := make([]int, len(r.Fds))
		for k, i := range r.Fds {
			fds[k] = firstExtraFd + i
		}
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := conn.WriteMsgUnix(b[:size], oob, nil); err != nil {
		fmt.Fprintln(os.Stderr, "fake host: reply:", err)
	}
}

// seat is the guest seat of a fake host (§4.1 step 4).
type seat struct {
	mu   sync.Mutex
	open bool
	pid  int32
}

// serveHello answers a hello as a real host does: it checks the hello, answers BUSY while a guest holds the
// seat, and otherwise hands over the segment (the first file the process was given) and keeps the connection
// as the seat until it reaches end of file.
func serveHello(conn *net.UnixConn, hello []byte, st *seat) {
	le := binary.LittleEndian
	reply := func(status, detail uint32, fds ...int) {
		b := make([]byte, replySize)
		le.PutUint32(b[0:], status)
		le.PutUint32(b[4:], uint32(os.Getpid()))
		le.PutUint32(b[8:], detail)
		var oob []byte
		if len(fds) > 0 {
			oob = syscall.UnixRights(fds...)
		}
		if _, _, err := conn.WriteMsgUnix(b, oob, nil); err != nil {
			fmt.Fprintln(os.Stderr, "fake host: reply:", err)
		}
	}
	if len(hello) != helloSize || le.Uint64(hello) != helloMagic || le.Uint32(hello[12:]) != roleGuest {
		reply(statusBadHello, 0)
		conn.Close()
		return
	}
	if v := le.Uint32(hello[8:]); v != protocolVersion {
		reply(statusVersion, protocolVersion)
		conn.Close()
		return
	}
	st.mu.Lock()
	if st.open {
		pid := st.pid
		st.mu.Unlock()
		reply(statusBusy, uint32(pid))
		conn.Close()
		return
	}
	var pid int32
	if raw, err := conn.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
				pid = cred.Pid
			}
		})
	}
	st.open, st.pid = true, pid
	st.mu.Unlock()
	reply(statusAccepted, 0, firstExtraFd)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, _, _, _, err := conn.ReadMsgUnix(buf, nil); err != nil {
				break
			}
		}
		conn.Close()
		st.mu.Lock()
		st.open = false
		st.mu.Unlock()
	}()
}

// rendezvous is a running rendezvous process.
type rendezvous struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
}

// startRendezvous starts a rendezvous process for sc, handing it files (the first one is what a real host
// hands out), and waits until it listens. The test's cleanup kills it.
func startRendezvous(t *testing.T, sc hostScript, files ...*os.File) *rendezvous {
	t.Helper()
	spec, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fakeHostEnv+"="+string(spec))
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &rendezvous{cmd: cmd, stdin: stdin}
	t.Cleanup(r.kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("the fake host did not start: %q %v", line, err)
	}
	return r
}

// kill ends the rendezvous process as a crash would: the kernel closes its listening socket and its end of
// every guest connection.
func (r *rendezvous) kill() {
	r.once.Do(func() {
		_ = r.cmd.Process.Kill()
		_ = r.stdin.Close()
		_ = r.cmd.Wait()
	})
}

// memfdCreateTrap is memfd_create's system call number, which the syscall package does not define on every
// architecture.
func memfdCreateTrap(t *testing.T) uintptr {
	switch runtime.GOARCH {
	case "amd64":
		return 319
	case "arm64", "riscv64", "loong64":
		return 279
	case "386":
		return 356
	case "arm":
		return 385
	case "ppc64", "ppc64le":
		return 360
	case "s390x":
		return 350
	}
	t.Skipf("memfd_create: no system call number known for %s", runtime.GOARCH)
	return 0
}

// newMemfd creates a memfd named "shm/<name>" of size bytes starting with contents, sealed with seals
// (0: none).
func newMemfd(t *testing.T, name string, contents []byte, size int64, seals uint32) *os.File {
	t.Helper()
	p, err := syscall.BytePtrFromString(rendezvousPrefix + name)
	if err != nil {
		t.Fatal(err)
	}
	const mfdCloexec, mfdAllowSealing = 1, 2
	fd, _, errno := syscall.Syscall(memfdCreateTrap(t), uintptr(unsafe.Pointer(p)), mfdCloexec|mfdAllowSealing, 0)
	if errno != 0 {
		t.Fatalf("memfd_create: %v", errno)
	}
	f := os.NewFile(fd, "memfd:shm/"+name)
	t.Cleanup(func() { f.Close() })
	if err := syscall.Ftruncate(int(fd), size); err != nil {
		t.Fatalf("ftruncate %d: %v", size, err)
	}
	if int64(len(contents)) > size {
		contents = contents[:size]
	}
	if len(contents) > 0 {
		if _, err := syscall.Pwrite(int(fd), contents, 0); err != nil {
			t.Fatal(err)
		}
	}
	sealMemfd(t, f, seals)
	return f
}

func sealMemfd(t *testing.T, f *os.File, seals uint32) {
	t.Helper()
	if seals == 0 {
		return
	}
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), fAddSeals, uintptr(seals)); errno != 0 {
		t.Fatalf("F_ADD_SEALS %#x: %v", seals, errno)
	}
}

// headerBytes renders a valid segment header for g.
func headerBytes(g geometry) []byte {
	b := make([]byte, segmentHeaderSize)
	var h segmentHeader
	le := binary.LittleEndian
	le.PutUint64(b[unsafe.Offsetof(h.magic):], segmentMagic)
	le.PutUint32(b[unsafe.Offsetof(h.version):], protocolVersion)
	le.PutUint32(b[unsafe.Offsetof(h.headerSize):], segmentHeaderSize)
	le.PutUint32(b[unsafe.Offsetof(h.slotHeaderSize):], slotHeaderSize)
	le.PutUint32(b[unsafe.Offsetof(h.hostSlots):], g.hostSlots)
	le.PutUint32(b[unsafe.Offsetof(h.guestSlots):], g.guestSlots)
	le.PutUint32(b[unsafe.Offsetof(h.hostPayload):], g.hostPayload)
	le.PutUint32(b[unsafe.Offsetof(h.guestPayload):], g.guestPayload)
	if g.valid() {
		le.PutUint64(b[unsafe.Offsetof(h.totalSize):], g.totalSize())
	}
	le.PutUint32(b[unsafe.Offsetof(h.hostPID):], uint32(os.Getpid()))
	return b
}

// segmentMemfd is a sealed memfd holding a valid, empty segment of geometry g, as a host hands it out.
func segmentMemfd(t *testing.T, name string, g geometry) *os.File {
	return newMemfd(t, name, headerBytes(g), int64(g.totalSize()), requiredSeals)
}

type fakeHost struct {
	t     *testing.T
	name  string
	memfd *os.File
	rdv   *rendezvous
	mem   []byte
	geo   geometry
	hdr   *segmentHeader
	slots []slotView
	stop  chan struct{}
	wg    sync.WaitGroup
}

// newFakeHost creates a segment of geometry g as a host does (§3: sized, every header field, magic last,
// sealed) and serves it on a rendezvous process.
func newFakeHost(t *testing.T, g geometry) *fakeHost {
	t.Helper()
	name := uniqueName(t)
	// The segment, then its counters region (§5.4), as a host makes them.
	size := g.totalSize() + g.countersSize()
	f := newMemfd(t, name, nil, int64(size), 0)
	mem, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{t: t, name: name, memfd: f, mem: mem, geo: g, stop: make(chan struct{})}
	copy(mem[8:], headerBytes(g)[8:]) // everything but the magic
	cnt := mem[g.totalSize():]
	le := binary.LittleEndian
	le.PutUint64(cnt[0:], countersMagic)
	le.PutUint32(cnt[8:], countersVersion)
	le.PutUint32(cnt[12:], countersHeaderSize)
	le.PutUint32(cnt[16:], counterBlockSize)
	le.PutUint32(cnt[20:], g.slotCount())
	le.PutUint64(cnt[24:], g.countersSize())
	h.hdr = (*segmentHeader)(unsafe.Pointer(&mem[0]))
	for i := uint32(0); i < g.slotCount(); i++ {
		c := uint64(g.capacity(i))
		off := g.requestOffset(i)
		h.slots = append(h.slots, slotView{
			h:   (*slotHeader)(unsafe.Pointer(&mem[uint64(segmentHeaderSize)+uint64(slotHeaderSize)*uint64(i)])),
			req: mem[off : off+c : off+c], resp: mem[off+c : off+2*c : off+2*c], capacity: uint32(c), index: i,
		})
	}
	atomic.StoreUint64(&h.hdr.magic, segmentMagic) // last
	sealMemfd(t, f, requiredSeals)
	t.Cleanup(func() {
		h.stopServing()
		_ = syscall.Munmap(mem)
	})
	h.rdv = startRendezvous(t, hostScript{Name: name}, f)
	return h
}

// call makes one host call on host slot i and returns the answer (or the SYSTEM_ERROR code).
func (h *fakeHost) call(i uint32, req []byte, size int32, t MsgType, timeout time.Duration) ([]byte, MsgType, WireError, error) {
	s := &h.slots[i]
	var seq uint32
	var ok bool
	for end := time.Now().Add(timeout); ; time.Sleep(50 * time.Microsecond) {
		if seq, ok = tryClaim(s.h); ok {
			break
		}
		if time.Now().After(end) {
			return nil, 0, 0, fmt.Errorf("slot %d stayed busy", i)
		}
	}
	defer func() { release(s.h, seq) }()
	// req is laid out as the buffer would hold it; a small request travels in the header (§8.1).
	copy(s.req, req)
	stageInline(s, size)
	atomic.StoreUint32(&s.h.reqType, uint32(t))
	atomic.StoreUint32(&s.h.reqSize, uint32(size))
	tx, _, ok := publish(s.h, seq)
	if !ok {
		return nil, 0, 0, fmt.Errorf("publish failed")
	}
	seq = tx
	w, st := waitFor(&s.h.ctl, &s.h.wakeStampNs, monoNow()+int64(timeout), newSpinPolicy(),
		func(w uint32) bool { return ctlSeq(w) != tx || ctlState(w) >= stateResponse },
		func(bool) bool { return false }, ctlWaiting, startSpin, nil, nil)
	if st != waitReady {
		if cancel(s.h, tx) == cancelAbandoned {
			seq = 0xFFFFFFFF // not ours any more: the deferred release does nothing
		}
		return nil, 0, 0, fmt.Errorf("timeout")
	}
	if ctlState(w) != stateResponse || ctlSeq(w) != tx {
		return nil, 0, 0, fmt.Errorf("word %#x", w)
	}
	rt := MsgType(atomic.LoadUint32(&s.h.respType))
	if rt == MsgTypeSystemError {
		return nil, rt, WireError(atomic.LoadUint32(&s.h.respError)), nil
	}
	data, ok := messageBytes(s.h, s.resp, s.capacity, int32(atomic.LoadUint32(&s.h.respSize)))
	if !ok {
		return nil, rt, 0, fmt.Errorf("bad response size")
	}
	return append([]byte(nil), data...), rt, 0, nil
}

// serveGuestCalls answers guest calls until the test ends: every request byte complemented, same type; a
// large request (§8.5) is assembled from its chunks, checked strictly, and a large answer sent in chunks as
// the caller asks for them. answer can override that for any request, chunks included (return false to use
// the default); it runs on the serving goroutine, which owns s until it returns.
func (h *fakeHost) serveGuestCalls(answer func(s *slotView, req []byte, t MsgType) bool) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tr := make(map[uint32]*hostTransfer)
		var scratch []byte // reused, so that allocation tests count the guest's allocations only
		for {
			select {
			case <-h.stop:
				return
			default:
			}
			served := false
			for i := h.geo.hostSlots; i < h.geo.slotCount(); i++ {
				s := &h.slots[i]
				seq, ok := tryTake(s.h)
				if !ok {
					continue
				}
				served = true
				t := MsgType(atomic.LoadUint32(&s.h.reqType))
				size := int32(atomic.LoadUint32(&s.h.reqSize))
				req, ok := messageBytes(s.h, s.req, s.capacity, size)
				switch {
				case answer != nil && answer(s, req, t):
				case t == MsgTypeChunk || t == MsgTypeChunkNext:
					if tr[i] == nil {
						tr[i] = &hostTransfer{}
					}
					tr[i].serve(s, size, t)
				case !ok:
					writeErrorResponse(s.h, WireErrRequestTooLarge)
				case t == fakeBigAnswer && len(req) == 8:
					// An answer of the u64 size asked for: pattern bytes, large if need be.
					tr[i] = &hostTransfer{}
					tr[i].reply(s, pattern(int(binary.LittleEndian.Uint64(req))), t)
				default:
					delete(tr, i)
					local := append(scratch[:0], req...) // a small answer overwrites the request (§8.1)
					scratch = local
					dst, _ := messageBytes(s.h, s.resp, s.capacity, int32(len(local)))
					for j := range local {
						dst[j] = ^local[j]
					}
					atomic.StoreUint32(&s.h.respType, uint32(t))
					atomic.StoreUint32(&s.h.respSize, uint32(len(local)))
					atomic.StoreUint32(&s.h.respError, 0)
				}
				complete(s.h, seq)
			}
			if !served {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
}

// fakeBigAnswer asks the fake host for an answer of the size the request's u64 names (pattern bytes).
const fakeBigAnswer MsgType = 3000

// pattern is n bytes no two neighbouring chunks of which look alike.
func pattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(n) | 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// hostTransfer is the fake host's transfer state of one guest slot: the request it assembles, then the
// answer it sends.
type hostTransfer struct {
	in       []byte
	inID     uint64
	inType   MsgType
	received uint64
	out      []byte
	outID    uint64
	outType  MsgType
	sent     uint64
	// Requests counts the chunks and CHUNK_NEXTs taken, for tests that look.
	requests int
	keep     []byte // the last request's memory, reused
}

var fakeStreamIDs uint64 = 1 << 32

// serve answers one CHUNK or CHUNK_NEXT on s, checking the guest kept every rule of §8.5.
func (x *hostTransfer) serve(s *slotView, size int32, t MsgType) {
	x.requests++
	fail := func() {
		*x = hostTransfer{requests: x.requests, keep: x.keep}
		writeErrorResponse(s.h, WireErrStreamInvalid)
	}
	if t == MsgTypeChunkNext {
		var raw [16]byte
		copy(raw[:], s.h.inlineData[:16])
		l := leBytes{raw[:]}
		if size != 16 || x.out == nil || l.u64(0) != x.outID || l.u64(8) != x.sent {
			fail()
			return
		}
		x.sendChunk(s)
		return
	}
	ck := readChunkHeader(s.h)
	x.out = nil
	if !chunkFits(ck, size, s.capacity) || ck.reserved != 0 {
		fail()
		return
	}
	if ck.offset == 0 {
		if !IsResponseType(MsgType(ck.msgType)) {
			*x = hostTransfer{requests: x.requests, keep: x.keep}
			writeErrorResponse(s.h, WireErrReservedType)
			return
		}
		if uint64(cap(x.keep)) < ck.total {
			x.keep = make([]byte, ck.total)
		}
		x.in, x.inID, x.inType, x.received = x.keep[:ck.total], ck.streamID, MsgType(ck.msgType), 0
	} else if x.in == nil || ck.streamID != x.inID || ck.total != uint64(len(x.in)) || MsgType(ck.msgType) != x.inType ||
		ck.offset != x.received {
		fail()
		return
	}
	x.received += uint64(copy(x.in[ck.offset:], s.req[:size]))
	if x.received < ck.total {
		atomic.StoreUint32(&s.h.respType, uint32(MsgTypeChunkAck))
		atomic.StoreUint32(&s.h.respSize, 0)
		atomic.StoreUint32(&s.h.respError, 0)
		return
	}
	msg := x.in
	x.in = nil
	for j := range msg {
		msg[j] = ^msg[j]
	}
	x.reply(s, msg, x.inType)
}

// reply answers msg of type t: plainly if it fits, else chunk 0 of a new stream.
func (x *hostTransfer) reply(s *slotView, msg []byte, t MsgType) {
	if len(msg) <= int(s.capacity) {
		dst, _ := messageBytes(s.h, s.resp, s.capacity, int32(len(msg)))
		copy(dst, msg)
		atomic.StoreUint32(&s.h.respType, uint32(t))
		atomic.StoreUint32(&s.h.respSize, uint32(len(msg)))
		atomic.StoreUint32(&s.h.respError, 0)
		return
	}
	x.out, x.outID, x.outType, x.sent = msg, atomic.AddUint64(&fakeStreamIDs, 1), t, 0
	x.sendChunk(s)
}

func (x *hostTransfer) sendChunk(s *slotView) {
	total := uint64(len(x.out))
	n := chunkLen(s.capacity, total, x.sent)
	copy(s.resp, x.out[x.sent:x.sent+n])
	writeChunkHeader(s.h, chunkHeader{streamID: x.outID, total: total, offset: x.sent, msgType: uint32(x.outType)})
	atomic.StoreUint32(&s.h.respType, uint32(MsgTypeChunk))
	atomic.StoreUint32(&s.h.respSize, uint32(n))
	atomic.StoreUint32(&s.h.respError, 0)
	if x.sent += n; x.sent == total {
		x.out = nil
	}
}

// hostCaller is the fake host's caller side on host slot i, keeping the slot across transactions as a
// transfer does.
type hostCaller struct {
	h   *fakeHost
	s   *slotView
	seq uint32
	own bool
}

// claim takes host slot i (T1), waiting up to a second.
func (h *fakeHost) claim(t *testing.T, i uint32) *hostCaller {
	t.Helper()
	s := &h.slots[i]
	for end := time.Now().Add(time.Second); ; time.Sleep(50 * time.Microsecond) {
		if seq, ok := tryClaim(s.h); ok {
			return &hostCaller{h: h, s: s, seq: seq, own: true}
		}
		if time.Now().After(end) {
			t.Fatalf("host slot %d stayed busy", i)
		}
	}
}

// release gives the slot back if it is still the caller's.
func (k *hostCaller) release() {
	if k.own {
		release(k.s.h, k.seq)
		k.own = false
	}
}

// hostAnswer is one answer the fake host's caller read: its fields once, and a copy of the inline field and
// of the bytes [0, size) of the response buffer.
type hostAnswer struct {
	typ    MsgType
	size   int32
	code   WireError
	inline [32]byte
	data   []byte
}

// tx publishes one request (reqType, reqSize; inline and buffer bytes as given, nil: left as they are) and
// waits for its answer. A timeout cancels the request (the slot may then be lost).
func (k *hostCaller) tx(reqType MsgType, reqSize int32, inline []byte, buf []byte, timeout time.Duration) (hostAnswer, error) {
	s := k.s
	if !k.own {
		return hostAnswer{}, fmt.Errorf("slot lost")
	}
	if inline != nil {
		copy(s.h.inlineData[:], inline)
	}
	copy(s.req, buf)
	atomic.StoreUint32(&s.h.reqType, uint32(reqType))
	atomic.StoreUint32(&s.h.reqSize, uint32(reqSize))
	tx, _, ok := publish(s.h, k.seq)
	if !ok {
		k.own = false
		return hostAnswer{}, fmt.Errorf("publish failed")
	}
	k.seq = tx
	w, st := waitFor(&s.h.ctl, &s.h.wakeStampNs, monoNow()+int64(timeout), newSpinPolicy(),
		func(w uint32) bool { return ctlSeq(w) != tx || ctlState(w) >= stateResponse },
		func(bool) bool { return false }, ctlWaiting, startSpin, nil, nil)
	if st != waitReady {
		switch cancel(s.h, tx) {
		case cancelWithdrawn:
		case cancelAnswered:
			w = atomic.LoadUint32(&s.h.ctl)
			goto answered
		default:
			k.own = false
		}
		return hostAnswer{}, fmt.Errorf("timeout")
	}
answered:
	if ctlState(w) != stateResponse || ctlSeq(w) != tx {
		k.own = false
		return hostAnswer{}, fmt.Errorf("word %#x", w)
	}
	var a hostAnswer
	a.typ = MsgType(atomic.LoadUint32(&s.h.respType))
	a.size = int32(atomic.LoadUint32(&s.h.respSize))
	a.code = WireError(atomic.LoadUint32(&s.h.respError))
	copy(a.inline[:], s.h.inlineData[:])
	if a.size > 0 && uint32(a.size) <= s.capacity {
		a.data = append([]byte(nil), s.resp[:a.size]...)
	}
	return a, nil
}

// chunk publishes one CHUNK request with header ck and data (len(data) is the size field unless size != 0).
func (k *hostCaller) chunk(ck chunkHeader, data []byte, size int32, timeout time.Duration) (hostAnswer, error) {
	if size == 0 {
		size = int32(len(data))
	}
	raw := ck.encode()
	return k.tx(MsgTypeChunk, size, raw[:], data, timeout)
}

// chunkNext publishes a CHUNK_NEXT for (id, offset).
func (k *hostCaller) chunkNext(id, offset uint64, timeout time.Duration) (hostAnswer, error) {
	var raw [16]byte
	putU64(raw[0:], id)
	putU64(raw[8:], offset)
	return k.tx(MsgTypeChunkNext, 16, raw[:], nil, timeout)
}

// callLarge makes one whole call of req (any size) and type t on host slot i as the C++ host does: plainly
// if it fits, else in chunks; a large answer is fetched with CHUNK_NEXT. It returns the answer, or the
// SYSTEM_ERROR code of the transaction that failed.
func (h *fakeHost) callLarge(t *testing.T, i uint32, req []byte, typ MsgType, timeout time.Duration) ([]byte, MsgType, WireError, error) {
	t.Helper()
	k := h.claim(t, i)
	defer k.release()
	c := uint64(k.s.capacity)
	var a hostAnswer
	var err error
	if uint64(len(req)) <= c {
		copy(k.s.req, req)
		stageInline(k.s, int32(len(req)))
		a, err = k.tx(typ, int32(len(req)), nil, nil, timeout)
		if err == nil && a.typ != MsgTypeChunk && a.typ != MsgTypeSystemError {
			data, ok := messageBytes(k.s.h, k.s.resp, k.s.capacity, a.size)
			if !ok {
				return nil, a.typ, 0, fmt.Errorf("bad answer size %d", a.size)
			}
			return append([]byte(nil), data...), a.typ, 0, nil
		}
	} else {
		id := atomic.AddUint64(&fakeStreamIDs, 1)
		total := uint64(len(req))
		for off := uint64(0); off < total; {
			n := chunkLen(k.s.capacity, total, off)
			a, err = k.chunk(chunkHeader{streamID: id, total: total, offset: off, msgType: uint32(typ)}, req[off:off+n], 0, timeout)
			off += n
			if err != nil || a.typ == MsgTypeSystemError {
				break
			}
			if off < total && (a.typ != MsgTypeChunkAck || a.size != 0) {
				return nil, a.typ, 0, fmt.Errorf("answer %v (size %d) to a chunk at %d", a.typ, a.size, off-n)
			}
		}
		if err == nil && a.typ != MsgTypeChunk && a.typ != MsgTypeSystemError {
			data, ok := messageBytes(k.s.h, k.s.resp, k.s.capacity, a.size)
			if !ok {
				return nil, a.typ, 0, fmt.Errorf("bad answer size %d", a.size)
			}
			return append([]byte(nil), data...), a.typ, 0, nil
		}
	}
	if err != nil {
		return nil, 0, 0, err
	}
	if a.typ == MsgTypeSystemError {
		return nil, a.typ, a.code, nil
	}
	// A large answer: chunk 0 is here.
	first := decodeChunkHeader(&a.inline)
	if !chunkFits(first, a.size, k.s.capacity) || first.offset != 0 {
		return nil, 0, 0, fmt.Errorf("broken first chunk %+v size %d", first, a.size)
	}
	out := make([]byte, 0, first.total)
	out = append(out, a.data...)
	for uint64(len(out)) < first.total {
		a, err = k.chunkNext(first.streamID, uint64(len(out)), timeout)
		if err != nil {
			return nil, 0, 0, err
		}
		if a.typ == MsgTypeSystemError {
			return nil, a.typ, a.code, nil
		}
		ck := decodeChunkHeader(&a.inline)
		if a.typ != MsgTypeChunk || ck.streamID != first.streamID || ck.total != first.total ||
			ck.msgType != first.msgType || ck.offset != uint64(len(out)) || !chunkFits(ck, a.size, k.s.capacity) {
			return nil, 0, 0, fmt.Errorf("broken chunk %+v size %d type %v at %d", ck, a.size, a.typ, len(out))
		}
		out = append(out, a.data...)
	}
	return out, MsgType(first.msgType), 0, nil
}

func (h *fakeHost) stopServing() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.wg.Wait()
}

// shutdown is the host's SendShutdown (SPECIFICATION.md §9).
func (h *fakeHost) shutdown() {
	atomic.StoreUint32(&h.hdr.hostState, hostShuttingDown)
	for i := range h.slots {
		nudge(&h.slots[i].h.ctl)
	}
	for {
		d := atomic.LoadUint32(&h.hdr.doorbell)
		if atomic.CompareAndSwapUint32(&h.hdr.doorbell, d, (d+doorbellIncrement)&^doorbellWaiting) {
			futexWakeAll(&h.hdr.doorbell, d)
			return
		}
	}
}

// die kills the host's rendezvous process: the kernel closes the guest connection's host end, as when a host
// dies. The segment memory stays mapped here.
func (h *fakeHost) die() { h.rdv.kill() }

// openCounts returns the number of open descriptors and of mappings of shm-gotest segment memfds.
func openCounts(t *testing.T) (fds, maps int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "/memfd:"+rendezvousPrefix+"shm-gotest-") {
			maps++
		}
	}
	return len(ents), maps
}

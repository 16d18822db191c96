// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

var smallGeometry = geometry{hostSlots: 2, guestSlots: 2, hostPayload: 256, guestPayload: 128}

func TestValidateHeader(t *testing.T) {
	g := smallGeometry
	total := int64(g.totalSize())
	var h segmentHeader
	set32 := func(off uintptr, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	cases := []struct {
		name     string
		mutate   func([]byte) []byte
		fileSize int64
		want     error
	}{
		{"valid", nil, total, nil},
		{"short copy", func(b []byte) []byte { return b[:255] }, total, ErrTruncated},
		{"short file", nil, 200, ErrTruncated},
		{"file shorter than total", nil, total - 1, ErrTruncated},
		{"bad magic", func(b []byte) []byte { b[0] ^= 1; return b }, total, ErrBadMagic},
		{"zero magic", func(b []byte) []byte { copy(b, make([]byte, 8)); return b }, total, ErrBadMagic},
		{"version 1", set32(unsafe.Offsetof(h.version), 1), total, ErrVersionMismatch},
		{"version 2", set32(unsafe.Offsetof(h.version), 2), total, ErrVersionMismatch},
		{"version 0", set32(unsafe.Offsetof(h.version), 0), total, ErrVersionMismatch},
		{"header size", set32(unsafe.Offsetof(h.headerSize), 128), total, ErrBadGeometry},
		{"slot header size", set32(unsafe.Offsetof(h.slotHeaderSize), 128), total, ErrBadGeometry},
		{"flags", set32(unsafe.Offsetof(h.flags), 1), total, ErrBadGeometry},
		{"no host slots", set32(unsafe.Offsetof(h.hostSlots), 0), total, ErrBadGeometry},
		{"too many host slots", set32(unsafe.Offsetof(h.hostSlots), 4097), total, ErrBadGeometry},
		{"too many guest slots", set32(unsafe.Offsetof(h.guestSlots), 4097), total, ErrBadGeometry},
		{"payload not a multiple of 64", set32(unsafe.Offsetof(h.hostPayload), 100), total, ErrBadGeometry},
		{"payload too small", set32(unsafe.Offsetof(h.hostPayload), 0), total, ErrBadGeometry},
		{"payload too large", set32(unsafe.Offsetof(h.guestPayload), 1<<30+64), total, ErrBadGeometry},
		{"guest payload without guest slots", set32(unsafe.Offsetof(h.guestSlots), 0), total, ErrBadGeometry},
		{"total size", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], uint64(total)+4096)
			return b
		}, total + 4096, ErrBadGeometry},
		{"over the segment size limit", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostSlots):], 4096)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.guestSlots):], 0)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostPayload):], 1<<30)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.guestPayload):], 0)
			binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], geometry{4096, 0, 1 << 30, 0}.totalSize())
			return b
		}, 4096, ErrBadGeometry},
		{"huge total size", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], 1<<62)
			return b
		}, 1 << 62, ErrBadGeometry},
	}
	for _, c := range cases {
		b := headerBytes(g)
		if c.mutate != nil {
			b = c.mutate(b)
		}
		got, err := validateHeader(b, c.fileSize)
		if c.want == nil {
			if err != nil || got != g {
				t.Errorf("%s: %v, %+v", c.name, err, got)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if c.want != ErrVersionMismatch && !errors.Is(err, ErrInvalidSegment) {
			t.Errorf("%s: %v does not match ErrInvalidSegment", c.name, err)
		}
	}
}

// host builds the setup of a connect case: a rendezvous process for a script, handed files.
type hostSetup func(t *testing.T, name string)

func scripted(sc hostScript, files ...func(t *testing.T, name string) *os.File) hostSetup {
	return func(t *testing.T, name string) {
		sc.Name = name
		fs := make([]*os.File, len(files))
		for i, f := range files {
			fs[i] = f(t, name)
		}
		startRendezvous(t, sc, fs...)
	}
}

// always answers every hello with r.
func always(r scriptedReply, files ...func(t *testing.T, name string) *os.File) hostSetup {
	return scripted(hostScript{Replies: []scriptedReply{r}, Repeat: true}, files...)
}

// realHost serves the file like a real host (BUSY while a guest is attached).
func realHost(file func(t *testing.T, name string) *os.File) hostSetup {
	return scripted(hostScript{}, file)
}

// validSegment is a memfd a host would hand out.
func validSegment(t *testing.T, name string) *os.File { return segmentMemfd(t, name, smallGeometry) }

// memfdOf makes a memfd of size bytes starting with header, sealed with seals.
func memfdOf(header []byte, size int64, seals uint32) func(t *testing.T, name string) *os.File {
	return func(t *testing.T, name string) *os.File { return newMemfd(t, name, header, size, seals) }
}

func accepted(fds ...int) scriptedReply { return scriptedReply{Status: statusAccepted, Fds: fds} }

// Every failed Connect must fail with its own error and leave no descriptor and no mapping behind, whichever
// step of §4.2 failed.
func TestFailedConnectLeaksNothing(t *testing.T) {
	g := smallGeometry
	total := int64(g.totalSize())
	var h segmentHeader
	with := func(mutate func([]byte)) []byte {
		b := headerBytes(g)
		mutate(b)
		return b
	}
	regularFile := func(t *testing.T, name string) *os.File {
		f, err := os.CreateTemp(t.TempDir(), name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(headerBytes(g)); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(total); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	pipe := func(t *testing.T, name string) *os.File {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		return r
	}
	cases := []struct {
		name  string
		setup hostSetup
		want  error
		text  string // the error's text must contain this
	}{
		// §1: names.
		{"absent", nil, ErrNotFound, "no host listens"},
		{"bad name", nil, ErrInvalidArgument, ""},
		{"empty name", nil, ErrInvalidArgument, ""},
		{"dot dot", nil, ErrInvalidArgument, ""},
		{"name of 101 bytes", nil, ErrInvalidArgument, ""},
		// §4.2 step 1 and 3: no host (yet), retried until the deadline.
		{"listens but never accepts", scripted(hostScript{AcceptAfterMs: 60000}), ErrNotFound, "did not answer"},
		{"never replies", always(scriptedReply{Silent: true}), ErrNotFound, "did not answer"},
		{"hangs up before replying", always(scriptedReply{Hangup: true}), ErrNotFound, "closed the connection"},
		{"shutting down", always(scriptedReply{Status: statusShuttingDown}), ErrNotFound, "shutting down"},
		{"busy", always(scriptedReply{Status: statusBusy, Detail: 424242}), ErrGuestAlreadyConnected, "pid 424242"},
		// Final answers.
		{"denied", always(scriptedReply{Status: statusDenied}), ErrPermissionDenied, "does not admit"},
		{"version", always(scriptedReply{Status: statusVersion, Detail: 4}), ErrVersionMismatch, "version 4"},
		{"bad hello", always(scriptedReply{Status: statusBadHello}), ErrProtocol, "BAD_HELLO"},
		{"unknown status", always(scriptedReply{Status: 6, Fds: []int{0}}, validSegment), ErrProtocol, ""},
		{"unknown status without a descriptor", always(scriptedReply{Status: 99}), ErrProtocol, "status 99"},
		// A malformed reply, even one that carries a valid segment, is refused.
		{"reply of 15 bytes", always(scriptedReply{Status: statusAccepted, Fds: []int{0}, Size: 15}, validSegment), ErrProtocol, "15 bytes"},
		{"reply of 17 bytes", always(scriptedReply{Status: statusAccepted, Fds: []int{0}, Size: 17}, validSegment), ErrProtocol, "more than 16"},
		{"reply of 64 bytes", always(scriptedReply{Status: statusAccepted, Fds: []int{0}, Size: 64}, validSegment), ErrProtocol, "more than 16"},
		{"reserved not zero", always(scriptedReply{Status: statusAccepted, Fds: []int{0}, Reserved: 1}, validSegment), ErrProtocol, "reserved"},
		{"accepted without a descriptor", always(accepted()), ErrProtocol, "0 descriptors"},
		{"accepted with two descriptors", always(accepted(0, 0), validSegment), ErrProtocol, "2 descriptors"},
		{"accepted with two different descriptors", always(accepted(0, 1), validSegment, validSegment), ErrProtocol, "2 descriptors"},
		{"accepted with a descriptor in each of two messages", always(scriptedReply{Status: statusAccepted, Fds: []int{0, 0}, SplitFds: true}, validSegment), ErrProtocol, "2 descriptors"},
		{"accepted with twenty descriptors", always(accepted(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), validSegment), ErrProtocol, "more than 16 descriptors"},
		{"busy with a descriptor", always(scriptedReply{Status: statusBusy, Fds: []int{0}}, validSegment), ErrProtocol, "BUSY with 1"},
		{"denied with a descriptor", always(scriptedReply{Status: statusDenied, Fds: []int{0}}, validSegment), ErrProtocol, "DENIED with 1"},
		// §4.2 step 4: the descriptor.
		{"not a regular file", always(accepted(0), pipe), ErrProtocol, "not a regular file"},
		{"a file that cannot be sealed", always(accepted(0), regularFile), ErrProtocol, "without seals"},
		{"unsealed memfd", always(accepted(0), memfdOf(headerBytes(g), total, 0)), ErrProtocol, "seals 0x0"},
		{"no F_SEAL_SEAL", always(accepted(0), memfdOf(headerBytes(g), total, sealShrink|sealGrow)), ErrProtocol, "seals 0x6"},
		{"no F_SEAL_SHRINK", always(accepted(0), memfdOf(headerBytes(g), total, sealGrow|sealSeal)), ErrProtocol, "seals 0x5"},
		{"no F_SEAL_GROW", always(accepted(0), memfdOf(headerBytes(g), total, sealShrink|sealSeal)), ErrProtocol, "seals 0x3"},
		{"F_SEAL_WRITE", always(accepted(0), memfdOf(headerBytes(g), total, requiredSeals|sealWrite)), ErrProtocol, "seals 0xf"},
		{"F_SEAL_FUTURE_WRITE", always(accepted(0), memfdOf(headerBytes(g), total, requiredSeals|sealFutureWrite)), ErrProtocol, "seals 0x17"},
		// §4.2 step 5: the size, then the header.
		{"memfd smaller than a header", always(accepted(0), memfdOf(headerBytes(g), 100, requiredSeals)), ErrTruncated, "100 bytes"},
		{"memfd over 1 TiB", always(accepted(0), memfdOf(headerBytes(g), 1<<40+4096, requiredSeals)), ErrBadGeometry, "over the"},
		{"bad magic", always(accepted(0), memfdOf(with(func(b []byte) { b[7] = 'X' }), total, requiredSeals)), ErrBadMagic, ""},
		{"zero magic", always(accepted(0), memfdOf(with(func(b []byte) { copy(b, make([]byte, 8)) }), total, requiredSeals)), ErrBadMagic, "0x0"},
		{"wrong version", always(accepted(0), memfdOf(with(func(b []byte) { binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.version):], 1) }), total, requiredSeals)), ErrVersionMismatch, ""},
		{"bad geometry", always(accepted(0), memfdOf(with(func(b []byte) { binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostSlots):], 0) }), total, requiredSeals)), ErrBadGeometry, ""},
		{"memfd shorter than total_size", always(accepted(0), memfdOf(headerBytes(g), total-4096, requiredSeals)), ErrTruncated, "its header says"},
		{"memfd of the header only", always(accepted(0), memfdOf(headerBytes(g), 256, requiredSeals)), ErrTruncated, "its header says"},
	}
	if os.Geteuid() == 0 {
		// §4.2 step 2: a host of another user is refused before the hello, whatever it would answer.
		cases = append(cases, struct {
			name  string
			setup hostSetup
			want  error
			text  string
		}{"host of another user", scripted(hostScript{UID: 65534}, validSegment), ErrPermissionDenied, "uid 65534"})
	}
	// Warm up whatever the runtime opens lazily, then measure.
	_, _ = Connect(ClientConfig{ShmName: "shm-gotest-absent", ConnectionTimeout: time.Millisecond})
	for _, c := range cases {
		c := c
		t.Run(c.name, func(t *testing.T) {
			name := uniqueName(t)
			switch c.name {
			case "bad name":
				name = "a/b"
			case "empty name":
				name = ""
			case "dot dot":
				name = ".."
			case "name of 101 bytes":
				name = strings.Repeat("n", 101)
			}
			if c.setup != nil {
				c.setup(t, name)
			}
			fds, maps := openCounts(t)
			start := time.Now()
			client, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 2 * time.Second,
				RetryInterval: 5 * time.Millisecond})
			if err == nil {
				client.Close()
				t.Fatal("Connect succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want %v saying %q", err, c.want, c.text)
			}
			if time.Since(start) > 20*time.Second {
				t.Errorf("Connect took %v with a 300 ms deadline", time.Since(start))
			}
			if fds2, maps2 := openCounts(t); fds2 != fds || maps2 != maps {
				t.Fatalf("leak: %d->%d descriptors, %d->%d segment mappings (%v)", fds, fds2, maps, maps2, err)
			}
		})
	}
}

// The answers that mean "not now" are retried: a host that first answers SHUTTING_DOWN, hangs up, or is busy,
// and then accepts, gets its guest.
func TestConnectRetriesUntilAccepted(t *testing.T) {
	for _, first := range []struct {
		name  string
		reply scriptedReply
	}{
		{"shutting down", scriptedReply{Status: statusShuttingDown}},
		{"hang up", scriptedReply{Hangup: true}},
		{"busy", scriptedReply{Status: statusBusy, Detail: 7}},
	} {
		t.Run(first.name, func(t *testing.T) {
			name := uniqueName(t)
			startRendezvous(t, hostScript{Name: name, Replies: []scriptedReply{first.reply, first.reply}},
				segmentMemfd(t, name, smallGeometry))
			c, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 30 * time.Second,
				RetryInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			if c.GuestSlots() != int(smallGeometry.guestSlots) {
				t.Errorf("%d guest slots", c.GuestSlots())
			}
			c.Close()
		})
	}
}

func TestNameLimits(t *testing.T) {
	for _, n := range []string{"a", strings.Repeat("x", maxNameLen), "A-Z_a.z-09", "..."} {
		if !validName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range []string{"", ".", "..", strings.Repeat("x", maxNameLen+1), "a/b", "a\x00", "a b", "é"} {
		if validName(n) {
			t.Errorf("%q accepted", n)
		}
	}
	// The longest name is a valid abstract address (5 + 100 bytes after the family) and can be attached.
	name := uniqueName(t)
	name += strings.Repeat("L", maxNameLen-len(name))
	startRendezvous(t, hostScript{Name: name}, segmentMemfd(t, name, smallGeometry))
	c, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestConnectCloseReleasesEverything(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	fds, maps := openCounts(t)
	for i := 1; i <= 3; i++ {
		c, err := Connect(ClientConfig{ShmName: h.name, ConnectionTimeout: math.MaxInt64})
		if err != nil {
			t.Fatal(err)
		}
		// One descriptor, the guest connection (the memfd is closed once mapped), and one mapping.
		if f, m := openCounts(t); f != fds+1 || m != maps+1 {
			t.Fatalf("connected: %d descriptors, %d mappings; want %d, %d", f, m, fds+1, maps+1)
		}
		if got := atomic.LoadUint32(&h.hdr.guestSession); got != uint32(i) {
			t.Errorf("guest_session %d, want %d", got, i)
		}
		if got := atomic.LoadUint32(&h.hdr.guestPID); got != uint32(os.Getpid()) {
			t.Errorf("guest_pid %d", got)
		}
		if !c.HostAlive() {
			t.Error("HostAlive is false with a live host")
		}
		_, err = Connect(ClientConfig{ShmName: h.name, ConnectionTimeout: 2 * time.Second})
		if !errors.Is(err, ErrGuestAlreadyConnected) || !strings.Contains(err.Error(), "pid "+utoa(uint64(os.Getpid()))) {
			t.Errorf("second guest: %v", err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil { // idempotent
			t.Fatal(err)
		}
		if f, m := openCounts(t); f != fds || m != maps {
			t.Fatalf("closed: %d descriptors, %d mappings; want %d, %d", f, m, fds, maps)
		}
		if _, _, err := c.SendGuestCall(nil, MsgTypeNormal); !errors.Is(err, ErrClosed) {
			t.Errorf("call after Close: %v", err)
		}
		if err := c.Start(func([]byte, []byte, MsgType) (int32, MsgType) { return 0, 0 }); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: %v", err)
		}
		if c.HostAlive() {
			t.Error("HostAlive after Close")
		}
	}
}

// A guest that connects before the host serves waits in the listen backlog, and one that starts before the
// host exists retries until it appears.
func TestConnectWaitsForTheHost(t *testing.T) {
	name := uniqueName(t)
	done := make(chan error, 1)
	go func() {
		c, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 30 * time.Second, RetryInterval: time.Millisecond})
		if err == nil {
			err = c.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	startRendezvous(t, hostScript{Name: name, AcceptAfterMs: 100}, segmentMemfd(t, name, smallGeometry))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Connect did not return")
	}
}

// The guest's liveness test of its host (§2): only end of file (or a reset) is death; pending bytes, which it
// must not consume, and silence are life.
func TestPeerAlive(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest, host := fds[0], fds[1]
	defer syscall.Close(guest)
	if !peerAlive(guest) {
		t.Error("a silent peer is dead")
	}
	if _, err := syscall.Write(host, []byte("xy")); err != nil {
		t.Fatal(err)
	}
	if !peerAlive(guest) || !peerAlive(guest) {
		t.Error("a peer that sent bytes is dead")
	}
	buf := make([]byte, 8)
	if n, err := syscall.Read(guest, buf); err != nil || n != 2 {
		t.Errorf("the liveness test consumed the peer's bytes: %d %v", n, err)
	}
	syscall.Close(host)
	if peerAlive(guest) {
		t.Error("a closed peer is alive")
	}
}

// A guest that attaches after a dead one inherits its slots (SPECIFICATION.md §10.2).
func TestConnectRecoversWhatADeadGuestLeft(t *testing.T) {
	g := geometry{hostSlots: 3, guestSlots: 4, hostPayload: 64, guestPayload: 64}
	h := newFakeHost(t, g)
	set := func(i, state, seq uint32) { atomic.StoreUint32(&h.slots[i].h.ctl, makeCtl(state, seq)|ctlWaiting) }
	set(0, stateServing, 5)
	set(1, stateAbandoned, 7)
	set(2, stateRequest, 3)
	set(3, stateClaimed, 2)
	set(4, stateResponse, 4)
	set(5, stateRequest, 9)
	set(6, stateServing, 1)
	c, err := Connect(ClientConfig{ShmName: h.name})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := []uint32{makeCtl(stateResponse, 5), makeCtl(stateFree, 7), makeCtl(stateRequest, 3) | ctlWaiting,
		makeCtl(stateFree, 2), makeCtl(stateFree, 4), makeCtl(stateFree, 9), makeCtl(stateAbandoned, 1)}
	for i, w := range want {
		if got := atomic.LoadUint32(&h.slots[i].h.ctl); got != w {
			t.Errorf("slot %d: word %#x, want %#x", i, got, w)
		}
	}
	if rt, e := atomic.LoadUint32(&h.slots[0].h.respType), atomic.LoadUint32(&h.slots[0].h.respError); rt != uint32(MsgTypeSystemError) || WireError(e) != WireErrPeerRestarted {
		t.Errorf("slot 0 answered type %d error %d", rt, e)
	}
}

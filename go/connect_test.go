package shm

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
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
	set32 := func(off uintptr, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	cases := []struct {
		name     string
		mutate   func([]byte)
		n        int
		fileSize int64
		want     error
	}{
		{"valid", nil, 256, total, nil},
		{"short read", nil, 255, total, ErrTruncated},
		{"short file", nil, 256, 200, ErrTruncated},
		{"file shorter than total", nil, 256, total - 1, ErrTruncated},
		{"bad magic", func(b []byte) { b[0] ^= 1 }, 256, total, ErrBadMagic},
		{"version 2", set32(unsafe.Offsetof(h.version), 2), 256, total, ErrVersionMismatch},
		{"version 0", set32(unsafe.Offsetof(h.version), 0), 256, total, ErrVersionMismatch},
		{"header size", set32(unsafe.Offsetof(h.headerSize), 128), 256, total, ErrBadGeometry},
		{"slot header size", set32(unsafe.Offsetof(h.slotHeaderSize), 128), 256, total, ErrBadGeometry},
		{"flags", set32(unsafe.Offsetof(h.flags), 1), 256, total, ErrBadGeometry},
		{"no host slots", set32(unsafe.Offsetof(h.hostSlots), 0), 256, total, ErrBadGeometry},
		{"too many host slots", set32(unsafe.Offsetof(h.hostSlots), 4097), 256, total, ErrBadGeometry},
		{"too many guest slots", set32(unsafe.Offsetof(h.guestSlots), 4097), 256, total, ErrBadGeometry},
		{"payload not a multiple of 64", set32(unsafe.Offsetof(h.hostPayload), 100), 256, total, ErrBadGeometry},
		{"payload too small", set32(unsafe.Offsetof(h.hostPayload), 0), 256, total, ErrBadGeometry},
		{"payload too large", set32(unsafe.Offsetof(h.guestPayload), 1<<30+64), 256, total, ErrBadGeometry},
		{"guest payload without guest slots", set32(unsafe.Offsetof(h.guestSlots), 0), 256, total, ErrBadGeometry},
		{"total size", func(b []byte) { binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], uint64(total)+4096) }, 256, total + 4096, ErrBadGeometry},
		{"over the segment size limit", func(b []byte) {
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostSlots):], 4096)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.guestSlots):], 0)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostPayload):], 1<<30)
			binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.guestPayload):], 0)
			binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], geometry{4096, 0, 1 << 30, 0}.totalSize())
		}, 256, 4096, ErrBadGeometry},
		{"huge total size", func(b []byte) { binary.LittleEndian.PutUint64(b[unsafe.Offsetof(h.totalSize):], 1<<62) }, 256, 1 << 62, ErrBadGeometry},
	}
	for _, c := range cases {
		b := headerBytes(g)
		if c.mutate != nil {
			c.mutate(b)
		}
		got, err := validateHeader(b, c.n, c.fileSize)
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

// Every failed Connect must leave no descriptor and no mapping behind, whichever step failed.
func TestFailedConnectLeaksNothing(t *testing.T) {
	g := smallGeometry
	total := int64(g.totalSize())
	var h segmentHeader
	with := func(mutate func([]byte)) []byte {
		b := headerBytes(g)
		mutate(b)
		return b
	}
	type setup func(t *testing.T) string
	file := func(header []byte, size int64) setup {
		return func(t *testing.T) string {
			name := uniqueName(t)
			newSegmentFile(t, name, header, size)
			return name
		}
	}
	cases := []struct {
		name  string
		setup setup
		want  error
	}{
		{"absent", func(t *testing.T) string { return uniqueName(t) }, ErrNotFound},
		{"bad name", func(t *testing.T) string { return "a/b" }, ErrInvalidArgument},
		{"empty name", func(t *testing.T) string { return "" }, ErrInvalidArgument},
		{"dot dot", func(t *testing.T) string { return ".." }, ErrInvalidArgument},
		{"bad magic", file(with(func(b []byte) { b[7] = 'X' }), total), ErrBadMagic},
		{"wrong version", file(with(func(b []byte) { binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.version):], 2) }), total), ErrVersionMismatch},
		{"bad geometry", file(with(func(b []byte) { binary.LittleEndian.PutUint32(b[unsafe.Offsetof(h.hostSlots):], 0) }), total), ErrBadGeometry},
		{"header cut short", file(headerBytes(g)[:100], 100), ErrTruncated},
		{"file cut short", file(headerBytes(g), total-4096), ErrTruncated},
		{"still initialising", file(with(func(b []byte) { copy(b, make([]byte, 8)) }), total), ErrNotFound},
		{"empty file", file(nil, 0), ErrNotFound},
		{"no live host", func(t *testing.T) string {
			name := uniqueName(t)
			fd := newSegmentFile(t, name, headerBytes(g), total)
			unlockByte(fd, hostLockByte)
			return name
		}, ErrNotFound},
		{"guest lock held", func(t *testing.T) string {
			name := uniqueName(t)
			newSegmentFile(t, name, headerBytes(g), total)
			other, err := syscall.Open(segmentDir+name, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = syscall.Close(other) })
			if ok, err := tryLockByte(other, guestLockByte); !ok || err != nil {
				t.Fatal("cannot take the guest lock")
			}
			return name
		}, ErrGuestAlreadyConnected},
		{"symlink", func(t *testing.T) string {
			name := uniqueName(t)
			if err := os.Symlink("/dev/null", segmentDir+name); err != nil {
				t.Fatal(err)
			}
			return name
		}, ErrSystem},
	}
	if os.Geteuid() != 0 {
		cases = append(cases, struct {
			name  string
			setup setup
			want  error
		}{"permission", func(t *testing.T) string {
			name := uniqueName(t)
			newSegmentFile(t, name, headerBytes(g), total)
			if err := os.Chmod(segmentDir+name, 0); err != nil {
				t.Fatal(err)
			}
			return name
		}, ErrPermissionDenied})
	}
	// Warm up whatever the runtime opens lazily, then measure.
	_, _ = Connect(ClientConfig{ShmName: "shm-gotest-absent", ConnectionTimeout: time.Millisecond})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := c.setup(t)
			fds, maps := openCounts(t)
			client, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 100 * time.Millisecond,
				RetryInterval: 5 * time.Millisecond})
			if err == nil {
				client.Close()
				t.Fatal("Connect succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if fds2, maps2 := openCounts(t); fds2 != fds || maps2 != maps {
				t.Fatalf("leak: %d->%d descriptors, %d->%d segment mappings (%v)", fds, fds2, maps, maps2, err)
			}
		})
	}
}

func TestConnectCloseReleasesEverything(t *testing.T) {
	h := newFakeHost(t, smallGeometry)
	fds, maps := openCounts(t)
	for i := 1; i <= 3; i++ {
		c, err := Connect(ClientConfig{ShmName: h.name, ConnectionTimeout: math.MaxInt64})
		if err != nil {
			t.Fatal(err)
		}
		if f, m := openCounts(t); f != fds+1 || m != maps+1 {
			t.Fatalf("connected: %d descriptors, %d mappings; want %d, %d", f, m, fds+1, maps+1)
		}
		if got := atomic.LoadUint32(&h.hdr.guestSession); got != uint32(i) {
			t.Errorf("guest_session %d, want %d", got, i)
		}
		if got := atomic.LoadUint32(&h.hdr.guestPID); got != uint32(os.Getpid()) {
			t.Errorf("guest_pid %d", got)
		}
		if _, err := Connect(ClientConfig{ShmName: h.name, ConnectionTimeout: time.Millisecond}); !errors.Is(err, ErrGuestAlreadyConnected) {
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
	}
}

func TestConnectWaitsForTheHost(t *testing.T) {
	name := uniqueName(t)
	g := smallGeometry
	done := make(chan error, 1)
	go func() {
		c, err := Connect(ClientConfig{ShmName: name, ConnectionTimeout: 30 * time.Second, RetryInterval: time.Millisecond})
		if err == nil {
			err = c.Close()
		}
		done <- err
	}()
	// The host appears in stages, as a real one does: empty file, sized file, magic last.
	fd := newSegmentFile(t, name, nil, 0)
	if err := syscall.Ftruncate(fd, int64(g.totalSize())); err != nil {
		t.Fatal(err)
	}
	b := headerBytes(g)
	if _, err := syscall.Pwrite(fd, b[8:], 8); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Pwrite(fd, b[:8], 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Connect did not return")
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

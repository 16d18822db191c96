package shm

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// A minimal host written in the test, over the same file protocol as the C++ host: it creates a segment
// file, holds the host lock, and can call the guest and serve its calls through its own mapping. It lets the
// package's own tests (and the race detector) exercise Client without a C++ process; the cross-language
// tests in tests/crosslang run against the real C++ host.

var nameCounter uint32

// uniqueName is a segment name unique to this process and test.
func uniqueName(t *testing.T) string {
	n := atomic.AddUint32(&nameCounter, 1)
	name := fmt.Sprintf("shm-gotest-%d-%d", os.Getpid(), n)
	t.Cleanup(func() { _ = os.Remove(segmentDir + name) })
	return name
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

type fakeHost struct {
	t      *testing.T
	name   string
	lockFd int // holds the host lock (byte 0)
	mem    []byte
	geo    geometry
	hdr    *segmentHeader
	slots  []slotView
	stop   chan struct{}
	wg     sync.WaitGroup
}

// newSegmentFile creates /dev/shm/<name> holding header, sized fileSize, and takes the host lock on it
// through its own descriptor (OFD locks conflict between descriptions, even in one process).
func newSegmentFile(t *testing.T, name string, header []byte, fileSize int64) (lockFd int) {
	t.Helper()
	fd, err := syscall.Open(segmentDir+name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	if err := syscall.Ftruncate(fd, fileSize); err != nil {
		t.Fatal(err)
	}
	if len(header) > 0 {
		if int64(len(header)) > fileSize {
			header = header[:fileSize]
		}
		if _, err := syscall.Pwrite(fd, header, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := tryLockByte(fd, hostLockByte); !ok || err != nil {
		t.Fatalf("host lock: %v %v", ok, err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	return fd
}

func newFakeHost(t *testing.T, g geometry) *fakeHost {
	t.Helper()
	name := uniqueName(t)
	fd := newSegmentFile(t, name, nil, int64(g.totalSize()))
	mem, err := syscall.Mmap(fd, 0, int(g.totalSize()), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHost{t: t, name: name, lockFd: fd, mem: mem, geo: g, stop: make(chan struct{})}
	copy(mem[8:], headerBytes(g)[8:]) // everything but the magic
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
	t.Cleanup(func() {
		h.stopServing()
		_ = syscall.Munmap(mem)
	})
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
	copy(s.req, req)
	atomic.StoreUint32(&s.h.reqType, uint32(t))
	atomic.StoreUint32(&s.h.reqSize, uint32(size))
	tx, ok := publish(s.h, seq)
	if !ok {
		return nil, 0, 0, fmt.Errorf("publish failed")
	}
	seq = tx
	w, st := waitFor(&s.h.ctl, &s.h.wakeStampNs, monoNow()+int64(timeout), newSpinPolicy(),
		func(w uint32) bool { return ctlSeq(w) != tx || ctlState(w) >= stateResponse },
		func(bool) bool { return false }, ctlWaiting)
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
	off, n, ok := placement(int32(atomic.LoadUint32(&s.h.respSize)), s.capacity)
	if !ok {
		return nil, rt, 0, fmt.Errorf("bad response size")
	}
	return append([]byte(nil), s.resp[off:off+n]...), rt, 0, nil
}

// serveGuestCalls answers guest calls until the test ends: every request byte complemented, same type.
// answer can override that for a request (return false to use the default).
func (h *fakeHost) serveGuestCalls(answer func(s *slotView, req []byte, t MsgType) bool) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
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
				off, n, ok := placement(int32(atomic.LoadUint32(&s.h.reqSize)), s.capacity)
				if !ok {
					writeErrorResponse(s.h, WireErrRequestTooLarge)
				} else if answer == nil || !answer(s, s.req[off:off+n], t) {
					for j := uint32(0); j < n; j++ {
						s.resp[j] = ^s.req[off+j]
					}
					atomic.StoreUint32(&s.h.respType, uint32(t))
					atomic.StoreUint32(&s.h.respSize, n)
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
			futexWakeAll(&h.hdr.doorbell)
			return
		}
	}
}

// die drops the host lock, as the kernel does when the host process dies.
func (h *fakeHost) die() { unlockByte(h.lockFd, hostLockByte) }

// openCounts returns the number of open descriptors and of mappings of shm-gotest segment files.
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
		if strings.Contains(line, segmentDir+"shm-gotest-") {
			maps++
		}
	}
	return len(ents), maps
}

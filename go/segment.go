package shm

import (
	"encoding/binary"
	"math"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// segment is a host's segment mapped into this process, attached as its guest (SPECIFICATION.md §4).
type segment struct {
	name  string
	fd    int
	mem   []byte
	geo   geometry
	hdr   *segmentHeader
	slots []slotView // host slots first, then guest slots
}

// errRetry marks an attach attempt that may succeed later (no file, no live host, still initialising).
type errRetry struct{ reason string }

func (e *errRetry) Error() string { return e.reason }

func validName(name string) bool {
	if len(name) == 0 || len(name) > maxNameLen || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
			c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// validateHeader checks the first n bytes of a segment file of fileSize bytes (SPECIFICATION.md §4 step 4),
// in the order the specification gives, so each failure gets its own error.
// It reads only its arguments, never the mapping. The magic must be non-zero (checked by the caller).
func validateHeader(b []byte, n int, fileSize int64) (geometry, error) {
	var g geometry
	if n < int(segmentHeaderSize) || len(b) < int(segmentHeaderSize) || fileSize < int64(segmentHeaderSize) {
		return g, newErr(ErrTruncated, "the file is %d bytes, smaller than the %d-byte header", fileSize,
			segmentHeaderSize)
	}
	le := binary.LittleEndian
	u32 := func(off uintptr) uint32 { return le.Uint32(b[off:]) }
	var h segmentHeader
	if m := le.Uint64(b[unsafe.Offsetof(h.magic):]); m != segmentMagic {
		return g, newErr(ErrBadMagic, "magic is %#x", m)
	}
	if v := u32(unsafe.Offsetof(h.version)); v != protocolVersion {
		return g, newErr(ErrVersionMismatch, "the segment speaks protocol version %d; this package speaks %d", v,
			protocolVersion)
	}
	if hs, ss, fl := u32(unsafe.Offsetof(h.headerSize)), u32(unsafe.Offsetof(h.slotHeaderSize)),
		u32(unsafe.Offsetof(h.flags)); hs != segmentHeaderSize || ss != slotHeaderSize || fl != 0 {
		return g, newErr(ErrBadGeometry, "header_size %d, slot_header_size %d, flags %#x", hs, ss, fl)
	}
	g.hostSlots = u32(unsafe.Offsetof(h.hostSlots))
	g.guestSlots = u32(unsafe.Offsetof(h.guestSlots))
	g.hostPayload = u32(unsafe.Offsetof(h.hostPayload))
	g.guestPayload = u32(unsafe.Offsetof(h.guestPayload))
	if !g.valid() {
		return g, newErr(ErrBadGeometry, "%d host slots, %d guest slots, payloads %d/%d", g.hostSlots,
			g.guestSlots, g.hostPayload, g.guestPayload)
	}
	if g.totalSize() > maxSegmentSize {
		return g, newErr(ErrBadGeometry, "the geometry needs %d bytes, over the %d-byte limit", g.totalSize(),
			maxSegmentSize)
	}
	total := le.Uint64(b[unsafe.Offsetof(h.totalSize):])
	if total != g.totalSize() {
		return g, newErr(ErrBadGeometry, "total_size is %d but the geometry needs %d", total, g.totalSize())
	}
	if uint64(fileSize) < total {
		return g, newErr(ErrTruncated, "the file is %d bytes; its header says %d", fileSize, total)
	}
	return g, nil
}

// attachOnce makes one attempt at §4 steps 1-7. An *errRetry means "not there yet"; any other error is final.
// On every failure nothing is left open or mapped.
func attachOnce(name string) (seg *segment, err error) {
	path := segmentDir + name
	fd, err := openSegmentFile(path)
	if err != nil {
		switch err {
		case syscall.ENOENT:
			return nil, &errRetry{"no segment file " + path}
		case syscall.EACCES, syscall.EPERM:
			return nil, &shmError{kind: ErrPermissionDenied, msg: "open " + path, cause: err}
		}
		return nil, sysErr(err, "open %s", path)
	}
	var mem []byte
	defer func() {
		if err != nil {
			if mem != nil {
				_ = syscall.Munmap(mem)
			}
			_ = syscall.Close(fd)
		}
	}()

	alive, err := byteLockedByOther(fd, hostLockByte)
	if err != nil {
		return nil, sysErr(err, "fcntl(F_OFD_GETLK) on %s", path)
	}
	if !alive {
		return nil, &errRetry{"segment " + name + " has no live host"}
	}
	// The header is read with pread, not through a mapping: a short file gives an error, never SIGBUS.
	var buf [segmentHeaderSize]byte
	n, err := preadFull(fd, buf[:], 0)
	if err != nil {
		return nil, sysErr(err, "pread %s", path)
	}
	var st syscall.Stat_t
	if err = syscall.Fstat(fd, &st); err != nil {
		return nil, sysErr(err, "fstat %s", path)
	}
	if binary.LittleEndian.Uint64(buf[:8]) == 0 {
		return nil, &errRetry{"segment " + name + " is still being initialised"}
	}
	geo, err := validateHeader(buf[:], n, st.Size)
	if err != nil {
		return nil, err
	}
	total := geo.totalSize()
	if total > uint64(math.MaxInt) {
		err = newErr(ErrBadGeometry, "a %d-byte segment cannot be mapped in this address space", total)
		return nil, err
	}
	mem, err = syscall.Mmap(fd, 0, int(total), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		mem = nil
		return nil, sysErr(err, "mmap %s (%d bytes)", path, total)
	}
	hdr := (*segmentHeader)(unsafe.Pointer(&mem[0]))
	if atomic.LoadUint64(&hdr.magic) != segmentMagic {
		err = newErr(ErrBadMagic, "segment %s changed while it was being attached", name)
		return nil, err
	}
	locked, err := tryLockByte(fd, guestLockByte)
	if err != nil {
		return nil, sysErr(err, "fcntl(F_OFD_SETLK) on %s", path)
	}
	if !locked {
		err = newErr(ErrGuestAlreadyConnected, "segment %s already has a live guest (pid %d)", name,
			atomic.LoadUint32(&hdr.guestPID))
		return nil, err
	}
	seg = &segment{name: name, fd: fd, mem: mem, geo: geo, hdr: hdr}
	seg.slots = make([]slotView, geo.slotCount())
	for i := range seg.slots {
		idx := uint32(i)
		c := uint64(geo.capacity(idx))
		off := geo.requestOffset(idx)
		seg.slots[i] = slotView{
			h:        (*slotHeader)(unsafe.Pointer(&mem[uint64(segmentHeaderSize)+uint64(slotHeaderSize)*uint64(idx)])),
			req:      mem[off : off+c : off+c],
			resp:     mem[off+c : off+2*c : off+2*c],
			capacity: uint32(c),
			index:    idx,
		}
	}
	// Every earlier guest is dead (this one holds the guest lock): inherit what they left (§10.2).
	for i := uint32(0); i < geo.hostSlots; i++ {
		sweepHostSlot(seg.slots[i].h)
	}
	for i := geo.hostSlots; i < geo.slotCount(); i++ {
		sweepGuestSlot(seg.slots[i].h)
	}
	atomic.StoreUint32(&hdr.guestPID, uint32(syscall.Getpid()))
	atomic.AddUint32(&hdr.guestSession, 1)
	return seg, nil
}

// hostAlive reports whether the host still holds its liveness lock. A system call: never on the busy path.
// If the check itself fails the host is presumed alive and the caller's deadline decides.
func (s *segment) hostAlive() bool {
	alive, err := byteLockedByOther(s.fd, hostLockByte)
	return err != nil || alive
}

func (s *segment) hostShuttingDown() bool {
	return atomic.LoadUint32(&s.hdr.hostState) == hostShuttingDown
}

// ringDoorbell tells the host's guest-call servers that a guest slot holds a new request (§7.2).
func (s *segment) ringDoorbell() {
	for {
		d := atomic.LoadUint32(&s.hdr.doorbell)
		if atomic.CompareAndSwapUint32(&s.hdr.doorbell, d, (d+doorbellIncrement)&^doorbellWaiting) {
			if d&doorbellWaiting != 0 {
				futexWakeAll(&s.hdr.doorbell)
			}
			return
		}
	}
}

// close releases the guest lock, unmaps and closes the file. Nothing may touch the mapping afterwards.
func (s *segment) close() {
	unlockByte(s.fd, guestLockByte)
	_ = syscall.Munmap(s.mem)
	_ = syscall.Close(s.fd)
	s.mem = nil
	s.slots = nil
	s.hdr = nil
}

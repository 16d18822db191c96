// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"encoding/binary"
	"os"
	"sync/atomic"
	"unsafe"
)

// segment is a host's segment mapped into this process, attached as its guest (SPECIFICATION.md §4). link is
// the guest connection: it holds the guest seat, and the host's end of it proves the host alive (§2, §W2).
type segment struct {
	name  string
	link  segmentLink // the guest connection (segment_<os>.go)
	mem   []byte      // the whole segment memory, mapped read-write
	geo   geometry
	hdr   *segmentHeader
	slots []slotView // host slots first, then guest slots
	// blocks are this guest's counter blocks, by slot (§5.4): in the mapping when the host made a counters
	// region (sharedCounters), else in this process's memory.
	blocks         []counterBlock
	sharedCounters bool
}

// errRetry marks an attach attempt that may succeed later: no host listens (yet), the host closed the
// connection or did not answer before the deadline, it is shutting down, or (busy) another guest holds the
// guest seat.
type errRetry struct {
	reason  string
	busy    bool   // the host answered BUSY
	busyPID uint32 // its detail: the attached guest's pid
}

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

// validateHeader checks b, a one-time copy of the header of a segment memfd of fileSize bytes
// (SPECIFICATION.md §4.2 step 5), in the order the specification gives, so each failure gets its own error.
// It reads only its arguments, never the mapping.
func validateHeader(b []byte, fileSize int64) (geometry, error) {
	var g geometry
	if len(b) < int(segmentHeaderSize) || fileSize < int64(segmentHeaderSize) {
		return g, newErr(ErrTruncated, "the memfd is %d bytes, smaller than the %d-byte header", fileSize,
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
		return g, newErr(ErrTruncated, "the memfd is %d bytes; its header says %d", fileSize, total)
	}
	return g, nil
}

// newSegment builds the view of a segment whose whole memory mem (size bytes, mapped read-write) the host of
// name handed over on link: it validates a one-time copy of the header (§4.2 step 5), then takes the guest
// seat's inheritance (step 6). On an error the caller unmaps mem and closes link.
func newSegment(name string, link segmentLink, mem []byte, size int64) (*segment, error) {
	// Load the magic with acquire order (sync/atomic is sequentially consistent), so the copy below sees every
	// field the host wrote before its release store of the magic; then copy the header once. Only the copy is
	// validated (its magic first) and used.
	hdr := (*segmentHeader)(unsafe.Pointer(&mem[0]))
	atomic.LoadUint64(&hdr.magic)
	var local [segmentHeaderSize]byte
	copy(local[:], mem[:segmentHeaderSize])
	geo, err := validateHeader(local[:], size)
	if err != nil {
		return nil, err
	}
	seg := &segment{name: name, link: link, mem: mem, geo: geo, hdr: hdr}
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
	// The counters region after the segment, if the host made one: its header copied once and checked. This
	// guest's blocks start at zero: they count its session, the recovery below included (§4.2 step 6).
	var cnt [32]byte
	if uint64(size) >= geo.totalSize()+uint64(len(cnt)) {
		copy(cnt[:], mem[geo.totalSize():geo.totalSize()+uint64(len(cnt))])
	}
	if countersPresent(cnt[:], geo, size) {
		seg.sharedCounters = true
		seg.blocks = unsafe.Slice((*counterBlock)(unsafe.Pointer(&mem[geo.guestBlockOffset(0)])), geo.slotCount())
		for i := range seg.blocks {
			for j := range seg.blocks[i] {
				atomic.StoreUint64(&seg.blocks[i][j], 0)
			}
		}
		ch := (*countersHeader)(unsafe.Pointer(&mem[geo.totalSize()]))
		atomic.StoreUint64(&ch.guestSinceNs, uint64(monoNow()))
	} else {
		seg.blocks = make([]counterBlock, geo.slotCount())
	}
	// This connection is the guest seat: every earlier guest is dead or gone. Inherit what they left (§10.2).
	for i := uint32(0); i < geo.hostSlots; i++ {
		if sweepHostSlot(seg.slots[i].h) {
			countAnswered(&seg.blocks[i], WireErrPeerRestarted)
			count(&seg.blocks[i], cntServed, 1)
		}
	}
	for i := geo.hostSlots; i < geo.slotCount(); i++ {
		sweepGuestSlot(seg.slots[i].h)
	}
	atomic.StoreUint32(&hdr.guestPID, uint32(os.Getpid()))
	atomic.AddUint32(&hdr.guestSession, 1)
	return seg, nil
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
				futexWakeAll(&s.hdr.doorbell, d)
			}
			return
		}
	}
}

// SPDX-License-Identifier: Apache-2.0
package shm

import "unsafe"

// The wire layout of a segment (SPECIFICATION.md §5, §6, §7.2, §11) and of the attach handshake (§4), version 3.
// These values and offsets are checked against the C++ definitions by TestLayoutMatchesCpp; changing one is a
// protocol change.

const (
	protocolVersion   uint32 = 3
	segmentMagic      uint64 = 0x31304745534D4853 // "SHMSEG01" read as a little-endian u64
	cacheLine         uint32 = 64
	pageSize          uint64 = 4096
	segmentHeaderSize uint32 = 256
	slotHeaderSize    uint32 = 64
	inlineSize        uint32 = 32 // a payload of at most this many bytes travels in the slot header (§8.1)
	payloadAlign      uint32 = 64
	minPayload        uint32 = 64
	maxPayload        uint32 = 1 << 30
	maxSlots          uint32 = 4096
	maxSegmentSize    uint64 = 1 << 40
	maxMessageSize    uint64 = 1 << 40 // the largest total a transfer can carry (§8.5)
	chunkNextSize     uint32 = 16      // a CHUNK_NEXT request: stream_id u64, offset u64 in inline[0, 16)
)

// segmentHeader mirrors the 256-byte header at offset 0. It is only ever accessed through a pointer into the
// mapping, field by field with sync/atomic (the magic and total_size words are 8-byte aligned there).
type segmentHeader struct {
	magic          uint64
	version        uint32
	headerSize     uint32
	slotHeaderSize uint32
	hostSlots      uint32
	guestSlots     uint32
	hostPayload    uint32
	guestPayload   uint32
	flags          uint32
	totalSize      uint64
	reserved0      [16]byte
	hostState      uint32
	hostPID        uint32
	guestPID       uint32
	guestSession   uint32
	reserved1      [48]byte
	doorbell       uint32
	reserved2      [124]byte
}

// slotHeader mirrors the 64-byte header of a slot, at 256 + 64*index.
type slotHeader struct {
	ctl         uint32
	reqType     uint32
	reqSize     uint32 // int32 on the wire; negative = end-aligned
	respType    uint32
	respSize    uint32 // int32 on the wire; negative = end-aligned
	respError   uint32
	wakeStampNs uint64
	inlineData  [32]byte // a request or response of at most inlineSize bytes (§8.1)
}

// chunkHeader mirrors the 32-byte header of a CHUNK message, carried in a slot header's inline field (§8.5).
// It is plain bytes in shared memory: a receiver copies them out once (readChunkHeader) and validates the copy.
type chunkHeader struct {
	streamID uint64 // names the transfer, != 0
	total    uint64 // the whole message's size, 1..maxMessageSize
	offset   uint64 // where this chunk's data lies in the message
	msgType  uint32 // the whole message's MsgType
	reserved uint32 // written as 0, ignored
}

// Compile-time pins: each array length is negative (a compile error) unless the size is exact.
var (
	_ [unsafe.Sizeof(segmentHeader{}) - uintptr(segmentHeaderSize)]struct{}
	_ [uintptr(segmentHeaderSize) - unsafe.Sizeof(segmentHeader{})]struct{}
	_ [unsafe.Sizeof(slotHeader{}) - uintptr(slotHeaderSize)]struct{}
	_ [uintptr(slotHeaderSize) - unsafe.Sizeof(slotHeader{})]struct{}
	_ [unsafe.Sizeof(chunkHeader{}) - uintptr(inlineSize)]struct{}
	_ [uintptr(inlineSize) - unsafe.Sizeof(chunkHeader{})]struct{}
)

// encode renders h little-endian, as it travels in the inline field.
func (h chunkHeader) encode() (b [32]byte) {
	putU64(b[0:], h.streamID)
	putU64(b[8:], h.total)
	putU64(b[16:], h.offset)
	putU32(b[24:], h.msgType)
	putU32(b[28:], h.reserved)
	return b
}

// decodeChunkHeader reads a header from a copy of the inline field.
func decodeChunkHeader(b *[32]byte) chunkHeader {
	l := leBytes{b[:]}
	return chunkHeader{streamID: l.u64(0), total: l.u64(8), offset: l.u64(16), msgType: l.u32(24), reserved: l.u32(28)}
}

func putU32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func putU64(b []byte, v uint64) {
	putU32(b, uint32(v))
	putU32(b[4:], uint32(v>>32))
}

// leBytes reads little-endian words from b.
type leBytes struct{ b []byte }

func (l leBytes) u32(off int) uint32 {
	b := l.b[off : off+4]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func (l leBytes) u64(off int) uint64 { return uint64(l.u32(off)) | uint64(l.u32(off+4))<<32 }

// Slot states (bits 0-3 of the control word).
const (
	stateFree      uint32 = 0
	stateClaimed   uint32 = 1
	stateRequest   uint32 = 2
	stateServing   uint32 = 3
	stateResponse  uint32 = 4
	stateAbandoned uint32 = 5
	stateCount     uint32 = 6
)

// The control word: seq (bits 8-31) | reserved (5-7) | W (4) | state (0-3).
const (
	ctlStateMask    uint32 = 0x0F
	ctlWaiting      uint32 = 0x10
	ctlReservedBits uint32 = 0xE0
	ctlSeqShift     uint32 = 8
	ctlSeqMask      uint32 = 0x00FFFFFF // after shifting
)

// The guest-call doorbell: bit 0 = a host server sleeps on it, bits 1-31 = a counter.
const (
	doorbellWaiting   uint32 = 0x1
	doorbellIncrement uint32 = 0x2
)

// host_state values.
const (
	hostRunning      uint32 = 0
	hostShuttingDown uint32 = 1
)

// The attach handshake (SPECIFICATION.md §4): a 16-byte hello from the guest, a 16-byte reply from the host,
// each one SOCK_SEQPACKET record, little-endian.
const (
	helloMagic uint64 = 0x4F4C4C45484D4853 // "SHMHELLO" read as a little-endian u64
	helloSize         = 16                 // magic u64, version u32, role u32
	replySize         = 16                 // status u32, host_pid u32, detail u32, reserved u32
)

// Roles a hello asks for.
const (
	roleGuest    uint32 = 1 // serves the host and takes the guest seat
	roleObserver uint32 = 2 // reads the segment only (this package never asks for it)
)

// Statuses of a reply.
const (
	statusAccepted     uint32 = 0 // exactly one descriptor comes with the reply
	statusBusy         uint32 = 1 // detail = the attached guest's pid
	statusDenied       uint32 = 2 // the host's mode does not admit this process
	statusVersion      uint32 = 3 // detail = the host's protocol version
	statusBadHello     uint32 = 4
	statusShuttingDown uint32 = 5
)

// statusName names a reply status for error messages.
func statusName(s uint32) string {
	switch s {
	case statusAccepted:
		return "ACCEPTED"
	case statusBusy:
		return "BUSY"
	case statusDenied:
		return "DENIED"
	case statusVersion:
		return "VERSION"
	case statusBadHello:
		return "BAD_HELLO"
	case statusShuttingDown:
		return "SHUTTING_DOWN"
	}
	return "status " + utoa(uint64(s))
}

func ctlState(ctl uint32) uint32          { return ctl & ctlStateMask }
func ctlSeq(ctl uint32) uint32            { return ctl >> ctlSeqShift }
func makeCtl(state, seq uint32) uint32    { return state | (seq&ctlSeqMask)<<ctlSeqShift }
func nextSeq(seq uint32) uint32           { return (seq + 1) & ctlSeqMask }
func ctlIs(ctl uint32, state uint32) bool { return ctlState(ctl) == state }

// MsgType is the type of a message, carried next to its size. Values below 128 are reserved for the
// protocol; applications use MsgTypeAppStart and above. The values are those of the C++ shm::MsgType.
type MsgType uint32

const (
	MsgTypeNormal        MsgType = 0   // opaque bytes
	MsgTypeHeartbeatReq  MsgType = 1   // liveness probe; answered by the runtime, never seen by a handler
	MsgTypeHeartbeatResp MsgType = 2   // the answer to MsgTypeHeartbeatReq (size 0)
	MsgTypeShutdown      MsgType = 3   // reserved: shutdown travels in the segment header, not as a message
	MsgTypeChunk         MsgType = 4   // runtime only: a piece of a message larger than the slot (§8.5)
	MsgTypeChunkAck      MsgType = 5   // runtime only: a chunk of a large request was taken; send the next
	MsgTypeChunkNext     MsgType = 6   // runtime only: asks for the next chunk of a large response
	MsgTypeFlatbuffer    MsgType = 10  // a FlatBuffer, usually end-aligned (negative size)
	MsgTypeGuestCall     MsgType = 11  // conventional type of guest-to-host calls
	MsgTypeSystemError   MsgType = 127 // an error answer; never returned as data (see RemoteError)
	MsgTypeAppStart      MsgType = 128 // first application-defined type
)

// IsRequestType reports whether a caller may send t as a request: MsgTypeNormal, MsgTypeHeartbeatReq,
// MsgTypeFlatbuffer, MsgTypeGuestCall, or t >= MsgTypeAppStart.
func IsRequestType(t MsgType) bool {
	return t == MsgTypeNormal || t == MsgTypeHeartbeatReq || t == MsgTypeFlatbuffer || t == MsgTypeGuestCall ||
		t >= MsgTypeAppStart
}

// IsResponseType reports whether a handler may answer with t: a request type other than
// MsgTypeHeartbeatReq.
func IsResponseType(t MsgType) bool { return t != MsgTypeHeartbeatReq && IsRequestType(t) }

// String returns the protocol name of t ("NORMAL", "APP(200)", "RESERVED(5)").
func (t MsgType) String() string {
	switch t {
	case MsgTypeNormal:
		return "NORMAL"
	case MsgTypeHeartbeatReq:
		return "HEARTBEAT_REQ"
	case MsgTypeHeartbeatResp:
		return "HEARTBEAT_RESP"
	case MsgTypeShutdown:
		return "SHUTDOWN"
	case MsgTypeChunk:
		return "CHUNK"
	case MsgTypeChunkAck:
		return "CHUNK_ACK"
	case MsgTypeChunkNext:
		return "CHUNK_NEXT"
	case MsgTypeFlatbuffer:
		return "FLATBUFFER"
	case MsgTypeGuestCall:
		return "GUEST_CALL"
	case MsgTypeSystemError:
		return "SYSTEM_ERROR"
	case MsgTypeAppStart:
		return "APP_START"
	}
	if t >= MsgTypeAppStart {
		return "APP(" + utoa(uint64(t)) + ")"
	}
	return "RESERVED(" + utoa(uint64(t)) + ")"
}

// WireError is the error code of a MsgTypeSystemError answer (SPECIFICATION.md §11). The values are those of
// the C++ shm::wire::WireError.
type WireError uint32

const (
	WireErrNone             WireError = 0 // not an error
	WireErrRequestTooLarge  WireError = 1 // request size invalid for the slot's capacity
	WireErrResponseTooLarge WireError = 2 // the handler's response size is invalid for the capacity
	WireErrReservedType     WireError = 3 // a reserved MsgType was used as request or response type
	WireErrHandlerFailed    WireError = 4 // the handler panicked, threw, or answered MsgTypeSystemError
	WireErrShuttingDown     WireError = 5 // the server is shutting down and did not run the handler
	WireErrNoHandler        WireError = 6 // nobody serves this kind of call
	WireErrPeerRestarted    WireError = 7 // the server died while serving; its successor answered for it
	WireErrStreamInvalid    WireError = 8 // a chunk or CHUNK_NEXT broke the rules of §8.5; the transfer is dropped
	WireErrTooManyTransfers WireError = 9 // the server already holds as many partial large requests as it allows
)

// String returns the protocol name of e ("HandlerFailed"), or "Unknown(n)" for a value this version does not
// define.
func (e WireError) String() string {
	switch e {
	case WireErrNone:
		return "None"
	case WireErrRequestTooLarge:
		return "RequestTooLarge"
	case WireErrResponseTooLarge:
		return "ResponseTooLarge"
	case WireErrReservedType:
		return "ReservedType"
	case WireErrHandlerFailed:
		return "HandlerFailed"
	case WireErrShuttingDown:
		return "ShuttingDown"
	case WireErrNoHandler:
		return "NoHandler"
	case WireErrPeerRestarted:
		return "PeerRestarted"
	case WireErrStreamInvalid:
		return "StreamInvalid"
	case WireErrTooManyTransfers:
		return "TooManyTransfers"
	}
	return "Unknown(" + utoa(uint64(e)) + ")"
}

func utoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}

// geometry is what defines a segment (SPECIFICATION.md §5.3). Validated once at attach, then kept in
// process memory: never re-read from the segment.
type geometry struct {
	hostSlots    uint32
	guestSlots   uint32
	hostPayload  uint32
	guestPayload uint32
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

func payloadValid(p uint32) bool { return p >= minPayload && p <= maxPayload && p%payloadAlign == 0 }

// valid reports whether g's counts and payloads are within the bounds of this version (like the C++
// GeometryValid); the segment-size limit, maxSegmentSize, is checked separately. Under these bounds every size
// below fits in 44 bits.
func (g geometry) valid() bool {
	if g.hostSlots < 1 || g.hostSlots > maxSlots || g.guestSlots > maxSlots || !payloadValid(g.hostPayload) {
		return false
	}
	if g.guestSlots == 0 {
		return g.guestPayload == 0
	}
	return payloadValid(g.guestPayload)
}

// buffersOffset is where the first request buffer starts: after the slot headers, page aligned.
func (g geometry) buffersOffset() uint64 {
	return alignUp(uint64(segmentHeaderSize)+uint64(slotHeaderSize)*(uint64(g.hostSlots)+uint64(g.guestSlots)), pageSize)
}

// totalSize is the size of the whole segment. Precondition: g.valid().
func (g geometry) totalSize() uint64 {
	return alignUp(g.buffersOffset()+2*uint64(g.hostPayload)*uint64(g.hostSlots)+
		2*uint64(g.guestPayload)*uint64(g.guestSlots), pageSize)
}

// slotCount is the number of slots, host slots first.
func (g geometry) slotCount() uint32 { return g.hostSlots + g.guestSlots }

// capacity of slot i's request buffer (and of its response buffer).
func (g geometry) capacity(i uint32) uint32 {
	if i < g.hostSlots {
		return g.hostPayload
	}
	return g.guestPayload
}

// requestOffset is the offset of slot i's request buffer; its response buffer follows at + capacity(i).
func (g geometry) requestOffset(i uint32) uint64 {
	if i < g.hostSlots {
		return g.buffersOffset() + 2*uint64(g.hostPayload)*uint64(i)
	}
	return g.buffersOffset() + 2*uint64(g.hostPayload)*uint64(g.hostSlots) +
		2*uint64(g.guestPayload)*uint64(i-g.hostSlots)
}

// placement resolves a wire size against a buffer of capacity bytes (SPECIFICATION.md §8.1): n >= 0 means
// [0, n), n < 0 the last |n| bytes. ok is false for math.MinInt32 and |n| > capacity: such a size is
// rejected, never used.
func placement(n int32, capacity uint32) (offset, length uint32, ok bool) {
	if n == -1<<31 {
		return 0, 0, false
	}
	if n < 0 {
		length = uint32(-n)
	} else {
		length = uint32(n)
	}
	if length > capacity {
		return 0, 0, false
	}
	if n < 0 {
		offset = capacity - length
	}
	return offset, length, true
}

// messageBytes returns where the bytes of a message of wire size n lie (SPECIFICATION.md §8.1): in h's
// inline area when |n| <= inlineSize, else in buf, the slot's request or response buffer of capacity bytes.
// ok is false for a size that is invalid for the capacity.
func messageBytes(h *slotHeader, buf []byte, capacity uint32, n int32) (b []byte, ok bool) {
	off, length, ok := placement(n, capacity)
	if !ok {
		return nil, false
	}
	if length <= inlineSize {
		start := uint32(0)
		if n < 0 {
			start = inlineSize - length
		}
		return h.inlineData[start : start+length : start+length], true
	}
	return buf[off : off+length : off+length], true
}

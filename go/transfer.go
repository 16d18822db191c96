// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"errors"
	"io"
	"math"
	"sync/atomic"
	"time"
)

// Large messages (SPECIFICATION.md §8.5): a message larger than its slot's capacity C travels as a transfer,
// a run of ordinary transactions on one slot that the caller keeps throughout. Chunks lie at offsets 0, C,
// 2C, ..., each full but the last; every chunk names its stream and its offset, so nothing of an abandoned
// transfer can be taken into another one. Every header is copied out of shared memory once and only the copy
// is checked and used; total <= 1<<40 and offset < total keep every sum below free of overflow.

// streamIDs names this process's transfers, callers' and servers' alike: ids start at 1 and never repeat,
// which is more than the per-side, per-slot uniqueness §8.5 asks for.
var streamIDs uint64

func nextStreamID() uint64 { return atomic.AddUint64(&streamIDs, 1) }

// chunkLen is the length of the chunk at offset of a message of total bytes on a slot of capacity c.
// Precondition: offset < total.
func chunkLen(c uint32, total, offset uint64) uint64 {
	if left := total - offset; left < uint64(c) {
		return left
	}
	return uint64(c)
}

// readChunkHeader copies the chunk header out of h's inline field, once.
func readChunkHeader(h *slotHeader) chunkHeader {
	var raw [32]byte
	copy(raw[:], h.inlineData[:])
	return decodeChunkHeader(&raw)
}

func writeChunkHeader(h *slotHeader, ck chunkHeader) {
	raw := ck.encode()
	copy(h.inlineData[:], raw[:])
}

// chunkFits says whether a chunk header and its size field obey the chunking rule for capacity c: a stream,
// an offset inside a total that the wire can carry and that needs more than one chunk (a message of at most
// C bytes always takes the plain path), and exactly the chunk's length.
func chunkFits(ck chunkHeader, size int32, c uint32) bool {
	return ck.streamID != 0 && ck.total > uint64(c) && ck.total <= maxMessageSize && ck.offset < ck.total &&
		size > 0 && uint64(size) == chunkLen(c, ck.total, ck.offset)
}

// ---- Server side: a worker's transfers on its host slot ----

// slotTransfers is one host slot's transfer state: at most one partial incoming request and one outgoing
// answer. Only the slot's worker touches it.
type slotTransfers struct {
	in  incoming
	out outgoing
}

type incoming struct {
	buf      []byte // nil: none; else exactly total bytes
	id       uint64
	typ      MsgType
	received uint64
	lastNs   int64 // monoNow of the last chunk
}

type outgoing struct {
	data   []byte // nil: none; the handler's Reply.Large
	id     uint64
	typ    MsgType
	sent   uint64
	lastNs int64
}

func (t *slotTransfers) held() bool { return t.in.buf != nil || t.out.data != nil }

// dropIncoming forgets the partial request, if any, and gives back its place among MaxTransfers.
func (c *Client) dropIncoming(t *slotTransfers) {
	if t.in.buf != nil {
		t.in = incoming{}
		atomic.AddInt32(&c.partial, -1)
	}
}

func (c *Client) dropTransfers(t *slotTransfers) {
	c.dropIncoming(t)
	t.out = outgoing{}
}

// sweepTransfers drops what has seen no chunk for TransferIdleTimeout.
func (c *Client) sweepTransfers(t *slotTransfers, now int64) {
	if t.in.buf != nil && now-t.in.lastNs >= c.idleNs {
		c.dropIncoming(t)
	}
	if t.out.data != nil && now-t.out.lastNs >= c.idleNs {
		t.out = outgoing{}
	}
}

// reservePartial takes a place among MaxTransfers for a new partial request.
func (c *Client) reservePartial() bool {
	for {
		n := atomic.LoadInt32(&c.partial)
		if n >= c.maxTransfers {
			return false
		}
		if atomic.CompareAndSwapInt32(&c.partial, n, n+1) {
			return true
		}
	}
}

// receiveBuf returns the memory for a large request of size bytes: the ReceiveBuffer hook's, else new.
// failed: the hook panicked.
func (c *Client) receiveBuf(s *slotView, size uint64, t MsgType) (b []byte, failed bool) {
	if c.receiveBuffer != nil {
		func() {
			defer func() {
				if v := recover(); v != nil {
					c.logPanic(s.index, v)
					b, failed = nil, true
				}
			}()
			b = c.receiveBuffer(size, t, int(s.index))
		}()
		if failed {
			return nil, true
		}
		if uint64(len(b)) >= size {
			return b[:size:size], false
		}
	}
	return make([]byte, size), false
}

// serveChunk takes one chunk of a large request (§8.5) and writes the answer into the response fields:
// CHUNK_ACK, an error, or, after the last chunk, the handler's answer to the whole message.
func (c *Client) serveChunk(s *slotView, size int32, h handlers, t *slotTransfers) {
	cnt := &c.seg.blocks[s.index]
	answerError := func(e WireError) {
		c.dropIncoming(t)
		writeErrorResponse(s.h, e)
		countAnswered(cnt, e)
	}
	ck := readChunkHeader(s.h)
	t.out = outgoing{} // a request on the slot ends its outgoing answer
	if !chunkFits(ck, size, s.capacity) {
		answerError(WireErrStreamInvalid)
		return
	}
	typ := MsgType(ck.msgType)
	if ck.offset == 0 {
		duplicate := t.in.buf != nil && t.in.id == ck.streamID
		c.dropIncoming(t) // a first chunk begins another message
		switch {
		case duplicate: // the first chunk of the transfer in progress, again
			answerError(WireErrStreamInvalid)
			return
		case ck.total > c.maxMessage || ck.total > math.MaxInt:
			answerError(WireErrRequestTooLarge)
			return
		case !IsResponseType(typ): // a user request type other than HEARTBEAT_REQ
			answerError(WireErrReservedType)
			return
		case !c.reservePartial():
			answerError(WireErrTooManyTransfers)
			return
		}
		buf, failed := c.receiveBuf(s, ck.total, typ)
		if failed {
			atomic.AddInt32(&c.partial, -1)
			answerError(WireErrHandlerFailed)
			return
		}
		t.in = incoming{buf: buf, id: ck.streamID, typ: typ}
	} else if t.in.buf == nil || ck.streamID != t.in.id || ck.total != uint64(len(t.in.buf)) || typ != t.in.typ ||
		ck.offset != t.in.received {
		answerError(WireErrStreamInvalid)
		return
	}
	n := uint64(size)
	copy(t.in.buf[ck.offset:ck.offset+n], s.req[:n])
	t.in.received += n
	t.in.lastNs = monoNow()
	count(cnt, cntServeBytesIn, n)
	if t.in.received < ck.total {
		atomic.StoreUint32(&s.h.respType, uint32(MsgTypeChunkAck))
		atomic.StoreUint32(&s.h.respSize, 0)
		atomic.StoreUint32(&s.h.respError, 0)
		return
	}
	// Complete: no longer partial. The handler has the message; it is forgotten when the handler returns.
	msg := t.in.buf
	c.dropIncoming(t)
	if c.isClosing() {
		writeErrorResponse(s.h, WireErrShuttingDown)
		countAnswered(cnt, WireErrShuttingDown)
		return
	}
	c.respond(s, h, msg, typ, t)
}

// serveChunkNext answers a CHUNK_NEXT with the next chunk of the slot's outgoing answer (§8.5).
func (c *Client) serveChunkNext(s *slotView, size int32, t *slotTransfers) {
	if size != int32(chunkNextSize) {
		c.chunkNextInvalid(s, t)
		return
	}
	var raw [16]byte
	copy(raw[:], s.h.inlineData[:16])
	l := leBytes{raw[:]}
	id, offset := l.u64(0), l.u64(8)
	if t.out.data == nil || id != t.out.id || offset != t.out.sent {
		c.chunkNextInvalid(s, t)
		return
	}
	c.sendChunk(s, t)
}

// chunkNextInvalid answers a broken CHUNK_NEXT: StreamInvalid, and the slot's transfers end.
func (c *Client) chunkNextInvalid(s *slotView, t *slotTransfers) {
	c.dropTransfers(t)
	writeErrorResponse(s.h, WireErrStreamInvalid)
	countAnswered(&c.seg.blocks[s.index], WireErrStreamInvalid)
}

// replyLarge answers with data, a handler's Reply.Large of a valid response type: plainly if it fits the
// slot, else as chunk 0 of a new outgoing transfer.
func (c *Client) replyLarge(s *slotView, data []byte, typ MsgType, t *slotTransfers) {
	cnt := &c.seg.blocks[s.index]
	n := uint64(len(data))
	if n <= uint64(s.capacity) {
		// The inline field for a small answer (§8.1), else the buffer's start; copy allows data in respBuf.
		if n <= uint64(inlineSize) {
			copy(s.h.inlineData[:n], data)
		} else {
			copy(s.resp[:n], data)
		}
		atomic.StoreUint32(&s.h.respType, uint32(typ))
		atomic.StoreUint32(&s.h.respSize, uint32(n))
		atomic.StoreUint32(&s.h.respError, 0)
		count(cnt, cntServeBytesOut, n)
		return
	}
	if n > maxMessageSize {
		writeErrorResponse(s.h, WireErrResponseTooLarge)
		countAnswered(cnt, WireErrResponseTooLarge)
		return
	}
	t.out = outgoing{data: data, id: nextStreamID(), typ: typ}
	c.sendChunk(s, t)
}

// sendChunk writes the next chunk of the outgoing answer as the response; the last one ends the transfer.
func (c *Client) sendChunk(s *slotView, t *slotTransfers) {
	total := uint64(len(t.out.data))
	off := t.out.sent
	n := chunkLen(s.capacity, total, off)
	copy(s.resp[:n], t.out.data[off:off+n])
	writeChunkHeader(s.h, chunkHeader{streamID: t.out.id, total: total, offset: off, msgType: uint32(t.out.typ)})
	atomic.StoreUint32(&s.h.respType, uint32(MsgTypeChunk))
	atomic.StoreUint32(&s.h.respSize, uint32(n))
	atomic.StoreUint32(&s.h.respError, 0)
	count(&c.seg.blocks[s.index], cntServeBytesOut, n)
	t.out.sent += n
	t.out.lastNs = monoNow()
	if t.out.sent == total {
		t.out = outgoing{}
	}
}

// ---- Caller side: guest calls of any size ----

// errChunked and errChunkAck are what readAnswer reports for a CHUNK or CHUNK_ACK answer, which only a
// transfer may take; they never reach the package's users.
var (
	errChunked  = errors.New("shm: chunked answer")
	errChunkAck = errors.New("shm: chunk acknowledged")
)

// protocolErr counts and returns a protocol violation of the host on slot s.
func (c *Client) protocolErr(s *slotView, format string, args ...any) error {
	countShared(&c.seg.blocks[s.index], cntProtocol, 1)
	return newErr(ErrProtocol, format, args...)
}

// sink names the memory of an answer of total bytes.
type sink func(total uint64) ([]byte, error)

// source writes the request's bytes [off, off+len(dst)) into dst.
type source func(dst []byte, off uint64) error

// sendLarge sends a request of total > capacity bytes from fill as chunks on slot s (owned at *seq) and
// returns the answer to the last one as call does (errChunked: a large answer follows).
func (c *Client) sendLarge(s *slotView, seq *uint32, total uint64, t MsgType, fill source, deadline, started int64) (answer, bool, error) {
	id := nextStreamID()
	for off := uint64(0); ; {
		n := chunkLen(s.capacity, total, off)
		if err := fill(s.req[:n], off); err != nil {
			return answer{}, true, &shmError{kind: ErrInvalidArgument, msg: "reading the request failed", cause: err}
		}
		// The source's time counts: a chunk is not published past the deadline.
		if monoNow() >= deadline {
			countShared(&c.seg.blocks[s.index], cntTimeouts, 1)
			return answer{}, true, newErr(ErrTimeout, "guest call on slot %d did not finish in time", s.index)
		}
		writeChunkHeader(s.h, chunkHeader{streamID: id, total: total, offset: off, msgType: uint32(t)})
		a, owned, err := c.transact(s, seq, int32(n), MsgTypeChunk, deadline, started)
		off += n
		if off == total {
			if err == errChunkAck {
				err = c.protocolErr(s, "the host acknowledged the last chunk on guest slot %d instead of answering", s.index)
			}
			return a, owned, err
		}
		switch {
		case err == errChunkAck && a.wireSize == 0:
		case err == nil || err == errChunked || err == errChunkAck:
			return a, owned, c.protocolErr(s, "the host answered %v (size %d) to chunk %d of %d bytes on guest slot %d",
				a.typ, a.wireSize, off-n, total, s.index)
		default:
			return a, owned, err
		}
	}
}

// receiveLarge fetches a large answer whose chunk 0 has arrived as first on slot s (owned at *seq), into the
// memory sink names. owned says whether the slot is still the caller's.
func (c *Client) receiveLarge(s *slotView, seq *uint32, first answer, deadline, started int64, dst sink) (out []byte, typ MsgType, owned bool, err error) {
	ck := readChunkHeader(s.h)
	typ = MsgType(ck.msgType)
	if !chunkFits(ck, first.wireSize, s.capacity) || ck.offset != 0 || !IsResponseType(typ) {
		return nil, 0, true, c.protocolErr(s, "the host began a large answer with a broken chunk (stream %d, total %d, "+
			"offset %d, size %d, type %v) on guest slot %d", ck.streamID, ck.total, ck.offset, first.wireSize, typ, s.index)
	}
	if ck.total > c.maxMessage || ck.total > math.MaxInt {
		return nil, 0, true, newErr(ErrTooLarge, "the host's answer of %d bytes exceeds the limit of %d", ck.total,
			c.maxMessage)
	}
	if out, err = dst(ck.total); err != nil {
		return nil, 0, true, err
	}
	got := uint64(copy(out, s.resp[:first.wireSize]))
	for got < ck.total {
		var next [16]byte
		putU64(next[0:], ck.streamID)
		putU64(next[8:], got)
		copy(s.h.inlineData[:16], next[:])
		a, own, err := c.transact(s, seq, int32(chunkNextSize), MsgTypeChunkNext, deadline, started)
		if err != errChunked {
			if err == nil || err == errChunkAck {
				err = c.protocolErr(s, "the host answered %v to CHUNK_NEXT on guest slot %d", a.typ, s.index)
			}
			return nil, 0, own, err
		}
		nk := readChunkHeader(s.h)
		if nk.streamID != ck.streamID || nk.total != ck.total || nk.msgType != ck.msgType || nk.offset != got ||
			!chunkFits(nk, a.wireSize, s.capacity) {
			return nil, 0, true, c.protocolErr(s, "the host sent a broken chunk (stream %d, total %d, offset %d, size %d) "+
				"for offset %d of stream %d on guest slot %d", nk.streamID, nk.total, nk.offset, a.wireSize, got,
				ck.streamID, s.index)
		}
		got += uint64(copy(out[got:], s.resp[:a.wireSize]))
	}
	c.countCall(s, ck.total, started)
	return out, typ, true, nil
}

// largeCall is a guest call whose request (total bytes from fill) or answer may exceed a slot: it claims a
// slot, sends the request plainly or as chunks, receives the answer into dst's memory, and parks or
// releases the slot as sendCopy does. The caller holds c.mu for reading and checked the arguments.
func (c *Client) largeCall(total uint64, t MsgType, fill source, deadline int64, dst sink) ([]byte, MsgType, error) {
	s, seq, err := c.claimCopy(deadline)
	if err != nil {
		return nil, 0, err
	}
	started := c.callClock()
	var a answer
	owned := true
	if total <= uint64(s.capacity) {
		area, _ := messageBytes(s.h, s.req, s.capacity, int32(total))
		if err = fill(area, 0); err != nil {
			err = &shmError{kind: ErrInvalidArgument, msg: "reading the request failed", cause: err}
		} else {
			a, owned, err = c.call(s, &seq, int32(total), t, deadline, started)
		}
	} else {
		a, owned, err = c.sendLarge(s, &seq, total, t, fill, deadline, started)
	}
	return c.settle(s, seq, owned, a, err, deadline, started, dst)
}

// finishLarge is the end of a plain guest call that got a transfer's answer (errChunked or errChunkAck, the
// slot owned).
func (c *Client) finishLarge(s *slotView, seq uint32, a answer, err error, deadline, started int64, dst sink) ([]byte, MsgType, error) {
	return c.settle(s, seq, true, a, err, deadline, started, dst)
}

// settle takes the answer of a call on slot s (the result of call or sendLarge), fetches a large one, and
// parks the slot after success or releases it after a failure if it is still the caller's.
func (c *Client) settle(s *slotView, seq uint32, owned bool, a answer, err error, deadline, started int64, dst sink) ([]byte, MsgType, error) {
	var out []byte
	typ := a.typ
	switch err {
	case nil:
		if out, err = dst(uint64(len(a.data))); err == nil {
			copy(out, a.data)
		}
	case errChunked:
		out, typ, owned, err = c.receiveLarge(s, &seq, a, deadline, started, dst)
	case errChunkAck:
		err = c.protocolErr(s, "the host acknowledged a chunk nobody sent on guest slot %d", s.index)
	}
	if owned && err == nil {
		c.park(s.index, seq)
	} else if owned {
		release(s.h, seq)
	}
	if err != nil {
		return nil, 0, err
	}
	return out, typ, nil
}

// copySink is where SendGuestCall (buf nil: a new slice) and SendGuestCallBuffer (buf[:n]) put an answer.
func copySink(buf []byte) sink {
	return func(total uint64) ([]byte, error) {
		if buf == nil {
			return make([]byte, total), nil
		}
		if total > uint64(len(buf)) {
			return nil, newErr(ErrBufferTooSmall, "the answer has %d bytes; the buffer holds %d", total, len(buf))
		}
		return buf[:total], nil
	}
}

// sendCopyLarge is sendCopy of a request larger than a slot: it is sent as a transfer. The caller holds c.mu
// for reading and checked the client and t.
func (c *Client) sendCopyLarge(data []byte, t MsgType, timeout time.Duration, buf []byte) ([]byte, MsgType, error) {
	if uint64(len(data)) > maxMessageSize {
		return nil, 0, newErr(ErrTooLarge, "request of %d bytes exceeds the protocol's 1<<40", len(data))
	}
	if t == MsgTypeHeartbeatReq {
		return nil, 0, newErr(ErrInvalidArgument, "a heartbeat cannot be larger than a slot")
	}
	fill := func(b []byte, off uint64) error {
		copy(b, data[off:])
		return nil
	}
	return c.largeCall(uint64(len(data)), t, fill, c.deadline(timeout), copySink(buf))
}

// SendGuestCallStream calls the host with a request of size bytes read from src and type t, and returns the
// answer and its type, with one deadline for the whole call (timeout < 0: the default). The request is read
// with io.ReadFull straight into the slot, a chunk at a time, so it may be of any size up to 1<<40 bytes
// whatever the slot's capacity (the host refuses what exceeds its own limit: a *RemoteError
// WireErrRequestTooLarge). The answer may be of any size up to ClientConfig.MaxMessageSize (ErrTooLarge
// above); it is written into dst[:n] when cap(dst) >= n, without allocating, else into a new slice.
//
// The time src takes counts against the deadline, but a Read that blocks is not interrupted (nor is Close,
// which waits for the call). A src that fails or ends early fails the call with ErrInvalidArgument (wrapping
// the reader's error); whatever of the request the host holds then is dropped by the host's own rules. On
// any failure the slot is released, or left to the host when it was serving a chunk, as for every guest call.
// Errors: those of SendGuestCallWithTimeout (ErrTooLarge: size above 1<<40 or an answer above the limit), and
// ErrInvalidArgument for a negative size, a nil src with size > 0, or a large MsgTypeHeartbeatReq. Safe for
// concurrent use; src and dst belong to the caller, and only this call touches them until it returns.
func (c *Client) SendGuestCallStream(src io.Reader, size int64, t MsgType, dst []byte, timeout time.Duration) ([]byte, MsgType, error) {
	if !c.connected() {
		return nil, 0, errNotConnected()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.isClosing() {
		return nil, 0, errClientClosed()
	}
	g := c.seg.geo
	switch {
	case g.guestSlots == 0:
		return nil, 0, newErr(ErrInvalidArgument, "segment %s has no guest slots", c.seg.name)
	case size < 0:
		return nil, 0, newErr(ErrInvalidArgument, "request size %d is negative", size)
	case uint64(size) > maxMessageSize:
		return nil, 0, newErr(ErrTooLarge, "request of %d bytes exceeds the protocol's 1<<40", size)
	case src == nil && size > 0:
		return nil, 0, newErr(ErrInvalidArgument, "a request of %d bytes needs a reader", size)
	case !IsRequestType(t) || (t == MsgTypeHeartbeatReq && uint64(size) > uint64(g.guestPayload)):
		return nil, 0, newErr(ErrInvalidArgument, "message type %v is reserved by the protocol", t)
	}
	fill := func(b []byte, _ uint64) error {
		_, err := io.ReadFull(src, b)
		return err
	}
	into := func(total uint64) ([]byte, error) {
		if uint64(cap(dst)) >= total {
			return dst[:total], nil
		}
		return make([]byte, total), nil
	}
	return c.largeCall(uint64(size), t, fill, c.deadline(timeout), into)
}

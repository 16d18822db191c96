// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ClientConfig configures Connect. The zero value of every field but ShmName means its default.
type ClientConfig struct {
	// ShmName is the host's segment name: 1-100 characters of [A-Za-z0-9._-], not . or .. (the host listens
	// on the abstract Unix socket "\0shm/<ShmName>"; nothing is created in any file system).
	ShmName string
	// ConnectionTimeout bounds how long Connect waits for a live host to hand it the segment, the wait for
	// each reply of the host included. Default 10 s.
	ConnectionTimeout time.Duration
	// RetryInterval is the pause between attach attempts. Default 10 ms.
	RetryInterval time.Duration
	// DefaultTimeout is the deadline of SendGuestCall and GuestSlot.Send. Default 10 s.
	DefaultTimeout time.Duration
	// Logf, if set, receives the package's rare diagnostics (a handler panic and its value). It is called from
	// worker goroutines and must be safe for concurrent use. The package never prints by itself.
	Logf func(format string, args ...any)
	// LatencyHistogram keeps a histogram of the latency of successful guest calls, for Stats().Latency. Off
	// by default: it costs two clock reads and a few atomic operations per call.
	LatencyHistogram bool

	// Large messages (SPECIFICATION.md §8.5): requests and answers larger than a slot travel as transfers of
	// slot-sized chunks. These limits are this guest's own; the host has its own.

	// MaxMessageSize is the largest large request this guest's workers assemble (a larger one is answered
	// WireErrRequestTooLarge before anything is allocated) and the largest answer its guest calls accept
	// (ErrTooLarge). Default 1 GiB; at most 1<<40.
	MaxMessageSize uint64
	// MaxTransfers is how many partial large requests the workers hold at once, over all host slots; the
	// first chunk of one more is answered WireErrTooManyTransfers. Default 16.
	MaxTransfers int
	// TransferIdleTimeout drops a partial large request, or a large answer the host stopped fetching, after
	// this long without a chunk. Default 30 s.
	TransferIdleTimeout time.Duration
	// ReceiveBuffer, if set, names the memory a large request is assembled in: it is called on a worker with
	// the request's size and type and the host slot's index when the first chunk arrives, and returns a slice
	// of at least size bytes (nil or a shorter one: the package allocates). The handler then sees the request
	// in b[:size]. The package never zeroes it; it writes b[:size] from the worker until the last chunk, and
	// forgets b when the handler returns. It must be safe for concurrent use (workers call it in parallel),
	// and a panic in it answers WireErrHandlerFailed.
	ReceiveBuffer func(size uint64, t MsgType, slot int) []byte
}

// Defaults of the large-message limits.
const (
	defaultMaxMessageSize      uint64 = 1 << 30
	defaultMaxTransfers               = 16
	defaultTransferIdleTimeout        = 30 * time.Second
)

// Handler serves one host request. req is the request payload, in place in shared memory (end-aligned
// payloads are already located); respBuf is the slot's whole response buffer. The handler writes its answer
// into respBuf and returns its size and type: size n >= 0 means respBuf[:n], n < 0 means the last -n bytes
// of respBuf (end-aligned, as a FlatBuffers builder leaves them).
//
// Errors are answered to the host as MsgTypeSystemError, never as data: a panic, or the type
// MsgTypeSystemError, answers WireErrHandlerFailed; a size that does not fit respBuf answers
// WireErrResponseTooLarge; another reserved type answers WireErrReservedType.
//
// Contract: req and respBuf are valid only until the handler returns; the host may still write req, so parse
// it as untrusted input. The handler runs concurrently on one goroutine per host slot and must be safe for
// concurrent use. It may call SendGuestCall, AcquireGuestSlot and Close (which then does not wait for this
// handler's own worker: see Close), and every accessor.
//
// A request larger than the slot (SPECIFICATION.md §8.5) reaches the handler as one contiguous req in memory
// of this process (the package's, or ClientConfig.ReceiveBuffer's), equally valid only until it returns. A
// Handler's answer must fit respBuf; to answer more, serve with StartReply.
type Handler func(req []byte, respBuf []byte, t MsgType) (int32, MsgType)

// ReplyHandler is a Handler that may answer more than a slot holds: it returns a Reply. The contract of
// Handler applies (req, respBuf, errors, concurrency).
type ReplyHandler func(req []byte, respBuf []byte, t MsgType) Reply

// Reply is a ReplyHandler's answer. With Large nil, Size and Type are what a Handler returns: the answer lies
// in respBuf (Size < 0: end-aligned). With Large non-nil (even empty), the answer is Large and Size is
// ignored: it is sent plainly if it fits the slot, else as a transfer the host fetches chunk by chunk.
//
// Ownership: a Large longer than the slot's capacity is read by the package after the handler has returned,
// until the host has fetched its last chunk, or the transfer is dropped (the host's next request on the slot,
// TransferIdleTimeout, Close); the handler must not modify it meanwhile, and should hand over memory it does
// not reuse. Large may be respBuf or a part of it only when it fits the slot.
type Reply struct {
	Size  int32
	Type  MsgType
	Large []byte
}

// Client is a guest attached to a host's segment: it serves the host's requests (Start) and calls the host
// (SendGuestCall, AcquireGuestSlot). One guest is attached to a segment at a time: the host keeps one guest
// connection open, the guest seat.
//
// Lifetime: Connect maps the segment and keeps its connection to the host, the guest seat, until Close; if the
// process dies the kernel closes the connection, and the next guest to attach answers or frees whatever this
// one left. The same connection tells the guest whether the host is alive.
// Concurrency: every method is safe for concurrent use. Close waits for the workers (each finishes the
// request it is serving) and for calls in flight (they end with ErrClosed).
// A nil or zero Client is not connected: its methods return ErrClosed (accessors return zero) and never panic.
type Client struct {
	seg            *segment
	spin           *spinPolicy
	defaultTimeout time.Duration
	logf           func(format string, args ...any)
	latency        *latencyHistogram // nil unless ClientConfig.LatencyHistogram

	// Large messages (transfer.go).
	maxMessage    uint64
	maxTransfers  int32
	idleNs        int64
	receiveBuffer func(size uint64, t MsgType, slot int) []byte
	partial       int32 // atomic: partial large requests the workers hold

	closing uint32       // atomic; set once by Close: every wait ends
	closeMu sync.Mutex   // serialises Close
	mu      sync.RWMutex // read-held while the mapping is used by a call; write-held by Close to unmap
	closed  bool         // under mu

	// Parked slots (parked.go). parked has one word per slot (atomic): 0, or parkedBit | the seq of a guest
	// slot parked in RESPONSE. parkHint (atomic) is 1 + the index of the slot parked last, 0 for none.
	parked   []uint32
	parkHint uint32

	startMu sync.Mutex
	started bool
	workers sync.WaitGroup
	tidsMu  sync.Mutex
	tids    map[int]struct{} // OS threads of the workers (each locked to its thread): a Close from a handler
	done    chan struct{}    // closed when the last worker has exited
	exitErr error            // why the workers exited; under startMu
}

// Connect attaches to the segment cfg.ShmName (SPECIFICATION.md §4.2): it connects to the host's rendezvous
// socket, checks that the host is this user or root, sends the hello, validates the reply and the sealed memfd
// that comes with it, maps it and validates its header. It retries every cfg.RetryInterval while no host
// listens, the host closes the connection before replying, is shutting down, or has another guest, until
// cfg.ConnectionTimeout passes. Errors: ErrInvalidArgument; ErrNotFound (no host took this guest in time);
// ErrGuestAlreadyConnected (another guest stayed attached until the deadline; the text names its pid);
// ErrPermissionDenied (the host is another user, or refused this one); ErrVersionMismatch (the host or the
// segment speaks another protocol version); ErrProtocol (a malformed reply, wrong descriptors, a memfd
// without the seals that fix its size); ErrBadMagic, ErrBadGeometry, ErrTruncated (they also match
// ErrInvalidSegment); ErrSystem. A failed Connect leaves no descriptor or mapping behind. Safe for concurrent
// use.
func Connect(cfg ClientConfig) (*Client, error) {
	if !validName(cfg.ShmName) {
		return nil, newErr(ErrInvalidArgument, "segment name %q must be 1-%d characters of [A-Za-z0-9._-], not . or ..",
			cfg.ShmName, maxNameLen)
	}
	if cfg.ConnectionTimeout < 0 || cfg.RetryInterval < 0 || cfg.DefaultTimeout < 0 || cfg.TransferIdleTimeout < 0 {
		return nil, newErr(ErrInvalidArgument, "timeouts and intervals must not be negative")
	}
	if cfg.MaxMessageSize > maxMessageSize || cfg.MaxTransfers < 0 || cfg.MaxTransfers > 1<<30 {
		return nil, newErr(ErrInvalidArgument, "MaxMessageSize must be at most 1<<40 and MaxTransfers 0..1<<30")
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = defaultMaxMessageSize
	}
	if cfg.MaxTransfers == 0 {
		cfg.MaxTransfers = defaultMaxTransfers
	}
	if cfg.TransferIdleTimeout == 0 {
		cfg.TransferIdleTimeout = defaultTransferIdleTimeout
	}
	if cfg.ConnectionTimeout == 0 {
		cfg.ConnectionTimeout = 10 * time.Second
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 10 * time.Millisecond
	}
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = 10 * time.Second
	}
	deadline := deadlineAfter(cfg.ConnectionTimeout)
	var busy, last *errRetry
	for {
		seg, err := attachOnce(cfg.ShmName, deadline)
		if err == nil {
			c := &Client{seg: seg, spin: newSpinPolicy(), defaultTimeout: cfg.DefaultTimeout, logf: cfg.Logf,
				parked: make([]uint32, seg.geo.slotCount()), maxMessage: cfg.MaxMessageSize,
				maxTransfers: int32(cfg.MaxTransfers), idleNs: int64(cfg.TransferIdleTimeout),
				receiveBuffer: cfg.ReceiveBuffer}
			if cfg.LatencyHistogram {
				c.latency = newLatencyHistogram()
			}
			return c, nil
		}
		// A guest that is still dying keeps the guest seat until its last thread exits (the host answers BUSY):
		// retry that too, so a supervisor may restart a guest at once.
		retry, ok := err.(*errRetry)
		if !ok {
			return nil, err
		}
		// An attempt that ended at the deadline may have been cut short by it and then says nothing new: report
		// the last one that ended before it, and BUSY if the host ever answered that.
		if retry.busy {
			busy = retry
		}
		left := time.Duration(deadline - monoNow())
		if left > 0 {
			last = retry
		} else {
			if busy != nil {
				return nil, newErr(ErrGuestAlreadyConnected, "segment %s kept its guest (pid %d) for %v",
					cfg.ShmName, busy.busyPID, cfg.ConnectionTimeout)
			}
			if last == nil {
				last = retry
			}
			return nil, newErr(ErrNotFound, "no live host of %s took this guest within %v (%s)", cfg.ShmName,
				cfg.ConnectionTimeout, last.reason)
		}
		if left > cfg.RetryInterval {
			left = cfg.RetryInterval
		}
		time.Sleep(left)
	}
}

func (c *Client) isClosing() bool { return atomic.LoadUint32(&c.closing) != 0 }

// connected reports whether c came from Connect (a nil or zero Client did not). Closed or not, the geometry
// stays readable.
func (c *Client) connected() bool { return c != nil && c.seg != nil }

func errNotConnected() error {
	return newErr(ErrClosed, "the client is not connected (a nil or zero Client; use Connect)")
}

func errClientClosed() error { return newErr(ErrClosed, "the client is closed") }

// HostSlots returns the number of host slots, each served by one worker; 0 for a nil or zero Client. Safe
// for concurrent use.
func (c *Client) HostSlots() int {
	if !c.connected() {
		return 0
	}
	return int(c.seg.geo.hostSlots)
}

// GuestSlots returns the number of guest slots (concurrent guest calls); 0 for a nil or zero Client. Safe
// for concurrent use.
func (c *Client) GuestSlots() int {
	if !c.connected() {
		return 0
	}
	return int(c.seg.geo.guestSlots)
}

// GuestPayloadCapacity returns the capacity in bytes of a guest slot's request (and response) buffer; 0 for
// a nil or zero Client. Safe for concurrent use.
func (c *Client) GuestPayloadCapacity() int {
	if !c.connected() {
		return 0
	}
	return int(c.seg.geo.guestPayload)
}

// HostPayloadCapacity returns the capacity in bytes of a host slot's request (and response) buffer, the size
// of a handler's respBuf; 0 for a nil or zero Client. Safe for concurrent use.
func (c *Client) HostPayloadCapacity() int {
	if !c.connected() {
		return 0
	}
	return int(c.seg.geo.hostPayload)
}

// HostAlive reports whether the host is alive: whether its end of the guest connection is still open (a
// system call). false after Close and for a nil or zero Client. Safe for concurrent use.
func (c *Client) HostAlive() bool {
	if !c.connected() {
		return false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !c.closed && c.seg.hostAlive()
}

// Start serves every host slot: one goroutine per slot, locked to its OS thread (it sleeps in FUTEX_WAIT),
// runs h on each request. MsgTypeHeartbeatReq is answered by the runtime without calling h. Idle workers spin
// briefly, then sleep; they exit when the host sends shutdown or dies, or on Close. Errors:
// ErrClosed (checked first), ErrInvalidArgument (nil handler, or Start was already called). Safe for
// concurrent use.
func (c *Client) Start(h Handler) error {
	if h == nil {
		return c.start(nil, nil)
	}
	return c.start(h, nil)
}

// StartReply is Start with a ReplyHandler, whose answers may be larger than a slot. Start or StartReply may
// be called once per Client; the errors are Start's.
func (c *Client) StartReply(h ReplyHandler) error {
	if h == nil {
		return c.start(nil, nil)
	}
	return c.start(nil, h)
}

// start runs the workers with h or rh (exactly one non-nil, or both nil: refused).
func (c *Client) start(h Handler, rh ReplyHandler) error {
	if !c.connected() {
		return errNotConnected()
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed || c.isClosing() {
		return errClientClosed()
	}
	if h == nil && rh == nil {
		return newErr(ErrInvalidArgument, "Start needs a handler")
	}
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.isClosing() {
		return errClientClosed()
	}
	if c.started {
		return newErr(ErrInvalidArgument, "Start was already called")
	}
	c.started = true
	c.done = make(chan struct{})
	n := int(c.seg.geo.hostSlots)
	c.workers.Add(n)
	for i := 0; i < n; i++ {
		go c.work(&c.seg.slots[i], handlers{h, rh})
	}
	go func() {
		c.workers.Wait()
		close(c.done)
	}()
	return nil
}

// Wait blocks until every worker has exited and says why: nil if the host sent shutdown or Close was called,
// an error matching ErrHostGone if the host died. It returns nil at once if Start was not called. A dead host
// is noticed within about 50 ms, so Wait cannot hang on a vanished host. ErrClosed for a nil or zero Client.
// Safe for concurrent use.
func (c *Client) Wait() error {
	if !c.connected() {
		return errNotConnected()
	}
	c.startMu.Lock()
	done := c.done
	c.startMu.Unlock()
	if done == nil {
		return nil
	}
	<-done
	c.startMu.Lock()
	defer c.startMu.Unlock()
	return c.exitErr
}

// Close stops the workers (each finishes the request it is serving), ends calls in flight with ErrClosed,
// unmaps the segment and closes the connection to the host, which frees the guest seat. From then on every
// call fails with ErrClosed. Slices obtained from the segment (GuestSlot buffers, a handler's req and respBuf)
// must not be used afterwards. Idempotent (nil after the first); ErrClosed for a nil or zero Client. Safe for
// concurrent use, and from a handler: there it does not wait for the calling worker, which ends once the
// handler has returned and its answer is delivered; the segment is unmapped and the seat freed then, and Wait
// returns then. A handler's Close that finds another Close running returns at once (that one waits for it).
func (c *Client) Close() error {
	if !c.connected() {
		return errNotConnected()
	}
	fromHandler := c.onWorkerThread()
	if fromHandler {
		if !c.closeMu.TryLock() {
			return nil
		}
	} else {
		c.closeMu.Lock()
	}
	if atomic.LoadUint32(&c.closing) != 0 {
		c.closeMu.Unlock()
		return nil
	}
	atomic.StoreUint32(&c.closing, 1)
	// Make every sleeper re-check: workers on host slots, callers on guest slots.
	for i := range c.seg.slots {
		nudge(&c.seg.slots[i].h.ctl)
	}
	// A call that parks from now on sees closing and frees its slot itself (park).
	c.releaseAllParked()
	// Start checks closing under startMu, so once this section has passed no worker can be added.
	c.startMu.Lock()
	c.startMu.Unlock()
	finish := func() {
		c.workers.Wait()
		c.mu.Lock()
		c.closed = true
		c.seg.close()
		c.mu.Unlock()
		c.closeMu.Unlock()
	}
	if fromHandler {
		go finish() // waits for the calling worker too, after its handler returns
		return nil
	}
	finish()
	return nil
}

// onWorkerThread reports whether the caller runs on one of this Client's worker threads (inside a handler):
// each worker is locked to its OS thread for its whole life.
func (c *Client) onWorkerThread() bool {
	tid := currentThreadID()
	c.tidsMu.Lock()
	defer c.tidsMu.Unlock()
	_, ok := c.tids[tid]
	return ok
}

func (c *Client) setWorkerThread(tid int, on bool) {
	c.tidsMu.Lock()
	defer c.tidsMu.Unlock()
	if on {
		if c.tids == nil {
			c.tids = make(map[int]struct{})
		}
		c.tids[tid] = struct{}{}
	} else {
		delete(c.tids, tid)
	}
}

func (c *Client) logPanic(slot uint32, v any) {
	if c.logf != nil {
		c.logf("shm: handler panicked on slot %d: %v", slot, v)
	}
}

// handlers is what a worker runs: exactly one of the two is set.
type handlers struct {
	plain Handler
	reply ReplyHandler
}

// work serves one host slot until shutdown, host death or Close.
func (c *Client) work(s *slotView, h handlers) {
	// The worker sleeps in FUTEX_WAIT: keep it on one OS thread so the runtime does not shuffle goroutines
	// around a thread that is parked in the kernel.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer c.workers.Done()
	tid := currentThreadID()
	c.setWorkerThread(tid, true)
	defer c.setWorkerThread(tid, false)
	hostGone := false
	var tr slotTransfers // this slot's transfers (§8.5); only this worker touches them
	defer c.dropTransfers(&tr)
	isRequest := func(w uint32) bool { return ctlState(w) == stateRequest }
	abort := func(slow bool) bool {
		if c.isClosing() || c.seg.hostShuttingDown() {
			return true
		}
		if slow && tr.held() {
			c.sweepTransfers(&tr, monoNow())
		}
		if slow && !c.seg.hostAlive() {
			// A host that shuts down closes the guest connection right after setting SHUTTING_DOWN: if that
			// happened since the check above, this is a shutdown, not a death.
			hostGone = !c.seg.hostShuttingDown()
			return true
		}
		return false
	}
	start := startSpin
	var shared sharedCPU // this worker's record of the host caller on its CPU (§7.3)
	for {
		_, st := waitFor(&s.h.ctl, &s.h.wakeStampNs, noDeadline, c.spin, isRequest, abort, ctlWaiting, start,
			&shared, nil)
		if st != waitReady {
			break
		}
		wokeHost := false
		if seq, ok := tryTake(s.h); ok {
			if tr.held() {
				c.sweepTransfers(&tr, monoNow())
			}
			wokeHost = c.serve(s, seq, h, &tr)
		}
		// Having woken the host, keep spinning for its next request (it may come at once), but offer this CPU
		// from the start: the host may be queued on it. Sleeping here instead would let a busy exchange settle
		// into both sides sleeping on every message.
		start = startSpin
		if wokeHost {
			start = startYield
		}
	}
	if hostGone {
		c.startMu.Lock()
		if c.exitErr == nil {
			c.exitErr = newErr(ErrHostGone, "the host of %s died", c.seg.name)
		}
		c.startMu.Unlock()
	}
}

// serve is the server half of a transaction on a slot this worker took at seq (SPECIFICATION.md §8.4). It
// reports whether the host was asleep on the slot and has been woken.
func (c *Client) serve(s *slotView, seq uint32, h handlers, tr *slotTransfers) (wokeHost bool) {
	cnt := &c.seg.blocks[s.index]
	// Read once into locals; only the locals are used from here on.
	size := int32(atomic.LoadUint32(&s.h.reqSize))
	typ := MsgType(atomic.LoadUint32(&s.h.reqType))
	if typ == MsgTypeChunk || typ == MsgTypeChunkNext {
		// A transfer's (§8.5): its size follows its own rules.
		if typ == MsgTypeChunk {
			c.serveChunk(s, size, h, tr)
		} else {
			c.serveChunkNext(s, size, tr)
		}
		return c.finishServe(s, seq, cnt)
	}
	if tr.held() {
		c.dropTransfers(tr) // a new request on the slot ends any transfer on it
	}
	req, ok := messageBytes(s.h, s.req, s.capacity, size)
	answerError := func(e WireError) {
		writeErrorResponse(s.h, e)
		countAnswered(cnt, e)
	}
	switch {
	case !ok:
		answerError(WireErrRequestTooLarge)
	case !IsRequestType(typ):
		answerError(WireErrReservedType)
	case typ == MsgTypeHeartbeatReq:
		atomic.StoreUint32(&s.h.respType, uint32(MsgTypeHeartbeatResp))
		atomic.StoreUint32(&s.h.respSize, 0)
		atomic.StoreUint32(&s.h.respError, 0)
		count(cnt, cntHeartbeats, 1)
	case c.isClosing():
		answerError(WireErrShuttingDown)
	default:
		count(cnt, cntServeBytesIn, uint64(len(req)))
		c.respond(s, h, req, typ, tr)
	}
	return c.finishServe(s, seq, cnt)
}

// respond runs the handler on a whole request and writes its answer, or the error it earned, into the
// response fields (§8.4 steps 3-4); an answer larger than the slot starts an outgoing transfer (§8.5).
func (c *Client) respond(s *slotView, h handlers, req []byte, typ MsgType, tr *slotTransfers) {
	cnt := &c.seg.blocks[s.index]
	answerError := func(e WireError) {
		writeErrorResponse(s.h, e)
		countAnswered(cnt, e)
	}
	r, failed := c.runHandler(s, h, req, typ)
	n, rt := r.Size, r.Type
	if r.Large != nil && !failed && rt != MsgTypeSystemError && IsResponseType(rt) {
		c.replyLarge(s, r.Large, rt, tr)
		return
	}
	off, length, fits := placement(n, s.capacity)
	switch {
	case failed || rt == MsgTypeSystemError:
		answerError(WireErrHandlerFailed)
	case !IsResponseType(rt):
		answerError(WireErrReservedType)
	case !fits:
		answerError(WireErrResponseTooLarge)
	default:
		// A small answer travels in the header (§8.1); the handler is done with the request, whose inline
		// bytes this overwrites.
		if length != 0 && length <= inlineSize {
			dst, _ := messageBytes(s.h, s.resp, s.capacity, n)
			copy(dst, s.resp[off:off+length])
		}
		atomic.StoreUint32(&s.h.respType, uint32(rt))
		atomic.StoreUint32(&s.h.respSize, uint32(n))
		atomic.StoreUint32(&s.h.respError, 0)
		count(cnt, cntServeBytesOut, uint64(length))
	}
}

// finishServe publishes the answer written in the response fields of the transaction taken at seq.
func (c *Client) finishServe(s *slotView, seq uint32, cnt *counterBlock) (wokeHost bool) {
	count(cnt, cntServed, 1)
	// T4, or T7 if the host abandoned the call meanwhile (the answer is dropped); a slot taken from this
	// server by recovery is left alone.
	var out completeOutcome
	out, wokeHost = complete(s.h, seq)
	switch out {
	case completeDiscarded:
		countShared(cnt, cntLate, 1)
	case completeLost:
		countShared(cnt, cntLost, 1)
	}
	return wokeHost
}

// runHandler calls the handler, turning a panic into failed = true.
func (c *Client) runHandler(s *slotView, h handlers, req []byte, t MsgType) (r Reply, failed bool) {
	defer func() {
		if v := recover(); v != nil {
			c.logPanic(s.index, v)
			r, failed = Reply{Type: MsgTypeSystemError}, true
		}
	}()
	if h.reply != nil {
		return h.reply(req, s.resp[:s.capacity:s.capacity], t), false
	}
	r.Size, r.Type = h.plain(req, s.resp[:s.capacity:s.capacity], t)
	return r, false
}

// String names the client by its segment ("shm.Client(my-segment)"). Safe for concurrent use, also after
// Close and on a nil or zero Client.
func (c *Client) String() string {
	if !c.connected() {
		return "shm.Client(not connected)"
	}
	return fmt.Sprintf("shm.Client(%s)", c.seg.name)
}

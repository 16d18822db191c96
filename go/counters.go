// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

import (
	"sync/atomic"
	"unsafe"
)

// The counters region after the segment (SPECIFICATION.md §5.4), counters version 1. Each side writes only
// its own array of per-slot blocks; the guest's blocks count the current guest's session. Checked against
// the C++ definitions by TestLayoutMatchesCpp.

const (
	countersVersion    uint32 = 1
	countersMagic      uint64 = 0x3130544E434D4853 // "SHMCNT01" read as a little-endian u64
	countersHeaderSize uint32 = 128
	counterBlockSize   uint32 = 128
	countersPerBlock          = 16
	countedWireErrors  uint32 = 7
)

// Counters of a caller block (the guest's block of a guest slot).
const (
	cntCalls        = 0
	cntCallBytesOut = 1
	cntCallBytesIn  = 2
	cntTimeouts     = 3
	cntPeerDead     = 4
	cntProtocol     = 5
	cntEnded        = 6
	cntRemoteBase   = 8 // + WireError 1..7; + 0 for a value §11 does not define
)

// Counters of a server block (the guest's block of a host slot).
const (
	cntServed        = 0
	cntServeBytesIn  = 1
	cntServeBytesOut = 2
	cntLate          = 3
	cntLost          = 4
	cntHeartbeats    = 5
	cntAnsweredBase  = 8 // + WireError 1..7
)

// countersHeader mirrors the region's 128-byte header at offset total_size.
type countersHeader struct {
	magic         uint64
	version       uint32
	headerSize    uint32
	blockSize     uint32
	slotCount     uint32
	countersSize  uint64
	hostSinceNs   uint64
	guestAttached uint32
	reserved0     [20]byte
	guestSinceNs  uint64
	reserved1     [56]byte
}

// counterBlock is one side's 16 counters of one slot.
type counterBlock [countersPerBlock]uint64

var (
	_ [unsafe.Sizeof(countersHeader{}) - uintptr(countersHeaderSize)]struct{}
	_ [uintptr(countersHeaderSize) - unsafe.Sizeof(countersHeader{})]struct{}
	_ [unsafe.Sizeof(counterBlock{}) - uintptr(counterBlockSize)]struct{}
	_ [uintptr(counterBlockSize) - unsafe.Sizeof(counterBlock{})]struct{}
)

// countersSize is the size of the counters region of g. Precondition: g.valid().
func (g geometry) countersSize() uint64 {
	return alignUp(uint64(countersHeaderSize)+2*uint64(counterBlockSize)*uint64(g.slotCount()), pageSize)
}

// hostBlockOffset and guestBlockOffset are the offsets in the memfd of each side's block of slot i.
func (g geometry) hostBlockOffset(i uint32) uint64 {
	return g.totalSize() + uint64(countersHeaderSize) + uint64(counterBlockSize)*uint64(i)
}
func (g geometry) guestBlockOffset(i uint32) uint64 {
	return g.totalSize() + uint64(countersHeaderSize) + uint64(counterBlockSize)*uint64(g.slotCount()+i)
}

// countersPresent says whether b, a copy of the first bytes at offset total_size of a memfd of fileSize bytes
// with validated geometry g, is the header of a counters region this package knows (§5.4).
func countersPresent(b []byte, g geometry, fileSize int64) bool {
	if fileSize < 0 || uint64(fileSize) < g.totalSize()+g.countersSize() || len(b) < 32 {
		return false
	}
	le := leBytes{b}
	return le.u64(0) == countersMagic && le.u32(8) == countersVersion && le.u32(12) == countersHeaderSize &&
		le.u32(16) == counterBlockSize && le.u32(20) == g.slotCount() && le.u64(24) == g.countersSize()
}

// count adds n to a counter of a slot this goroutine holds (caller: CLAIMED or RESPONSE; server: SERVING or
// ABANDONED). A plain add, no locked instruction (the hot path of §5.4): no other goroutine of this guest writes
// the block meanwhile, and the slot's control-word CAS orders the handoffs between them. An aligned 8-byte
// store is single-copy atomic on the platforms this package runs on, so a reader in another process sees old
// or new values, never a torn one.
func count(b *counterBlock, i int, n uint64) { b[i] += n }

// countShared adds n to a counter of a slot this goroutine may no longer hold (every error count).
func countShared(b *counterBlock, i int, n uint64) { atomic.AddUint64(&b[i], n) }

// countAnswered counts a SYSTEM_ERROR answer with e this guest, as server, is about to publish.
func countAnswered(b *counterBlock, e WireError) {
	if v := uint32(e); v >= 1 && v <= countedWireErrors {
		count(b, cntAnsweredBase+int(v), 1)
	}
}

// countRemote counts a SYSTEM_ERROR answer with e this guest received as caller.
func countRemote(b *counterBlock, e WireError) {
	i := cntRemoteBase
	if v := uint32(e); v >= 1 && v <= countedWireErrors {
		i += int(v)
	}
	countShared(b, i, 1)
}

// CallStats is what the guest counted as the caller of the guest slots (its guest calls).
type CallStats struct {
	Calls    uint64 // calls that ended with an answer this guest accepted (a large one is one call)
	BytesOut uint64 // request bytes of every published request (of a large one, all of its chunks)
	BytesIn  uint64 // response bytes of the accepted answers (of a large one, its whole size)
	Timeouts uint64 // calls that ended at their deadline (ErrTimeout)
	HostGone uint64 // calls that ended because the host died (ErrHostGone)
	Protocol uint64 // calls that ended with a protocol violation by the host (ErrProtocol)
	Ended    uint64 // calls ended by the host's shutdown or this client's Close
	// Remote counts SYSTEM_ERROR answers (a *RemoteError) by WireError: Remote[e] for e in 1..7, Remote[0]
	// for a value this version does not define.
	Remote [8]uint64
}

// ServeStats is what the guest counted as the server of the host slots.
type ServeStats struct {
	Served     uint64 // requests taken and finished, error answers and dropped answers included
	BytesIn    uint64 // request bytes handed to the handler
	BytesOut   uint64 // response bytes written
	Late       uint64 // answers discarded because the host had given up (timed out) meanwhile
	Lost       uint64 // answers dropped because the slot had been taken from this server
	Heartbeats uint64 // HEARTBEAT_REQ answered by the runtime
	// AnsweredErrors counts the SYSTEM_ERROR answers this guest sent, by WireError (1..7; [0] is unused).
	AnsweredErrors [8]uint64
}

// Stats is the guest's counters at one moment (SPECIFICATION.md §5.4), as Client.Stats returns them. Each
// counter is read once with an atomic load; the set is not a consistent snapshot while calls run.
type Stats struct {
	Shared     bool         // the counters live in the segment, where shm-inspect reads them
	Calls      CallStats    // guest calls, summed over the guest slots
	Served     ServeStats   // host calls served, summed over the host slots
	CallSlots  []CallStats  // per guest slot: guest slot j at [j]
	ServeSlots []ServeStats // per host slot: host slot i at [i]
	Latency    LatencyStats // guest calls; empty unless ClientConfig.LatencyHistogram
}

// LatencyStats holds percentiles of the latency of successful guest calls (publish, wait, read the answer;
// claiming a slot is not included; a large call is one sample), in nanoseconds. Each is the upper bound of the histogram bucket that holds
// it (at most 1/16 above the true value), capped at the largest sample.
type LatencyStats struct {
	Enabled                     bool // ClientConfig.LatencyHistogram was set
	Count                       uint64
	MinNs, MaxNs                uint64
	P50Ns, P90Ns, P99Ns, P999Ns uint64
}

// latencyHistogram counts durations in log-linear buckets (every power of two split in 16), as the C++
// LatencyHistogram does. add is safe for concurrent use and lock-free.
type latencyHistogram struct {
	counts   [(64 - latencySubBits + 1) << latencySubBits]uint64
	min, max uint64
}

const latencySubBits = 4

func newLatencyHistogram() *latencyHistogram { return &latencyHistogram{min: ^uint64(0)} }

func latencyIndex(v uint64) int {
	const sub = 1 << latencySubBits
	if v < sub {
		return int(v)
	}
	p := 63
	for v>>uint(p) == 0 {
		p--
	}
	s := (v >> uint(p-latencySubBits)) & (sub - 1)
	return (p-latencySubBits+1)<<latencySubBits + int(s)
}

func latencyUpperBound(i int) uint64 {
	const sub = 1 << latencySubBits
	if i < sub {
		return uint64(i)
	}
	p := i>>latencySubBits + latencySubBits - 1
	s := uint64(i & (sub - 1))
	low := uint64(1)<<uint(p) | s<<uint(p-latencySubBits)
	return low + uint64(1)<<uint(p-latencySubBits) - 1
}

func (h *latencyHistogram) add(ns uint64) {
	atomic.AddUint64(&h.counts[latencyIndex(ns)], 1)
	for m := atomic.LoadUint64(&h.max); ns > m && !atomic.CompareAndSwapUint64(&h.max, m, ns); m = atomic.LoadUint64(&h.max) {
	}
	for m := atomic.LoadUint64(&h.min); ns < m && !atomic.CompareAndSwapUint64(&h.min, m, ns); m = atomic.LoadUint64(&h.min) {
	}
}

func (h *latencyHistogram) read() LatencyStats {
	s := LatencyStats{Enabled: true}
	var counts [len(h.counts)]uint64
	for i := range h.counts {
		counts[i] = atomic.LoadUint64(&h.counts[i])
		s.Count += counts[i]
	}
	if s.Count == 0 {
		return s
	}
	s.MaxNs = atomic.LoadUint64(&h.max)
	s.MinNs = atomic.LoadUint64(&h.min)
	if s.MinNs > s.MaxNs {
		s.MinNs = s.MaxNs
	}
	at := func(tenThousandths uint64) uint64 {
		rank := (s.Count*tenThousandths + 9999) / 10000
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for i, n := range counts {
			seen += n
			if seen >= rank {
				if ub := latencyUpperBound(i); ub < s.MaxNs {
					return ub
				}
				return s.MaxNs
			}
		}
		return s.MaxNs
	}
	s.P50Ns, s.P90Ns, s.P99Ns, s.P999Ns = at(5000), at(9000), at(9900), at(9990)
	return s
}

func (a *CallStats) add(b CallStats) {
	a.Calls += b.Calls
	a.BytesOut += b.BytesOut
	a.BytesIn += b.BytesIn
	a.Timeouts += b.Timeouts
	a.HostGone += b.HostGone
	a.Protocol += b.Protocol
	a.Ended += b.Ended
	for i := range a.Remote {
		a.Remote[i] += b.Remote[i]
	}
}

func (a *ServeStats) add(b ServeStats) {
	a.Served += b.Served
	a.BytesIn += b.BytesIn
	a.BytesOut += b.BytesOut
	a.Late += b.Late
	a.Lost += b.Lost
	a.Heartbeats += b.Heartbeats
	for i := range a.AnsweredErrors {
		a.AnsweredErrors[i] += b.AnsweredErrors[i]
	}
}

// Stats returns this guest's counters: its serving of host calls and its guest calls, counted since it
// attached. Zero on a nil, zero or closed Client. Safe for concurrent use.
func (c *Client) Stats() Stats {
	var st Stats
	if !c.connected() {
		return st
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return st
	}
	s := c.seg
	st.Shared = s.sharedCounters
	ld := func(b *counterBlock, i int) uint64 { return atomic.LoadUint64(&b[i]) }
	for i := uint32(0); i < s.geo.hostSlots; i++ {
		b := &s.blocks[i]
		v := ServeStats{Served: ld(b, cntServed), BytesIn: ld(b, cntServeBytesIn), BytesOut: ld(b, cntServeBytesOut),
			Late: ld(b, cntLate), Lost: ld(b, cntLost), Heartbeats: ld(b, cntHeartbeats)}
		for e := 1; e < 8; e++ {
			v.AnsweredErrors[e] = ld(b, cntAnsweredBase+e)
		}
		st.Served.add(v)
		st.ServeSlots = append(st.ServeSlots, v)
	}
	for i := s.geo.hostSlots; i < s.geo.slotCount(); i++ {
		b := &s.blocks[i]
		v := CallStats{Calls: ld(b, cntCalls), BytesOut: ld(b, cntCallBytesOut), BytesIn: ld(b, cntCallBytesIn),
			Timeouts: ld(b, cntTimeouts), HostGone: ld(b, cntPeerDead), Protocol: ld(b, cntProtocol),
			Ended: ld(b, cntEnded)}
		for e := 0; e < 8; e++ {
			v.Remote[e] = ld(b, cntRemoteBase+e)
		}
		st.Calls.add(v)
		st.CallSlots = append(st.CallSlots, v)
	}
	if c.latency != nil {
		st.Latency = c.latency.read()
	}
	return st
}

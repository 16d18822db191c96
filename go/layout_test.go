// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// goLayout renders this package's wire layout with the keys of tests/crosslang/layout_dump.cc.
func goLayout() map[string]string {
	m := map[string]string{}
	put := func(k string, v uint64) { m[k] = strconv.FormatUint(v, 10) }
	b2u := func(b bool) uint64 {
		if b {
			return 1
		}
		return 0
	}

	var h segmentHeader
	put("segment_header.size", uint64(unsafe.Sizeof(h)))
	for name, off := range map[string]uintptr{
		"magic": unsafe.Offsetof(h.magic), "version": unsafe.Offsetof(h.version),
		"header_size": unsafe.Offsetof(h.headerSize), "slot_header_size": unsafe.Offsetof(h.slotHeaderSize),
		"host_slots": unsafe.Offsetof(h.hostSlots), "guest_slots": unsafe.Offsetof(h.guestSlots),
		"host_payload": unsafe.Offsetof(h.hostPayload), "guest_payload": unsafe.Offsetof(h.guestPayload),
		"flags": unsafe.Offsetof(h.flags), "total_size": unsafe.Offsetof(h.totalSize),
		"reserved0": unsafe.Offsetof(h.reserved0), "host_state": unsafe.Offsetof(h.hostState),
		"host_pid": unsafe.Offsetof(h.hostPID), "guest_pid": unsafe.Offsetof(h.guestPID),
		"guest_session": unsafe.Offsetof(h.guestSession), "reserved1": unsafe.Offsetof(h.reserved1),
		"doorbell": unsafe.Offsetof(h.doorbell), "reserved2": unsafe.Offsetof(h.reserved2),
	} {
		put("segment_header."+name+".offset", uint64(off))
	}
	put("segment_header.reserved0.size", uint64(len(h.reserved0)))
	put("segment_header.reserved1.size", uint64(len(h.reserved1)))
	put("segment_header.reserved2.size", uint64(len(h.reserved2)))
	put("segment_header.magic.size", uint64(unsafe.Sizeof(h.magic)))
	put("segment_header.total_size.size", uint64(unsafe.Sizeof(h.totalSize)))
	put("segment_header.doorbell.size", uint64(unsafe.Sizeof(h.doorbell)))

	var s slotHeader
	put("slot_header.size", uint64(unsafe.Sizeof(s)))
	for name, off := range map[string]uintptr{
		"ctl": unsafe.Offsetof(s.ctl), "req_type": unsafe.Offsetof(s.reqType), "req_size": unsafe.Offsetof(s.reqSize),
		"resp_type": unsafe.Offsetof(s.respType), "resp_size": unsafe.Offsetof(s.respSize),
		"resp_error": unsafe.Offsetof(s.respError), "wake_stamp_ns": unsafe.Offsetof(s.wakeStampNs),
		"inline_data": unsafe.Offsetof(s.inlineData),
	} {
		put("slot_header."+name+".offset", uint64(off))
	}
	put("slot_header.inline_data.size", uint64(len(s.inlineData)))
	put("slot_header.ctl.size", uint64(unsafe.Sizeof(s.ctl)))
	put("slot_header.wake_stamp_ns.size", uint64(unsafe.Sizeof(s.wakeStampNs)))

	var ck chunkHeader
	put("chunk_header.size", uint64(unsafe.Sizeof(ck)))
	for name, off := range map[string]uintptr{
		"stream_id": unsafe.Offsetof(ck.streamID), "total": unsafe.Offsetof(ck.total),
		"offset": unsafe.Offsetof(ck.offset), "msg_type": unsafe.Offsetof(ck.msgType),
		"reserved": unsafe.Offsetof(ck.reserved),
	} {
		put("chunk_header."+name+".offset", uint64(off))
	}
	// encode must put each field where the struct has it.
	enc := chunkHeader{streamID: 1, total: 2, offset: 3, msgType: 4, reserved: 5}.encode()
	for i, off := range []uintptr{unsafe.Offsetof(ck.streamID), unsafe.Offsetof(ck.total),
		unsafe.Offsetof(ck.offset), unsafe.Offsetof(ck.msgType), unsafe.Offsetof(ck.reserved)} {
		if enc[off] != byte(i+1) {
			m["chunk_header.encode"] = "wrong" // not in the dump: reported as a mismatch
		}
	}
	if decodeChunkHeader(&enc) != (chunkHeader{1, 2, 3, 4, 5}) {
		m["chunk_header.decode"] = "wrong"
	}
	put("const.max_message_size", maxMessageSize)
	put("const.chunk_next_size", uint64(chunkNextSize))

	put("const.version", uint64(protocolVersion))
	put("const.magic", segmentMagic)
	put("const.cache_line", uint64(cacheLine))
	put("const.page", pageSize)
	put("const.segment_header_size", uint64(segmentHeaderSize))
	put("const.slot_header_size", uint64(slotHeaderSize))
	put("const.payload_align", uint64(payloadAlign))
	put("const.inline_size", uint64(inlineSize))
	put("const.min_payload", uint64(minPayload))
	put("const.max_payload", uint64(maxPayload))
	put("const.max_slots", uint64(maxSlots))
	put("const.max_segment_size", maxSegmentSize)
	put("const.liveness_slice_ns", uint64(livenessSliceNs))

	for name, t := range map[string]MsgType{
		"NORMAL": MsgTypeNormal, "HEARTBEAT_REQ": MsgTypeHeartbeatReq, "HEARTBEAT_RESP": MsgTypeHeartbeatResp,
		"SHUTDOWN": MsgTypeShutdown, "CHUNK": MsgTypeChunk, "CHUNK_ACK": MsgTypeChunkAck,
		"CHUNK_NEXT": MsgTypeChunkNext, "FLATBUFFER": MsgTypeFlatbuffer, "GUEST_CALL": MsgTypeGuestCall,
		"SYSTEM_ERROR": MsgTypeSystemError, "APP_START": MsgTypeAppStart,
	} {
		put("msg_type."+name, uint64(t))
		if t.String() != name {
			m["msg_type_name."+name] = t.String() // not in the dump: reported as a mismatch
		}
	}
	types := []uint32{0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF}
	for v := uint32(0); v < 300; v++ {
		types = append(types, v)
	}
	for _, v := range types {
		put(fmt.Sprintf("is_request_type.%d", v), b2u(IsRequestType(MsgType(v))))
		put(fmt.Sprintf("is_response_type.%d", v), b2u(IsResponseType(MsgType(v))))
	}
	for v := 0; v <= 9; v++ {
		m[fmt.Sprintf("wire_error.%d", v)] = WireError(v).String()
	}
	put("wire_error.count", 10)

	for name, st := range map[string]uint32{"FREE": stateFree, "CLAIMED": stateClaimed, "REQUEST": stateRequest,
		"SERVING": stateServing, "RESPONSE": stateResponse, "ABANDONED": stateAbandoned} {
		put("slot_state."+name, uint64(st))
	}
	put("slot_state.count", uint64(stateCount))
	put("ctl.state_mask", uint64(ctlStateMask))
	put("ctl.waiting", uint64(ctlWaiting))
	put("ctl.reserved_bits", uint64(ctlReservedBits))
	put("ctl.seq_shift", uint64(ctlSeqShift))
	put("ctl.seq_mask", uint64(ctlSeqMask))
	put("ctl.make.request.0x123456", uint64(makeCtl(stateRequest, 0x123456)))
	put("ctl.make.free.0x1000000", uint64(makeCtl(stateFree, 0x1000000)))
	put("ctl.next_seq.0xFFFFFF", uint64(nextSeq(0xFFFFFF)))
	put("doorbell.waiting", uint64(doorbellWaiting))
	put("doorbell.increment", uint64(doorbellIncrement))
	put("host_state.RUNNING", uint64(hostRunning))
	put("host_state.SHUTTING_DOWN", uint64(hostShuttingDown))
	put("handshake.hello_magic", helloMagic)
	put("handshake.hello_size", helloSize)
	put("handshake.reply_size", replySize)
	put("attach_role.GUEST", uint64(roleGuest))
	put("attach_role.OBSERVER", uint64(roleObserver))
	for name, st := range map[string]uint32{"ACCEPTED": statusAccepted, "BUSY": statusBusy, "DENIED": statusDenied,
		"VERSION": statusVersion, "BAD_HELLO": statusBadHello, "SHUTTING_DOWN": statusShuttingDown} {
		put("attach_status."+name, uint64(st))
		if statusName(st) != name {
			m["attach_status_name."+name] = statusName(st) // not in the dump: reported as a mismatch
		}
	}
	put("seal.F_SEAL_SEAL", sealSeal)
	put("seal.F_SEAL_SHRINK", sealShrink)
	put("seal.F_SEAL_GROW", sealGrow)
	put("seal.F_SEAL_WRITE", sealWrite)
	put("seal.F_SEAL_FUTURE_WRITE", sealFutureWrite)
	put("fcntl.F_ADD_SEALS", fAddSeals)
	put("fcntl.F_GET_SEALS", fGetSeals)
	put("const.max_name_length", maxNameLen)
	put("futex.FUTEX_WAIT", futexWaitOp)
	put("futex.FUTEX_WAKE", futexWakeOp)

	var ch countersHeader
	put("counters_header.size", uint64(unsafe.Sizeof(ch)))
	for name, off := range map[string]uintptr{
		"magic": unsafe.Offsetof(ch.magic), "version": unsafe.Offsetof(ch.version),
		"header_size": unsafe.Offsetof(ch.headerSize), "block_size": unsafe.Offsetof(ch.blockSize),
		"slot_count": unsafe.Offsetof(ch.slotCount), "counters_size": unsafe.Offsetof(ch.countersSize),
		"host_since_ns": unsafe.Offsetof(ch.hostSinceNs), "guest_attached": unsafe.Offsetof(ch.guestAttached),
		"reserved0":      unsafe.Offsetof(ch.reserved0),
		"guest_since_ns": unsafe.Offsetof(ch.guestSinceNs), "reserved1": unsafe.Offsetof(ch.reserved1),
	} {
		put("counters_header."+name+".offset", uint64(off))
	}
	put("counters_header.reserved0.size", uint64(len(ch.reserved0)))
	put("counters_header.reserved1.size", uint64(len(ch.reserved1)))
	put("counter_block.size", uint64(unsafe.Sizeof(counterBlock{})))
	put("counters.version", uint64(countersVersion))
	put("counters.magic", countersMagic)
	put("counters.per_block", countersPerBlock)
	put("counters.counted_wire_errors", uint64(countedWireErrors))
	for name, v := range map[string]int{"calls": cntCalls, "bytes_out": cntCallBytesOut, "bytes_in": cntCallBytesIn,
		"timeouts": cntTimeouts, "peer_dead": cntPeerDead, "protocol": cntProtocol, "ended": cntEnded,
		"remote_base": cntRemoteBase} {
		put("counter.caller."+name, uint64(v))
	}
	for name, v := range map[string]int{"served": cntServed, "bytes_in": cntServeBytesIn,
		"bytes_out": cntServeBytesOut, "late": cntLate, "lost": cntLost, "heartbeats": cntHeartbeats,
		"answered_base": cntAnsweredBase} {
		put("counter.server."+name, uint64(v))
	}

	for _, size := range []int32{0, 1, 64, 127, 128, 129, -1, -64, -128, -129, -1 << 31, -1<<31 + 1, 1<<31 - 1} {
		off, length, ok := placement(size, 128)
		key := fmt.Sprintf("placement.128.%d", size)
		put(key+".ok", b2u(ok))
		if ok {
			put(key+".offset", uint64(off))
			put(key+".length", uint64(length))
		}
	}

	// Where a message's bytes lie (§8.1) in a slot of 128-byte buffers: inline (at an offset from the header's
	// inline area) or in the buffer (at an offset from its start).
	{
		// One block, with a gap between the header and the buffer, so that an address tells them apart.
		var mem struct {
			h      slotHeader
			gap    [64]byte
			buffer [128]byte
		}
		h, buffer := &mem.h, mem.buffer[:]
		for _, size := range []int32{0, 1, 31, 32, 33, 64, 128, 129, -1, -31, -32, -33, -128, -129, -1 << 31} {
			b, ok := messageBytes(h, buffer, 128, size)
			key := fmt.Sprintf("area.128.%d", size)
			put(key+".ok", b2u(ok))
			if !ok {
				continue
			}
			at := (*reflect.SliceHeader)(unsafe.Pointer(&b)).Data // also for an empty slice of the area
			base := uintptr(unsafe.Pointer(&h.inlineData[0]))
			inHeader := at >= base && at <= base+uintptr(len(h.inlineData))
			if !inHeader {
				base = uintptr(unsafe.Pointer(&buffer[0]))
			}
			put(key+".inline", b2u(inHeader))
			put(key+".offset", uint64(at-base))
			put(key+".length", uint64(len(b)))
		}
	}

	for _, g := range []geometry{
		{1, 0, 64, 0}, {4, 2, 65536, 65536}, {3, 5, 1024, 192}, {4096, 4096, 64, 64},
		{1, 1, 1 << 30, 64}, {7, 1, 4160, 1 << 30}, {4096, 0, 1 << 30, 0}, {0, 0, 64, 0},
		{1, 0, 64, 64}, {1, 1, 64, 0}, {1, 0, 100, 0}, {4097, 0, 64, 0},
		{1, 4097, 64, 64}, {1, 0, 32, 0}, {1, 0, 1<<30 + 64, 0}, {2, 2, 128, 96},
	} {
		key := fmt.Sprintf("geometry.%d.%d.%d.%d", g.hostSlots, g.guestSlots, g.hostPayload, g.guestPayload)
		put(key+".valid", b2u(g.valid()))
		if !g.valid() {
			continue
		}
		put(key+".buffers_offset", g.buffersOffset())
		put(key+".total_size", g.totalSize())
		n := g.slotCount()
		for _, i := range []uint32{0, g.hostSlots - 1, g.hostSlots, n - 1} {
			if i >= n {
				continue
			}
			put(fmt.Sprintf("%s.slot%d.request_offset", key, i), g.requestOffset(i))
			put(fmt.Sprintf("%s.slot%d.capacity", key, i), uint64(g.capacity(i)))
			put(fmt.Sprintf("%s.slot%d.host_block_offset", key, i), g.hostBlockOffset(i))
			put(fmt.Sprintf("%s.slot%d.guest_block_offset", key, i), g.guestBlockOffset(i))
		}
		put(key+".counters_size", g.countersSize())
	}
	return m
}

// TestLayoutMatchesCpp compares every offset, size, constant and formula of this package with the C++
// definitions, as printed by tests/crosslang/layout_dump.cc (path in SHM_LAYOUT_DUMP; ctest sets it).
func TestLayoutMatchesCpp(t *testing.T) {
	dump := os.Getenv("SHM_LAYOUT_DUMP")
	if dump == "" {
		if os.Getenv("SHM_REQUIRE_LAYOUT_DUMP") != "" {
			t.Fatal("SHM_LAYOUT_DUMP is not set")
		}
		t.Skip("SHM_LAYOUT_DUMP is not set (ctest sets it to the shm_layout_dump program)")
	}
	out, err := exec.Command(dump).Output()
	if err != nil {
		t.Fatalf("running %s: %v", dump, err)
	}
	cpp := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("bad dump line %q", sc.Text())
		}
		if old, dup := cpp[k]; dup && old != v {
			t.Fatalf("the dump gives %s twice: %s and %s", k, old, v)
		}
		cpp[k] = v
	}
	if len(cpp) < 100 {
		t.Fatalf("the dump has only %d keys", len(cpp))
	}
	goSide := goLayout()
	var problems []string
	for k, v := range cpp {
		if g, ok := goSide[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s: C++ %s, missing in Go", k, v))
		} else if g != v {
			problems = append(problems, fmt.Sprintf("%s: C++ %s, Go %s", k, v, g))
		}
	}
	for k, v := range goSide {
		if _, ok := cpp[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s: Go %s, missing in the C++ dump", k, v))
		}
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("compared %d keys", len(cpp))
}

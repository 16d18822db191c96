// SPDX-License-Identifier: Apache-2.0
//go:build windows

package shm

import (
	"encoding/binary"
	"math"
	"syscall"
	"unsafe"
)

// segmentLink is the guest connection on Windows: the guest's end of its rendezvous pipe instance (§W2).
type segmentLink = syscall.Handle

// acceptedReplySize is an ACCEPTED reply on Windows: §4's 16 bytes, then the host's instance number (§W4).
const acceptedReplySize = replySize + 8

func pipeName(name string) string { return `\\.\pipe\shm-` + name }
func sectionName(name string, instance uint64) string {
	return `Local\shm-` + name + "-" + string(appendHex(nil, instance, 16))
}

// pipeOp is one overlapped read or write on a pipe; its Overlapped and buffer stay put until wait returns.
type pipeOp struct {
	h    syscall.Handle
	ev   syscall.Handle
	ov   *syscall.Overlapped
	done uint32
	err  error // the start's own failure (not ERROR_IO_PENDING)
}

// startIO starts reading (or writing) one message on the overlapped pipe h into (from) buf.
func startIO(h syscall.Handle, buf []byte, write bool) *pipeOp {
	op := &pipeOp{h: h, ov: new(syscall.Overlapped)} // heap: it must stay put while the kernel owns it
	op.ev, op.err = createEvent(true, nil)
	if op.err != nil {
		return op
	}
	op.ov.HEvent = op.ev
	var err error
	if write {
		err = syscall.WriteFile(h, buf, &op.done, op.ov)
	} else {
		err = syscall.ReadFile(h, buf, &op.done, op.ov)
	}
	if err != nil && err != syscall.Errno(errorIOPending) {
		op.err = err
	}
	return op
}

// wait waits for the operation to end, at most until deadline (monoNow clock; then it is cancelled), and
// returns its byte count and error.
func (op *pipeOp) wait(deadline int64) (uint32, error) {
	if op.ev == 0 {
		return 0, op.err
	}
	defer syscall.CloseHandle(op.ev)
	if op.err != nil {
		return op.done, op.err
	}
	left := (deadline - monoNow() + 999999) / 1000000
	if left < 0 {
		left = 0
	}
	if left > 0x7FFFFFFE {
		left = 0x7FFFFFFE
	}
	if r, _ := syscall.WaitForSingleObject(op.ev, uint32(left)); r != waitObject0 {
		_, _, _ = procCancelIoEx.Call(uintptr(op.h), uintptr(unsafe.Pointer(op.ov)))
	}
	err := getOverlappedResult(op.h, op.ov, &op.done)
	return op.done, err
}

// dialHost is §W4 guest step 1: the guest's end of a rendezvous pipe instance, in message read mode.
func dialHost(name string) (syscall.Handle, error) {
	p, err := syscall.UTF16PtrFromString(pipeName(name))
	if err != nil {
		return 0, newErr(ErrInvalidArgument, "segment name %q", name)
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ|syscall.GENERIC_WRITE, 0, nil, syscall.OPEN_EXISTING,
		syscall.FILE_FLAG_OVERLAPPED, 0)
	if err != nil {
		if err == syscall.Errno(errorFileNotFound) || err == syscall.Errno(errorPipeBusy) {
			return 0, &errRetry{reason: "no host listens on " + pipeName(name)}
		}
		return 0, sysErr(err, "open %s", pipeName(name))
	}
	mode := uint32(pipeReadmodeMessage)
	if r, _, e := procSetNamedPipeHandleState.Call(uintptr(h), uintptr(unsafe.Pointer(&mode)), 0, 0); r == 0 {
		_ = syscall.CloseHandle(h)
		return 0, sysErr(e, "SetNamedPipeHandleState on %s", pipeName(name))
	}
	return h, nil
}

// tokenUser is the user SID of process p's token, as a string.
func tokenUser(p syscall.Handle) (string, error) {
	var t syscall.Token
	if err := syscall.OpenProcessToken(p, syscall.TOKEN_QUERY, &t); err != nil {
		return "", err
	}
	defer t.Close()
	u, err := t.GetTokenUser()
	if err != nil {
		return "", err
	}
	return u.User.Sid.String()
}

// checkHostUser is §W4 guest step 2: the process serving the pipe must run as this process's user.
func checkHostUser(name string, pipe syscall.Handle) error {
	var pid uint32
	if r, _, e := procGetNamedPipeServerProcessID.Call(uintptr(pipe), uintptr(unsafe.Pointer(&pid))); r == 0 {
		return sysErr(e, "GetNamedPipeServerProcessId on %s", pipeName(name))
	}
	mine, err := tokenUser(syscall.Handle(^uintptr(0))) // GetCurrentProcess()
	if err != nil {
		return sysErr(err, "read this process's token")
	}
	theirs := ""
	if p, err := syscall.OpenProcess(processQueryLimited, false, pid); err == nil {
		theirs, _ = tokenUser(p)
		_ = syscall.CloseHandle(p)
	}
	if theirs != mine {
		return newErr(ErrPermissionDenied, "%s is served by pid %d, which does not run as this user", pipeName(name), pid)
	}
	return nil
}

// checkReply is §W4 guest step 3: the reply's size for its status, reserved = 0, and the status.
func checkReply(name string, b []byte) (instance uint64, err error) {
	if len(b) != replySize && len(b) != acceptedReplySize {
		return 0, newErr(ErrProtocol, "the reply from %s has %d bytes, not %d or %d", pipeName(name), len(b),
			replySize, acceptedReplySize)
	}
	le := binary.LittleEndian
	status, hostPID, detail, reserved := le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])
	if reserved != 0 {
		return 0, newErr(ErrProtocol, "the reply from %s has reserved = %#x", pipeName(name), reserved)
	}
	if (status == statusAccepted) != (len(b) == acceptedReplySize) {
		return 0, newErr(ErrProtocol, "the host of %s answered %s in %d bytes", pipeName(name), statusName(status),
			len(b))
	}
	switch status {
	case statusAccepted:
		return le.Uint64(b[replySize:]), nil
	case statusBusy:
		return 0, &errRetry{reason: "segment " + name + " already has a guest (pid " + utoa(uint64(detail)) + ")",
			busy: true, busyPID: detail}
	case statusShuttingDown:
		return 0, &errRetry{reason: "the host of " + name + " (pid " + utoa(uint64(hostPID)) + ") is shutting down"}
	case statusDenied:
		return 0, newErr(ErrPermissionDenied, "the host of %s (pid %d) does not admit this process", name, hostPID)
	case statusVersion:
		return 0, newErr(ErrVersionMismatch, "the host of %s (pid %d) speaks protocol version %d; this package speaks %d",
			name, hostPID, detail, protocolVersion)
	}
	return 0, newErr(ErrProtocol, "the host of %s answered the hello with %s", pipeName(name), statusName(status))
}

// attachOnce makes one attempt at §W4 guest steps 1-6, waiting for the host's reply at most until deadline. An
// *errRetry means "not now"; any other error is final. On every failure nothing is left open or mapped.
func attachOnce(name string, deadline int64) (seg *segment, err error) {
	pipe, err := dialHost(name)
	if err != nil {
		return nil, err
	}
	var base uintptr
	defer func() {
		if err != nil {
			if base != 0 {
				removeMapping(base)
				_ = syscall.UnmapViewOfFile(base)
			}
			_ = syscall.CloseHandle(pipe)
		}
	}()
	if err = checkHostUser(name, pipe); err != nil {
		return nil, err
	}
	var hello [helloSize]byte
	binary.LittleEndian.PutUint64(hello[0:], helloMagic)
	binary.LittleEndian.PutUint32(hello[8:], protocolVersion)
	binary.LittleEndian.PutUint32(hello[12:], roleGuest)
	// The read is pending before the hello goes out: a host that answers and closes at once (a refusal) may
	// discard what nobody was reading yet (§W4 guest step 3).
	var reply [64]byte
	read := startIO(pipe, reply[:], false)
	if n, werr := startIO(pipe, hello[:], true).wait(deadline); werr != nil || n != helloSize {
		_, _ = read.wait(0)
		return nil, &errRetry{reason: "the host of " + pipeName(name) + " did not take the hello"}
	}
	n, rerr := read.wait(deadline)
	if rerr == syscall.Errno(errorMoreData) {
		return nil, newErr(ErrProtocol, "the reply from %s has more than %d bytes", pipeName(name), len(reply))
	}
	if rerr != nil || n == 0 {
		return nil, &errRetry{reason: "the host of " + pipeName(name) + " closed the connection or did not answer in time"}
	}
	instance, err := checkReply(name, reply[:n])
	if err != nil {
		return nil, err
	}
	// §W4 step 4: the section the host named. Nothing can change its size (§W3 step 5).
	sname, _ := syscall.UTF16PtrFromString(sectionName(name, instance))
	sec, _, e := procOpenFileMappingW.Call(fileMapRead|fileMapWrite, 0, uintptr(unsafe.Pointer(sname)))
	if sec == 0 {
		return nil, newErr(ErrProtocol, "the host of %s named a section that cannot be opened: %v", name, e)
	}
	base, err = syscall.MapViewOfFile(syscall.Handle(sec), fileMapRead|fileMapWrite, 0, 0, 0)
	_ = syscall.CloseHandle(syscall.Handle(sec)) // the view keeps the section
	if err != nil {
		base = 0
		return nil, sysErr(err, "map the section of %s", name)
	}
	// §W4 step 5: its size is the region the whole view spans.
	var mbi struct {
		BaseAddress, AllocationBase uintptr
		AllocationProtect           uint32
		PartitionID                 uint16
		RegionSize                  uintptr
		State, Protect, Type        uint32
	}
	if r, _, e := procVirtualQuery.Call(base, uintptr(unsafe.Pointer(&mbi)), unsafe.Sizeof(mbi)); r == 0 {
		return nil, sysErr(e, "VirtualQuery on the section of %s", name)
	}
	size := uint64(mbi.RegionSize)
	if size < uint64(segmentHeaderSize) {
		return nil, newErr(ErrTruncated, "the section of %s is %d bytes, smaller than the %d-byte header", name, size,
			segmentHeaderSize)
	}
	if size > maxSegmentSize || size > uint64(math.MaxInt) {
		return nil, newErr(ErrBadGeometry, "the section of %s is %d bytes, over the %d-byte limit", name, size,
			maxSegmentSize)
	}
	mem := unsafe.Slice(*(**byte)(unsafe.Pointer(&base)), int(size))
	addMapping(base, uintptr(size), sectionName(name, instance)+"-")
	seg, err = newSegment(name, pipe, mem, int64(size))
	if err != nil {
		return nil, err
	}
	return seg, nil
}

// hostAlive tests the host on the guest's pipe end (§W2): PeekNamedPipe fails once the host's end is gone.
func (s *segment) hostAlive() bool {
	var avail uint32
	r, _, e := procPeekNamedPipe.Call(uintptr(s.link), 0, 0, 0, uintptr(unsafe.Pointer(&avail)), 0)
	if r != 0 {
		return true
	}
	switch e {
	case errorBrokenPipe, errorPipeNotConnect, errorNoData, errorInvalidHandle:
		return false
	}
	return true
}

// close unmaps the segment, then leaves the guest seat: a 0-byte message (the host reads it as this guest
// gone, §W2) and the pipe end closed. The workers must have stopped writing the segment.
func (s *segment) close() {
	base := uintptr(unsafe.Pointer(&s.mem[0]))
	removeMapping(base)
	_ = syscall.UnmapViewOfFile(base)
	_, _ = startIO(s.link, nil, true).wait(monoNow() + 100000000)
	_ = syscall.CloseHandle(s.link)
	s.mem = nil
	s.slots = nil
	s.hdr = nil
}

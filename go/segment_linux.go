// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"encoding/binary"
	"math"
	"syscall"
)

// segmentLink is the guest connection on Linux: the descriptor of the rendezvous socket connection (§2).
type segmentLink = int

// maxReplyFds is how many descriptors receiveReply makes room for: a reply carries at most one, and every one
// received is closed, so a hostile reply with more is refused without leaking any.
const maxReplyFds = 16

// addrString is the rendezvous address of name for messages, its NUL written as '@'.
func addrString(name string) string { return "@" + rendezvousPrefix + name }

// dialHost is §4.2 step 1: a SOCK_SEQPACKET connection to the rendezvous socket of name, every blocking
// operation on it (connect, send, receive) bounded by deadline.
func dialHost(name string, deadline int64) (int, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, sysErr(err, "socket(AF_UNIX, SOCK_SEQPACKET)")
	}
	if err = setSocketTimeouts(fd, deadline); err != nil {
		_ = syscall.Close(fd)
		return -1, sysErr(err, "setsockopt(SO_RCVTIMEO, SO_SNDTIMEO)")
	}
	err = syscall.Connect(fd, rendezvousAddr(name))
	if err == nil {
		return fd, nil
	}
	_ = syscall.Close(fd)
	switch err {
	case syscall.ECONNREFUSED, syscall.ENOENT:
		return -1, &errRetry{reason: "no host listens on " + addrString(name)}
	case syscall.EAGAIN, syscall.EINTR:
		// EAGAIN: the listen backlog stayed full until the deadline; EINTR: a signal came while waiting for
		// room in it. Either way the host exists but has not taken this guest yet.
		return -1, &errRetry{reason: "the host of " + addrString(name) + " did not take the connection"}
	}
	return -1, sysErr(err, "connect to %s", addrString(name))
}

// checkHostUser is §4.2 step 2: the process that listens on the rendezvous socket must be this user or root.
func checkHostUser(name string, conn int) error {
	cred, err := syscall.GetsockoptUcred(conn, syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	if err != nil {
		return sysErr(err, "getsockopt(SO_PEERCRED) on %s", addrString(name))
	}
	if euid := uint32(syscall.Geteuid()); cred.Uid != euid && cred.Uid != 0 {
		return newErr(ErrPermissionDenied,
			"%s is held by pid %d of uid %d, neither this user (uid %d) nor root: another user holds the name",
			addrString(name), cred.Pid, cred.Uid, euid)
	}
	return nil
}

// sendHello sends the hello of a GUEST (§4).
func sendHello(name string, conn int, deadline int64) error {
	var hello [helloSize]byte
	le := binary.LittleEndian
	le.PutUint64(hello[0:], helloMagic)
	le.PutUint32(hello[8:], protocolVersion)
	le.PutUint32(hello[12:], roleGuest)
	for {
		n, err := syscall.SendmsgN(conn, hello[:], nil, nil, syscall.MSG_NOSIGNAL)
		switch err {
		case nil:
			if n != helloSize {
				return newErr(ErrSystem, "sent %d of the %d bytes of the hello to %s", n, helloSize, addrString(name))
			}
			return nil
		case syscall.EINTR:
			if err := setSocketTimeouts(conn, deadline); err != nil {
				return sysErr(err, "setsockopt(SO_SNDTIMEO)")
			}
			continue
		case syscall.EPIPE, syscall.ECONNRESET:
			// A host that refuses this peer before its hello (DENIED) may have closed already: its refusal is
			// still there to read, so go on to the reply (end of file there means "retry").
			return nil
		case syscall.EAGAIN:
			return &errRetry{reason: "the host of " + addrString(name) + " did not take the hello"}
		}
		return sysErr(err, "send the hello to %s", addrString(name))
	}
}

// receiveReply waits until deadline for the host's reply (§4.2 step 3) and returns it with every descriptor
// that came with it, which the caller then owns, also with an error. (The kernel delivers the descriptors of
// every SCM_RIGHTS message of one record in a single control message.)
func receiveReply(name string, conn int, deadline int64) (buf []byte, fds []int, flags int, err error) {
	buf = make([]byte, replySize+1) // one byte more: a longer record shows as n > replySize
	oob := make([]byte, syscall.CmsgSpace(4*maxReplyFds))
	resetSeen := false
	for {
		n, oobn, fl, _, rerr := syscall.Recvmsg(conn, buf, oob, syscall.MSG_CMSG_CLOEXEC)
		// The descriptors first: whatever else happened, they are now this process's to close.
		if oobn > 0 {
			msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				return nil, fds, fl, sysErr(perr, "parse the control messages of the reply from %s",
					addrString(name))
			}
			for i := range msgs {
				if msgs[i].Header.Level != syscall.SOL_SOCKET || msgs[i].Header.Type != syscall.SCM_RIGHTS {
					continue
				}
				got, perr := syscall.ParseUnixRights(&msgs[i])
				if perr != nil {
					return nil, fds, fl, sysErr(perr, "parse the descriptors of the reply from %s",
						addrString(name))
				}
				fds = append(fds, got...)
			}
		}
		switch rerr {
		case nil:
		case syscall.EINTR:
			if err := setSocketTimeouts(conn, deadline); err != nil {
				return nil, fds, fl, sysErr(err, "setsockopt(SO_RCVTIMEO)")
			}
			continue
		case syscall.EAGAIN:
			return nil, fds, fl, &errRetry{reason: "the host of " + addrString(name) +
				" did not answer the hello before the deadline"}
		case syscall.ECONNRESET:
			// A host that closed with our hello unread (a refusal before reading it) leaves a pending
			// ECONNRESET, reported once before the reply still queued here (§4.2): look again, once.
			if !resetSeen {
				resetSeen = true
				continue
			}
			return nil, fds, fl, &errRetry{reason: "the host of " + addrString(name) +
				" closed the connection before replying"}
		default:
			return nil, fds, fl, sysErr(rerr, "receive the reply from %s", addrString(name))
		}
		if n == 0 && len(fds) == 0 && fl&(syscall.MSG_TRUNC|syscall.MSG_CTRUNC) == 0 {
			return nil, nil, fl, &errRetry{reason: "the host of " + addrString(name) +
				" closed the connection before replying"}
		}
		return buf[:n], fds, fl, nil
	}
}

// checkReply validates a reply and the descriptors that came with it (§4.2 step 3). It returns the segment's
// memfd for ACCEPTED; on any error it has closed every descriptor in fds.
func checkReply(name string, b []byte, fds []int, flags int) (memfd int, err error) {
	defer func() {
		if err != nil {
			closeAll(fds)
		}
	}()
	if flags&syscall.MSG_CTRUNC != 0 {
		return -1, newErr(ErrProtocol, "the reply from %s carried more than %d descriptors", addrString(name),
			maxReplyFds)
	}
	if flags&syscall.MSG_TRUNC != 0 || len(b) > replySize {
		return -1, newErr(ErrProtocol, "the reply from %s has more than %d bytes", addrString(name), replySize)
	}
	if len(b) != replySize {
		return -1, newErr(ErrProtocol, "the reply from %s has %d bytes, not %d", addrString(name), len(b), replySize)
	}
	le := binary.LittleEndian
	status, hostPID, detail, reserved := le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:]), le.Uint32(b[12:])
	if reserved != 0 {
		return -1, newErr(ErrProtocol, "the reply from %s has reserved = %#x", addrString(name), reserved)
	}
	if status == statusAccepted && len(fds) != 1 {
		return -1, newErr(ErrProtocol, "the host of %s accepted with %d descriptors, not one", addrString(name),
			len(fds))
	}
	if status != statusAccepted && len(fds) != 0 {
		return -1, newErr(ErrProtocol, "the host of %s answered %s with %d descriptors, not none",
			addrString(name), statusName(status), len(fds))
	}
	switch status {
	case statusAccepted:
		return fds[0], nil
	case statusBusy:
		return -1, &errRetry{reason: "segment " + name + " already has a guest (pid " + utoa(uint64(detail)) + ")",
			busy: true, busyPID: detail}
	case statusShuttingDown:
		return -1, &errRetry{reason: "the host of " + name + " (pid " + utoa(uint64(hostPID)) + ") is shutting down"}
	case statusDenied:
		return -1, newErr(ErrPermissionDenied, "the host of %s (pid %d) does not admit this process (uid %d)", name,
			hostPID, syscall.Geteuid())
	case statusVersion:
		return -1, newErr(ErrVersionMismatch, "the host of %s (pid %d) speaks protocol version %d; this package speaks %d",
			name, hostPID, detail, protocolVersion)
	}
	return -1, newErr(ErrProtocol, "the host of %s answered the hello with %s", addrString(name), statusName(status))
}

// checkMemfd is §4.2 step 4 and the size test of step 5: the descriptor must be a regular file sealed so that
// its size can never change, and of a size a segment can have. It returns the size.
func checkMemfd(name string, fd int) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, sysErr(err, "fstat the memfd of %s", name)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0, newErr(ErrProtocol, "the host of %s handed over a descriptor that is not a regular file (mode %#o)",
			name, st.Mode)
	}
	seals, err := fileSeals(fd)
	if err != nil {
		return 0, &shmError{kind: ErrProtocol, msg: "the host of " + name +
			" handed over a file without seals (F_GET_SEALS): its size could change", cause: err}
	}
	if seals&requiredSeals != requiredSeals || seals&(sealWrite|sealFutureWrite) != 0 {
		return 0, newErr(ErrProtocol, "the memfd of %s has seals %#x; a segment needs SHRINK, GROW and SEAL "+
			"(%#x) and neither WRITE nor FUTURE_WRITE", name, seals, requiredSeals)
	}
	if st.Size < int64(segmentHeaderSize) {
		return 0, newErr(ErrTruncated, "the memfd of %s is %d bytes, smaller than the %d-byte header", name, st.Size,
			segmentHeaderSize)
	}
	if uint64(st.Size) > maxSegmentSize {
		return 0, newErr(ErrBadGeometry, "the memfd of %s is %d bytes, over the %d-byte limit", name, st.Size,
			maxSegmentSize)
	}
	if uint64(st.Size) > uint64(math.MaxInt) {
		return 0, newErr(ErrBadGeometry, "a %d-byte segment cannot be mapped in this address space", st.Size)
	}
	return st.Size, nil
}

// attachOnce makes one attempt at §4.2 steps 1-6, waiting for the host's reply at most until deadline. An
// *errRetry means "not now"; any other error is final. On every failure nothing is left open or mapped.
func attachOnce(name string, deadline int64) (seg *segment, err error) {
	conn, err := dialHost(name, deadline)
	if err != nil {
		return nil, err
	}
	memfd := -1
	var mem []byte
	defer func() {
		if memfd >= 0 {
			_ = syscall.Close(memfd) // the mapping keeps the memory; the descriptor is not needed
		}
		if err != nil {
			if mem != nil {
				_ = syscall.Munmap(mem)
			}
			_ = syscall.Close(conn)
		}
	}()
	if err = checkHostUser(name, conn); err != nil {
		return nil, err
	}
	if err = sendHello(name, conn, deadline); err != nil {
		return nil, err
	}
	b, fds, flags, err := receiveReply(name, conn, deadline)
	if err != nil {
		closeAll(fds)
		return nil, err
	}
	if memfd, err = checkReply(name, b, fds, flags); err != nil {
		return nil, err
	}
	size, err := checkMemfd(name, memfd)
	if err != nil {
		return nil, err
	}
	mem, err = syscall.Mmap(memfd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		mem = nil
		return nil, sysErr(err, "mmap the memfd of %s (%d bytes)", name, size)
	}
	seg, err = newSegment(name, conn, mem, size)
	if err != nil {
		return nil, err
	}
	return seg, nil
}

// hostAlive tests the host on the guest connection (§2). A system call: never on the busy path.
func (s *segment) hostAlive() bool { return peerAlive(s.link) }

// close unmaps the segment, then closes the guest connection, which frees the guest seat. The workers must
// have stopped writing the segment; nothing may touch the mapping afterwards.
func (s *segment) close() {
	_ = syscall.Munmap(s.mem)
	_ = syscall.Close(s.link)
	s.mem = nil
	s.slots = nil
	s.hdr = nil
}

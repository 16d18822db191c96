// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm

import (
	"math"
	"syscall"
	"time"
	"unsafe"
)

// Raw Linux system calls (the Linux binding, SPECIFICATION.md §1-§4 and §7): futexes on words in the mapping,
// the rendezvous socket and its handshake, memfd seals, mmap, and a CLOCK_MONOTONIC clock. Only the standard
// library's syscall package is used (no cgo).

const (
	futexWaitOp = 0 // FUTEX_WAIT, shared (no FUTEX_PRIVATE_FLAG): waiter and waker are different processes
	futexWakeOp = 1 // FUTEX_WAKE, shared

	fAddSeals       = 1033 // F_ADD_SEALS
	fGetSeals       = 1034 // F_GET_SEALS
	sealSeal        = 0x1  // F_SEAL_SEAL: the set of seals cannot change
	sealShrink      = 0x2  // F_SEAL_SHRINK
	sealGrow        = 0x4  // F_SEAL_GROW
	sealWrite       = 0x8  // F_SEAL_WRITE: a guest refuses it (it could not write the segment)
	sealFutureWrite = 0x10 // F_SEAL_FUTURE_WRITE: likewise
	requiredSeals   = sealShrink | sealGrow | sealSeal

	maxNameLen       = 100    // a segment name is 1-100 bytes (§1)
	rendezvousPrefix = "shm/" // the abstract address is "\0shm/" + name
)

type futexResult int

const (
	futexWoken   futexResult = iota // woken, or returned spuriously (EINTR): re-check the word
	futexChanged                    // the word no longer held the expected value
	futexTimeout                    // the timeout elapsed
)

// futexWait sleeps while *addr == val, at most timeoutNs (relative, CLOCK_MONOTONIC). The kernel compares
// and sleeps atomically, so a wake that follows a change of the word is never lost.
func futexWait(addr *uint32, val uint32, timeoutNs int64) futexResult {
	ts := syscall.NsecToTimespec(timeoutNs)
	_, _, errno := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWaitOp, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
	switch errno {
	case 0:
		return futexWoken
	case syscall.EAGAIN:
		return futexChanged
	case syscall.ETIMEDOUT:
		return futexTimeout
	}
	return futexWoken // EINTR (the Go runtime signals its threads): spurious
}

// futexWakeAll wakes every thread of any process sleeping in futexWait on addr. replaced, the value the
// caller's change replaced, is for the Windows binding, which wakes by value; Linux does not need it.
func futexWakeAll(addr *uint32, replaced uint32) {
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, math.MaxInt32, 0, 0, 0)
}

// schedYield offers this thread's CPU to another runnable thread. RawSyscall: it returns at once, so the Go
// scheduler need not hand this thread's P to another thread meanwhile.
func schedYield() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
}

// contextSwitches is how many times the calling OS thread has left its CPU for another thread (voluntary and
// involuntary: a sched_yield that switches counts as involuntary), or -1 if unknown. A system call: for slow
// paths only.
func contextSwitches() int64 {
	const rusageThread = 1 // RUSAGE_THREAD
	var u syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &u); err != nil {
		return -1
	}
	return u.Nvcsw + u.Nivcsw
}

// rendezvousAddr is the rendezvous socket of segment name (§1): the abstract address "\0shm/<name>". Go
// writes the leading NUL of an abstract address as '@' and leaves the terminating NUL out of the address
// length, so the length is offsetof(sun_path) + 5 + len(name), as §1 asks.
func rendezvousAddr(name string) *syscall.SockaddrUnix {
	return &syscall.SockaddrUnix{Name: "@" + rendezvousPrefix + name}
}

// setSocketTimeouts bounds every blocking connect, send and receive on fd by deadline (monoNow clock). A
// timeout of zero would mean "forever" to the kernel, so a passed deadline becomes one microsecond.
func setSocketTimeouts(fd int, deadline int64) error {
	left := deadline - monoNow()
	if left < 1000 {
		left = 1000
	}
	if left > int64(365*24*time.Hour) {
		left = int64(365 * 24 * time.Hour)
	}
	tv := syscall.NsecToTimeval(left)
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv)
}

// peerAlive is the guest's test of its host on the guest connection (§2): recv(1 byte, MSG_PEEK |
// MSG_DONTWAIT). End of file, ECONNRESET or EPIPE mean the peer is gone; EAGAIN, a byte, or any other error
// count as alive (the caller's deadline still bounds its wait). It consumes nothing.
func peerAlive(fd int) bool {
	var b [1]byte
	for {
		n, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case nil:
			return n != 0
		case syscall.EINTR:
			continue
		case syscall.ECONNRESET, syscall.EPIPE:
			return false
		}
		return true
	}
}

// fileSeals returns the seals of fd (fcntl F_GET_SEALS). EINVAL: the file cannot be sealed (not a memfd).
func fileSeals(fd int) (uint32, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), fGetSeals, 0)
	if errno != 0 {
		return 0, errno
	}
	return uint32(r), nil
}

// closeAll closes every descriptor in fds.
func closeAll(fds []int) {
	for _, fd := range fds {
		_ = syscall.Close(fd)
	}
}

// currentThreadID identifies the calling OS thread (the workers are locked to theirs).
func currentThreadID() int { return syscall.Gettid() }

// Clock. Deadlines and wake stamps are CLOCK_MONOTONIC nanoseconds (comparable across processes). Reading
// that clock from Go without cgo is a system call, so it is read once here and advanced with Go's own
// monotonic clock (vDSO, no system call) afterwards; the two differ by at most the cost of one system call.
var (
	clockBaseNs int64
	clockBaseGo time.Time
)

func init() {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	clockBaseGo = time.Now()
	if errno == 0 {
		clockBaseNs = ts.Nano()
	}
}

// monoNow returns CLOCK_MONOTONIC in nanoseconds without a system call.
func monoNow() int64 { return clockBaseNs + int64(time.Since(clockBaseGo)) }

package shm

import (
	"math"
	"syscall"
	"time"
	"unsafe"
)

// Raw Linux system calls: futexes on words in the mapping, OFD byte locks on the segment file, mmap, and a
// CLOCK_MONOTONIC clock. Only the standard library's syscall package is used (no cgo).

const (
	futexWaitOp = 0 // FUTEX_WAIT, shared (no FUTEX_PRIVATE_FLAG): waiter and waker are different processes
	futexWakeOp = 1 // FUTEX_WAKE, shared
	fOFDGetlk   = 36
	fOFDSetlk   = 37
	segmentDir  = "/dev/shm/"
	maxNameLen  = 255
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

// futexWakeAll wakes every thread of any process sleeping in futexWait on addr.
func futexWakeAll(addr *uint32) {
	_, _, _ = syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWakeOp, math.MaxInt32, 0, 0, 0)
}

// schedYield offers this thread's CPU to another runnable thread. RawSyscall: it returns at once, so the Go
// scheduler need not hand this thread's P to another thread meanwhile.
func schedYield() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
}

func lockRequest(typ int16, b int64) syscall.Flock_t {
	return syscall.Flock_t{Type: typ, Whence: 0 /* SEEK_SET */, Start: b, Len: 1, Pid: 0}
}

// tryLockByte takes the OFD write lock on byte b of fd without blocking. false: another open file
// description holds it (its holder is alive).
func tryLockByte(fd int, b int64) (bool, error) {
	lk := lockRequest(syscall.F_WRLCK, b)
	err := syscall.FcntlFlock(uintptr(fd), fOFDSetlk, &lk)
	if err == nil {
		return true, nil
	}
	if err == syscall.EAGAIN || err == syscall.EACCES {
		return false, nil
	}
	return false, err
}

// byteLockedByOther reports whether another open file description holds a lock on byte b (without taking it).
func byteLockedByOther(fd int, b int64) (bool, error) {
	lk := lockRequest(syscall.F_WRLCK, b)
	if err := syscall.FcntlFlock(uintptr(fd), fOFDGetlk, &lk); err != nil {
		return false, err
	}
	return lk.Type != syscall.F_UNLCK, nil
}

func unlockByte(fd int, b int64) {
	lk := lockRequest(syscall.F_UNLCK, b)
	_ = syscall.FcntlFlock(uintptr(fd), fOFDSetlk, &lk)
}

func openSegmentFile(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// preadFull reads up to len(b) bytes at off; fewer only at end of file.
func preadFull(fd int, b []byte, off int64) (int, error) {
	done := 0
	for done < len(b) {
		n, err := syscall.Pread(fd, b[done:], off+int64(done))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
		done += n
	}
	return done, nil
}

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

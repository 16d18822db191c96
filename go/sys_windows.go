// SPDX-License-Identifier: Apache-2.0
//go:build windows

package shm

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// The Windows binding (SPECIFICATION.md §W): named wake events in place of futexes, the rendezvous pipe, the
// named section, and the QueryPerformanceCounter clock. Only the standard library's syscall package is used
// (no cgo): the calls it lacks are loaded from kernel32.dll by name.

const maxNameLen = 100 // a segment name is 1-100 bytes (§W1, as §1)

var (
	kernel32                        = syscall.NewLazyDLL("kernel32.dll")
	procOpenEventW                  = kernel32.NewProc("OpenEventW")
	procSetEvent                    = kernel32.NewProc("SetEvent")
	procSwitchToThread              = kernel32.NewProc("SwitchToThread")
	procGetCurrentThreadID          = kernel32.NewProc("GetCurrentThreadId")
	procQueryPerformanceCounter     = kernel32.NewProc("QueryPerformanceCounter")
	procQueryPerformanceFrequency   = kernel32.NewProc("QueryPerformanceFrequency")
	procOpenFileMappingW            = kernel32.NewProc("OpenFileMappingW")
	procVirtualQuery                = kernel32.NewProc("VirtualQuery")
	procSetNamedPipeHandleState     = kernel32.NewProc("SetNamedPipeHandleState")
	procGetNamedPipeServerProcessID = kernel32.NewProc("GetNamedPipeServerProcessId")
	procPeekNamedPipe               = kernel32.NewProc("PeekNamedPipe")
	procCancelIoEx                  = kernel32.NewProc("CancelIoEx")
	procCreateEventW                = kernel32.NewProc("CreateEventW")
	procGetOverlappedResult         = kernel32.NewProc("GetOverlappedResult")
)

// createEvent is CreateEventW(NULL, manual, FALSE, name); name nil: an unnamed event.
func createEvent(manual bool, name *uint16) (syscall.Handle, error) {
	m := uintptr(0)
	if manual {
		m = 1
	}
	h, _, e := procCreateEventW.Call(0, m, 0, uintptr(unsafe.Pointer(name)))
	if h == 0 {
		return 0, e
	}
	return syscall.Handle(h), nil
}

// getOverlappedResult is GetOverlappedResult(h, ov, &done, TRUE): it waits for the operation to end.
func getOverlappedResult(h syscall.Handle, ov *syscall.Overlapped, done *uint32) error {
	r, _, e := procGetOverlappedResult.Call(uintptr(h), uintptr(unsafe.Pointer(ov)), uintptr(unsafe.Pointer(done)), 1)
	if r == 0 {
		return e
	}
	return nil
}

const (
	eventModifyState    = 0x0002 // EVENT_MODIFY_STATE
	fileMapRead         = 0x0004 // FILE_MAP_READ
	fileMapWrite        = 0x0002 // FILE_MAP_WRITE
	pipeReadmodeMessage = 0x0002 // PIPE_READMODE_MESSAGE
	processQueryLimited = 0x1000 // PROCESS_QUERY_LIMITED_INFORMATION
	waitObject0         = 0
	winWaitTimeout      = 0x102 // WAIT_TIMEOUT

	errorFileNotFound     syscall.Errno = 2
	errorBrokenPipe       syscall.Errno = 109
	errorPipeBusy         syscall.Errno = 231
	errorNoData           syscall.Errno = 232
	errorPipeNotConnect   syscall.Errno = 233
	errorMoreData         syscall.Errno = 234
	errorIOPending        syscall.Errno = 997
	errorInvalidHandle    syscall.Errno = 6
	errorOperationAborted syscall.Errno = 995
)

type futexResult int

const (
	futexWoken   futexResult = iota // woken, or returned spuriously: re-check the word
	futexChanged                    // the word no longer held the expected value
	futexTimeout                    // the timeout elapsed
)

// mapping is a segment mapped into this process and the prefix of its wake events' names (§W5):
// "Local\shm-<name>-<instance>-".
type mapping struct {
	base, size uintptr
	prefix     string
}

var (
	mappingsMu sync.Mutex
	mappings   []mapping
)

func addMapping(base, size uintptr, prefix string) {
	mappingsMu.Lock()
	mappings = append(mappings, mapping{base, size, prefix})
	mappingsMu.Unlock()
}

func removeMapping(base uintptr) {
	mappingsMu.Lock()
	for i := range mappings {
		if mappings[i].base == base {
			mappings = append(mappings[:i], mappings[i+1:]...)
			break
		}
	}
	mappingsMu.Unlock()
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, v uint64, digits int) []byte {
	for i := digits - 1; i >= 0; i-- {
		b = append(b, hexDigits[(v>>(4*uint(i)))&0xF])
	}
	return b
}

// eventName is the name of the event for the word at addr holding value (§W5); a word outside every segment
// (a test's own word) gets a name private to this process.
func eventName(addr *uint32, value uint32) *uint16 {
	a := uintptr(unsafe.Pointer(addr))
	var b []byte
	mappingsMu.Lock()
	for _, m := range mappings {
		if a >= m.base && a < m.base+m.size {
			b = append(appendHex(append(b, m.prefix...), uint64(a-m.base), 10), '-')
			break
		}
	}
	mappingsMu.Unlock()
	if b == nil {
		b = append(appendHex(append(b, `Local\shm-local-`...), uint64(syscall.Getpid()), 8), '-')
		b = append(appendHex(b, uint64(a), 16), '-')
	}
	b = appendHex(b, uint64(value), 8)
	p, err := syscall.UTF16PtrFromString(string(b))
	if err != nil {
		return nil
	}
	return p
}

// futexWait sleeps while *addr == val, at most timeoutNs (rounded up to whole milliseconds). The event is
// created before the word is re-read, and a notifier opens it only after changing the word, so a wake that
// follows a change of the word is never lost (§W5).
func futexWait(addr *uint32, val uint32, timeoutNs int64) futexResult {
	name := eventName(addr, val)
	if name == nil {
		time.Sleep(time.Millisecond)
		return futexWoken
	}
	h, err := createEvent(true, name)
	if err != nil {
		time.Sleep(time.Millisecond) // out of handles: sleep a little, as if woken spuriously
		return futexWoken
	}
	defer syscall.CloseHandle(h)
	if atomic.LoadUint32(addr) != val { // sequentially consistent: pairs with the notifier's change before its open
		return futexChanged
	}
	ms := (timeoutNs + 999999) / 1000000
	if ms < 1 {
		ms = 1
	}
	if ms > 0x7FFFFFFE {
		ms = 0x7FFFFFFE
	}
	r, _ := syscall.WaitForSingleObject(h, uint32(ms))
	if r == winWaitTimeout {
		return futexTimeout
	}
	return futexWoken
}

// futexWakeAll wakes every thread of any process sleeping in futexWait on addr for the value replaced (the
// value the caller's change of the word replaced, waiting bit set).
func futexWakeAll(addr *uint32, replaced uint32) {
	name := eventName(addr, replaced)
	if name == nil {
		return
	}
	h, _, _ := procOpenEventW.Call(eventModifyState, 0, uintptr(unsafe.Pointer(name)))
	if h == 0 {
		return // no sleeper has created it yet: it re-reads the word after creating it
	}
	_, _, _ = procSetEvent.Call(h)
	_ = syscall.CloseHandle(syscall.Handle(h))
}

// schedYield offers this thread's CPU to another runnable thread.
func schedYield() { _, _, _ = procSwitchToThread.Call() }

// contextSwitches is unknown on Windows: -1, so the same-CPU rule of §7.3 never applies (§W5).
func contextSwitches() int64 { return -1 }

// currentThreadID identifies the calling OS thread (the workers are locked to theirs).
func currentThreadID() int {
	r, _, _ := procGetCurrentThreadID.Call()
	return int(r)
}

// Clock. Deadlines and wake stamps are QueryPerformanceCounter nanoseconds, as the C++ host's (§W5). The
// counter is read once here and advanced with Go's own monotonic clock afterwards, as on Linux.
var (
	clockBaseNs int64
	clockBaseGo time.Time
)

func init() {
	var c, f int64
	_, _, _ = procQueryPerformanceFrequency.Call(uintptr(unsafe.Pointer(&f)))
	_, _, _ = procQueryPerformanceCounter.Call(uintptr(unsafe.Pointer(&c)))
	clockBaseGo = time.Now()
	if f > 0 {
		clockBaseNs = (c/f)*1000000000 + (c%f)*1000000000/f
	}
}

// monoNow returns the QueryPerformanceCounter clock in nanoseconds without a system call.
func monoNow() int64 { return clockBaseNs + int64(time.Since(clockBaseGo)) }

// SPDX-License-Identifier: Apache-2.0
package shm

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns matches exactly one of them, or is a *RemoteError, with
// errors.Is; the error's text adds the details (segment name, sizes, slot). Some sentinels refine another:
// ErrBadMagic, ErrBadGeometry and ErrTruncated each also match ErrInvalidSegment.
var (
	// ErrInvalidArgument: a bad configuration or argument (empty name, reserved request type, ...).
	ErrInvalidArgument = errors.New("shm: invalid argument")
	// ErrNotFound: no live host of this name took the guest before the connect deadline (none listened, or it
	// did not answer, hung up, or was shutting down).
	ErrNotFound = errors.New("shm: segment not found")
	// ErrPermissionDenied: another user holds the name, or the host's mode does not admit this user.
	ErrPermissionDenied = errors.New("shm: permission denied")
	// ErrInvalidSegment: the memory the host handed over is not a segment this package can attach to.
	ErrInvalidSegment = errors.New("shm: invalid segment")
	// ErrBadMagic: the memory does not start with the segment magic. Also matches ErrInvalidSegment.
	ErrBadMagic = &kindError{"shm: bad magic (not an shm segment)", ErrInvalidSegment}
	// ErrBadGeometry: the header describes an impossible layout. Also matches ErrInvalidSegment.
	ErrBadGeometry = &kindError{"shm: impossible segment geometry", ErrInvalidSegment}
	// ErrTruncated: the memory is smaller than a header, or than its header says. Also matches
	// ErrInvalidSegment.
	ErrTruncated = &kindError{"shm: truncated segment", ErrInvalidSegment}
	// ErrVersionMismatch: the host or its segment speaks another protocol version.
	ErrVersionMismatch = errors.New("shm: protocol version mismatch")
	// ErrGuestAlreadyConnected: another live guest stayed attached to the segment until the connect deadline.
	ErrGuestAlreadyConnected = errors.New("shm: another guest is already connected")
	// ErrTimeout: the call's deadline passed before its answer arrived.
	ErrTimeout = errors.New("shm: timeout")
	// ErrNoFreeSlot: every guest slot stayed busy until the deadline.
	ErrNoFreeSlot = errors.New("shm: no free slot")
	// ErrTooLarge: a message is larger than allowed: a zero-copy request that does not fit its slot, or a
	// request above the protocol's 1<<40 bytes (both checked before anything is sent); an answer above
	// ClientConfig.MaxMessageSize, or a large answer to a zero-copy GuestSlot.Send.
	ErrTooLarge = errors.New("shm: message too large")
	// ErrBufferTooSmall: a caller-provided buffer cannot hold the answer.
	ErrBufferTooSmall = errors.New("shm: buffer too small")
	// ErrHostGone: the host died (its end of the guest connection closed).
	ErrHostGone = errors.New("shm: host gone")
	// ErrShuttingDown: the host is shutting down. A *RemoteError with WireErrShuttingDown matches it too.
	ErrShuttingDown = errors.New("shm: shutting down")
	// ErrClosed: the Client or GuestSlot was closed or released.
	ErrClosed = errors.New("shm: closed")
	// ErrSlotLost: a GuestSlot lost its slot (an earlier call was abandoned while the host served it).
	ErrSlotLost = errors.New("shm: slot lost")
	// ErrProtocol: the peer broke the protocol: an impossible size, state or type in shared memory, or at
	// attach a malformed reply, wrong descriptors, or memory not sealed against resizing.
	ErrProtocol = errors.New("shm: protocol violation by the peer")
	// ErrRemote: the peer answered MsgTypeSystemError. Every *RemoteError matches it.
	ErrRemote = errors.New("shm: remote error")
	// ErrSystem: a system call failed; the error also wraps the syscall.Errno.
	ErrSystem = errors.New("shm: system call failed")
)

// kindError is a sentinel that refines a broader one.
type kindError struct {
	msg    string
	parent error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.parent }

// shmError is what the package returns: a sentinel kind, a message with details, and an optional cause
// (a syscall.Errno). errors.Is matches the kind (and what it refines) and the cause.
type shmError struct {
	kind  error
	msg   string
	cause error
}

func (e *shmError) Error() string {
	if e.cause != nil {
		return e.kind.Error() + ": " + e.msg + ": " + e.cause.Error()
	}
	return e.kind.Error() + ": " + e.msg
}

func (e *shmError) Is(target error) bool { return errors.Is(e.kind, target) }
func (e *shmError) Unwrap() error        { return e.cause }

func newErr(kind error, format string, args ...any) error {
	return &shmError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func sysErr(cause error, format string, args ...any) error {
	return &shmError{kind: ErrSystem, msg: fmt.Sprintf(format, args...), cause: cause}
}

// RemoteError is a MsgTypeSystemError answer: the peer refused or failed the call and said why on the wire.
// It matches ErrRemote with errors.Is, and also ErrShuttingDown when Code is WireErrShuttingDown; use
// errors.As to read Code. Codes this version does not know are kept as they are (String says "Unknown").
type RemoteError struct {
	Code WireError // the peer's resp_error
	Slot int       // index of the slot the call used
}

// Error describes the answer, e.g. "shm: remote error: peer answered SYSTEM_ERROR HandlerFailed (4) on slot 5".
func (e *RemoteError) Error() string {
	return fmt.Sprintf("%v: peer answered SYSTEM_ERROR %v (%d) on slot %d", ErrRemote, e.Code, uint32(e.Code), e.Slot)
}

// Is reports whether target is ErrRemote, ErrShuttingDown for a WireErrShuttingDown answer, or a
// *RemoteError with the same Code.
func (e *RemoteError) Is(target error) bool {
	switch t := target.(type) {
	case *RemoteError:
		return t.Code == e.Code
	}
	return target == ErrRemote || (target == ErrShuttingDown && e.Code == WireErrShuttingDown)
}

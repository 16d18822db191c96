// SPDX-License-Identifier: Apache-2.0
// Package shm is the Go guest of shm: request/response messaging with a C++ host through shared memory on
// one Linux machine. A host (shm::DirectHost) creates a segment of slots in a sealed memfd and listens on the
// abstract Unix socket "\0shm/<name>"; this package connects there, receives the memfd after the handshake,
// maps it, serves the host's requests on one worker goroutine per host slot, and calls the host back through
// guest slots. It implements SPECIFICATION.md (wire protocol version 3) with the standard library only: no
// cgo; futexes, the socket handshake, seals and mmap through the syscall package. On Windows (the binding of
// SPECIFICATION.md §W) the host listens on the pipe \\.\pipe\shm-<name> instead, and this package opens the
// section it names and sleeps on named events.
//
// A complete guest, serving until the host shuts down:
//
//	package main
//
//	import (
//		"log"
//
//		"shmipc/shm"
//	)
//
//	func main() {
//		client, err := shm.Connect(shm.ClientConfig{ShmName: "my-segment"})
//		if err != nil {
//			log.Fatal(err)
//		}
//		defer client.Close()
//		err = client.Start(func(req, respBuf []byte, t shm.MsgType) (int32, shm.MsgType) {
//			return int32(copy(respBuf, req)), shm.MsgTypeNormal // echo
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//		if err := client.Wait(); err != nil { // nil once the host sends shutdown
//			log.Fatal(err)
//		}
//	}
//
// Calling the host: SendGuestCall copies; AcquireGuestSlot holds a slot for zero-copy calls (write in
// RequestBuffer, Send, read Response in place, Release).
//
// Errors are values to match with errors.Is (ErrTimeout, ErrHostGone, ErrInvalidSegment, ...). An error
// answer from the peer (MsgTypeSystemError) is never data: it is a *RemoteError carrying the WireError code,
// for errors.As. A handler that panics, or answers more bytes than respBuf holds, makes the host's call fail
// with a RemoteError (WireErrHandlerFailed, WireErrResponseTooLarge); the worker goes on serving.
//
// Busy peers exchange messages without system calls; idle workers sleep in FUTEX_WAIT and wake every 50 ms
// to check that the host is alive (its end of the guest connection is still open). Go's race detector cannot see the other process's accesses to the shared
// segment; the cross-language tests check payloads end to end instead.
package shm

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
// Large messages (SPECIFICATION.md §8.5). A message larger than its slot's capacity travels as a transfer: a
// run of ordinary transactions on one slot, each carrying one slot-sized chunk. Messages that fit a slot take
// the plain path as before, at the same cost. In both directions:
//   - Guest calls: SendGuestCall and SendGuestCallBuffer take requests of any size and return answers of any
//     size up to ClientConfig.MaxMessageSize; SendGuestCallStream reads its request from an io.Reader
//     straight into the slot and may answer into the caller's own slice. The answer is the caller's memory
//     (a new slice, buf or dst): valid for as long as the caller keeps it. A GuestSlot stays zero-copy:
//     requests and answers of at most its Capacity (a larger answer is ErrTooLarge).
//   - Serving: a large request reaches the Handler or ReplyHandler whole, in memory of this process (the
//     package's, or ClientConfig.ReceiveBuffer's), valid only until the handler returns. A ReplyHandler
//     (StartReply) answers any size with Reply.Large, which the package then reads until the host has fetched
//     it (the handler must not change it meanwhile).
//   - Limits, all this guest's own: MaxMessageSize bounds what a worker allocates for one request and what a
//     guest call accepts; MaxTransfers bounds the partial requests held at once (so the memory a host can make
//     this guest hold is at most MaxTransfers x MaxMessageSize, plus one request per host slot being handled);
//     TransferIdleTimeout drops what a host left unfinished. Every chunk header is read once from shared
//     memory and checked before use; a host that breaks the rules gets WireErrStreamInvalid (and the like) as
//     server, or the call fails with ErrProtocol as caller. Close frees every transfer.
//   - Concurrency: each host slot's transfers belong to its worker; guest calls of any size are safe for
//     concurrent use, each on its own slot, with one deadline for the whole call.
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

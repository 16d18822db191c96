// SPDX-License-Identifier: Apache-2.0
// Command shm-bench-guest is the Go guest that shm-bench measures beside its C++ guest (the go-copy and go-zc
// transports): the C++ host calls, this program serves.
//
//	shm-bench-guest [--bulk | --large-req|--large-resp|--large-both --size=N] SEGMENT_NAME
//
// It answers exactly as shm-bench's C++ server does. Echo mode (the default) copies the request into the
// response and answers NORMAL with the same size. Bulk mode (--bulk) reads every byte of the request and
// answers the 8-byte little-endian sum of its little-endian 64-bit words, a trailing partial word adding its
// bytes one by one (bench::SumWords in benchmarks/bench.h). The large modes serve messages larger than a slot
// (bench.h, "Messages larger than a slot"), N bytes on the large side and 8 on the other: --large-req answers
// an N-byte request with its first 4 and last 4 bytes; --large-resp answers an 8-byte request with N bytes of
// the pattern (byte i = (i*7+1) mod 251) whose byte 0 is the request's byte 0; --large-both echoes an N-byte
// request. A large request is assembled in one buffer of this program (ClientConfig.ReceiveBuffer), so that
// the echo can hand it to the package as the large answer. It exits with status 0 when the host shuts down,
// 1 with a message on stderr on any error, 2 on a bad command line.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"shmipc/shm"
)

func main() {
	bulk := false
	var name, large string
	var size uint64
	for _, a := range os.Args[1:] {
		switch {
		case a == "--bulk":
			bulk = true
		case a == "--large-req" || a == "--large-resp" || a == "--large-both":
			large = strings.TrimPrefix(a, "--large-")
		case strings.HasPrefix(a, "--size="):
			n, err := strconv.ParseUint(strings.TrimPrefix(a, "--size="), 10, 64)
			if err != nil || n < 8 {
				usage()
			}
			size = n
		case name == "" && len(a) > 0 && a[0] != '-':
			name = a
		default:
			usage()
		}
	}
	if name == "" || (large != "") != (size != 0) || (large != "" && bulk) {
		usage()
	}
	var err error
	if large != "" {
		err = serveLarge(name, large, size)
	} else {
		err = serve(name, bulk)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shm-bench-guest:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: shm-bench-guest [--bulk | --large-req|--large-resp|--large-both --size=N] SEGMENT_NAME")
	os.Exit(2)
}

// serve attaches to the host's segment and answers its requests until the host shuts down (nil) or dies.
func serve(name string, bulk bool) error {
	client, err := shm.Connect(shm.ClientConfig{ShmName: name})
	if err != nil {
		return err
	}
	defer client.Close()
	handler := echo
	if bulk {
		handler = sum
	}
	if err := client.Start(handler); err != nil {
		return err
	}
	return client.Wait()
}

// echo answers the request itself. A request larger than the response buffer cannot be echoed: that is a
// handler failure, as in the C++ server.
func echo(req, respBuf []byte, _ shm.MsgType) (int32, shm.MsgType) {
	if len(req) > len(respBuf) {
		return 0, shm.MsgTypeSystemError
	}
	return int32(copy(respBuf, req)), shm.MsgTypeNormal
}

// sum answers the request's sum of words (see sumWords).
func sum(req, respBuf []byte, _ shm.MsgType) (int32, shm.MsgType) {
	if len(respBuf) < 8 {
		return 0, shm.MsgTypeSystemError
	}
	binary.LittleEndian.PutUint64(respBuf, sumWords(req))
	return 8, shm.MsgTypeNormal
}

// sumWords adds the little-endian 64-bit words of p, wrapping, then each byte of a trailing partial word as
// a value of its own: the same number as bench::SumWords, which the C++ caller checks the answer against.
func sumWords(p []byte) uint64 {
	var s uint64
	for len(p) >= 8 {
		s += binary.LittleEndian.Uint64(p)
		p = p[8:]
	}
	for _, b := range p {
		s += uint64(b)
	}
	return s
}

// smallSide is the size of the small message of the large modes (bench::kLargeSmallSide).
const smallSide = 8

// serveLarge serves one of the large modes ("req", "resp" or "both", see the command's comment) with
// messages of size bytes on the large side.
func serveLarge(name, mode string, size uint64) error {
	reqSize, respSize := size, uint64(smallSide)
	switch mode {
	case "resp":
		reqSize, respSize = smallSide, size
	case "both":
		respSize = size
	}
	whole := pattern(int(reqSize))   // where a large request is assembled; touched before the window
	answer := pattern(int(respSize)) // large-resp's answer
	client, err := shm.Connect(shm.ClientConfig{
		ShmName: name,
		ReceiveBuffer: func(n uint64, _ shm.MsgType, _ int) []byte {
			if n > uint64(len(whole)) {
				return nil
			}
			return whole[:n]
		},
	})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.StartReply(largeHandler(mode, reqSize, answer)); err != nil {
		return err
	}
	return client.Wait()
}

// largeHandler answers a large mode's request (see serveLarge); answer is large-resp's pattern.
func largeHandler(mode string, reqSize uint64, answer []byte) shm.ReplyHandler {
	return func(req, respBuf []byte, _ shm.MsgType) shm.Reply {
		if uint64(len(req)) != reqSize {
			return shm.Reply{Type: shm.MsgTypeSystemError}
		}
		var out []byte
		switch mode {
		case "req":
			var small [smallSide]byte
			copy(small[:4], req[:4])
			copy(small[4:], req[len(req)-4:])
			out = small[:]
		case "resp":
			answer[0] = req[0]
			out = answer
		default:
			out = req // in whole when it is larger than the slot: still ours after the handler returns
		}
		if len(out) <= len(respBuf) {
			return shm.Reply{Size: int32(copy(respBuf, out)), Type: shm.MsgTypeNormal}
		}
		return shm.Reply{Type: shm.MsgTypeNormal, Large: out}
	}
}

// pattern returns n bytes of the request pattern (bench::FillPattern): byte i = (i*7+1) mod 251.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte((i*7 + 1) % 251)
	}
	return p
}

// SPDX-License-Identifier: Apache-2.0
// Command shm-bench-guest is the Go guest that shm-bench measures beside its C++ guest (the go-copy and go-zc
// transports): the C++ host calls, this program serves.
//
//	shm-bench-guest [--bulk] SEGMENT_NAME
//
// It answers exactly as shm-bench's C++ server does. Echo mode (the default) copies the request into the
// response and answers NORMAL with the same size. Bulk mode (--bulk) reads every byte of the request and
// answers the 8-byte little-endian sum of its little-endian 64-bit words, a trailing partial word adding its
// bytes one by one (bench::SumWords in benchmarks/bench.h). It exits with status 0 when the host shuts down,
// 1 with a message on stderr on any error, 2 on a bad command line.
package main

import (
	"encoding/binary"
	"fmt"
	"os"

	"shmipc/shm"
)

func main() {
	bulk := false
	var name string
	for _, a := range os.Args[1:] {
		switch {
		case a == "--bulk":
			bulk = true
		case name == "" && len(a) > 0 && a[0] != '-':
			name = a
		default:
			usage()
		}
	}
	if name == "" {
		usage()
	}
	if err := serve(name, bulk); err != nil {
		fmt.Fprintln(os.Stderr, "shm-bench-guest:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: shm-bench-guest [--bulk] SEGMENT_NAME")
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

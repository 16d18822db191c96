// SPDX-License-Identifier: Apache-2.0
// Command shm-demo-guest is the Go guest of tools/shm-demo: run the demo with
//
//	shm-demo --guest-cmd /path/to/shm-demo-guest
//
// and the host starts this program with the segment name as its last argument. It follows the demo's guest
// contract: NORMAL requests are echoed; a request of type 129 (probe) carrying a little-endian uint32 N makes
// N guest calls (type GUEST_CALL, 64 bytes, echoed by the host), timed one by one, and is answered with six
// little-endian uint64: calls that succeeded, calls that failed, p50, p99, p99.9 and max in nanoseconds.
// It exits with status 0 when the host sends shutdown, 1 on any error.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"shmipc/shm"
)

const (
	probeType        = shm.MsgType(129)
	guestCallPayload = 64
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: shm-demo-guest [options ignored] SEGMENT_NAME")
		os.Exit(2)
	}
	name := os.Args[len(os.Args)-1]
	client, err := shm.Connect(shm.ClientConfig{ShmName: name})
	if err != nil {
		fmt.Fprintln(os.Stderr, "shm-demo-guest:", err)
		os.Exit(1)
	}
	defer client.Close()
	err = client.Start(func(req, respBuf []byte, t shm.MsgType) (int32, shm.MsgType) {
		switch t {
		case probeType:
			return probe(client, req, respBuf)
		case shm.MsgTypeNormal:
			return int32(copy(respBuf, req)), shm.MsgTypeNormal
		}
		return 0, shm.MsgTypeSystemError
	})
	if err == nil {
		err = client.Wait()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shm-demo-guest:", err)
		client.Close()
		os.Exit(1)
	}
}

// probe makes the guest calls a probe request asks for and reports their round-trip times.
func probe(client *shm.Client, req, respBuf []byte) (int32, shm.MsgType) {
	if len(req) < 4 || len(respBuf) < 6*8 {
		return 0, shm.MsgTypeSystemError
	}
	n := binary.LittleEndian.Uint32(req)
	request := bytes.Repeat([]byte{0x5a}, guestCallPayload)
	answer := make([]byte, guestCallPayload)
	samples := make([]uint64, 0, n)
	var failed uint64
	for i := uint64(0); i < uint64(n); i++ {
		binary.LittleEndian.PutUint64(request, i)
		t0 := time.Now()
		got, _, err := client.SendGuestCallBuffer(request, answer, shm.MsgTypeGuestCall, -1)
		rtt := time.Since(t0)
		if err == nil && bytes.Equal(got, request) {
			samples = append(samples, uint64(rtt))
		} else {
			failed++
		}
	}
	sort.Slice(samples, func(a, b int) bool { return samples[a] < samples[b] })
	report := [6]uint64{uint64(len(samples)), failed, percentile(samples, 0.50), percentile(samples, 0.99),
		percentile(samples, 0.999), percentile(samples, 1)}
	for i, v := range report {
		binary.LittleEndian.PutUint64(respBuf[8*i:], v)
	}
	return 6 * 8, probeType
}

// percentile is the nearest-rank percentile of sorted samples (0 when there are none).
func percentile(sorted []uint64, q float64) uint64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(sorted) {
		rank = len(sorted)
	}
	return sorted[rank-1]
}

// SPDX-License-Identifier: Apache-2.0
package main

import (
	"bytes"
	"io"
	"math/rand"
	"testing"
	"testing/iotest"
)

// checkedReader yields exactly what checkedRequest writes, however it is read.
func TestCheckedReaderMatchesCheckedRequest(t *testing.T) {
	for _, size := range []int{8, 9, 15, 16, 100, 4097, 70001} {
		want := make([]byte, size)
		checkedRequest(want, rand.New(rand.NewSource(int64(size))))
		for name, r := range map[string]io.Reader{
			"whole":    newCheckedReader(int64(size), int64(size)),
			"one byte": iotest.OneByteReader(newCheckedReader(int64(size), int64(size))),
			"half":     iotest.HalfReader(newCheckedReader(int64(size), int64(size))),
		} {
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, want) || !checksumOK(got) {
				t.Fatalf("size %d, %s: %v, %d bytes", size, name, err, len(got))
			}
		}
	}
}

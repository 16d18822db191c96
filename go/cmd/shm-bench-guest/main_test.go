// SPDX-License-Identifier: Apache-2.0
package main

import (
	"bytes"
	"encoding/binary"
	"testing"

	"shmipc/shm"
)

// pattern is shm-bench's request (bench::FillPattern): byte i = (i*7 + 1) mod 251.
func pattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte((i*7 + 1) % 251)
	}
	return p
}

// The C++ caller checks the bulk answer against bench::SumWords; these sums are what it computes for the
// pattern, trailing partial words included (lengths that are not multiples of 8).
func TestSumWordsMatchesCpp(t *testing.T) {
	for _, c := range []struct {
		n    int
		want uint64
	}{
		{0, 0}, {1, 1}, {7, 154}, {8, 3615022833237690369}, {9, 3615022833237690426},
		{15, 3615022833237690915}, {64, 14379807929675706935}, {1027, 17174982093773767023},
		{1 << 20, 6696447144202075810},
	} {
		if got := sumWords(pattern(c.n)); got != c.want {
			t.Errorf("sumWords(%d bytes) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestHandlers(t *testing.T) {
	req := pattern(64)
	resp := make([]byte, 64)
	if n, typ := echo(req, resp, shm.MsgTypeNormal); n != 64 || typ != shm.MsgTypeNormal || !bytes.Equal(resp, req) {
		t.Errorf("echo answered %d bytes of type %v", n, typ)
	}
	if _, typ := echo(pattern(65), resp, shm.MsgTypeNormal); typ != shm.MsgTypeSystemError {
		t.Errorf("echo of a request larger than the response buffer answered %v, want a failure", typ)
	}
	if n, typ := sum(req, resp, shm.MsgTypeNormal); n != 8 || typ != shm.MsgTypeNormal ||
		binary.LittleEndian.Uint64(resp) != sumWords(req) {
		t.Errorf("sum answered %d bytes of type %v", n, typ)
	}
}

// SPDX-License-Identifier: Apache-2.0
package main

import (
	"bytes"
	"encoding/binary"
	"testing"

	"shmipc/shm"
)

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

// The large modes answer as shm-bench's C++ caller checks (bench::LargeAnswerOk): both ends of a large
// request, the pattern with the request's tag, the echo; plainly when the answer fits respBuf, else as Large.
func TestLargeHandlers(t *testing.T) {
	const n = 1 << 16
	req := pattern(n)
	req[0] = 42
	small := make([]byte, 64)
	r := largeHandler("req", n, nil)(req, small, shm.MsgTypeNormal)
	if r.Large != nil || r.Size != 8 || !bytes.Equal(small[:4], req[:4]) || !bytes.Equal(small[4:8], req[n-4:]) {
		t.Errorf("large-req answered %+v, %v", r, small[:8])
	}
	r = largeHandler("resp", 8, pattern(n))(req[:8], small, shm.MsgTypeNormal)
	if r.Large == nil || len(r.Large) != n || r.Large[0] != 42 || !bytes.Equal(r.Large[1:], pattern(n)[1:]) {
		t.Errorf("large-resp answered %d bytes", len(r.Large))
	}
	r = largeHandler("both", n, nil)(req, small, shm.MsgTypeNormal)
	if !bytes.Equal(r.Large, req) {
		t.Errorf("large-both answered %d bytes, not the request", len(r.Large))
	}
	if r = largeHandler("both", n, nil)(req[:10], small, shm.MsgTypeNormal); r.Type != shm.MsgTypeSystemError {
		t.Errorf("a request of the wrong size was answered %v, want a failure", r.Type)
	}
}

// SPDX-License-Identifier: Apache-2.0
//go:build linux

package shm_test

import (
	"log"

	"shmipc/shm"
)

// The guest of the package documentation; compiled (not run) by go test, so the documented code stays valid.
func Example() {
	client, err := shm.Connect(shm.ClientConfig{ShmName: "my-segment"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	err = client.Start(func(req, respBuf []byte, t shm.MsgType) (int32, shm.MsgType) {
		return int32(copy(respBuf, req)), shm.MsgTypeNormal // echo
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Wait(); err != nil { // nil once the host sends shutdown
		log.Fatal(err)
	}
}

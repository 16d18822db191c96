// SPDX-License-Identifier: Apache-2.0
//go:build windows

package shm

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The event names of SPECIFICATION.md §W5, byte for byte as its example spells them.
func TestWakeEventNameIsTheSpecificationsExample(t *testing.T) {
	mem := make([]byte, 4096)
	base := uintptr(unsafe.Pointer(&mem[0]))
	addMapping(base, 4096, sectionName("demo", 0x75bcd15)+"-")
	defer removeMapping(base)
	got := syscall.UTF16ToString(unsafe.Slice(eventName((*uint32)(unsafe.Pointer(&mem[128])), 0x0b), 200))
	if want := `Local\shm-demo-00000000075bcd15-0000000080-0000000b`; got != want {
		t.Fatalf("event name %q, want %q", got, want)
	}
}

// Several sleepers on one word (the doorbell's case) are all woken by one wake (§W5).
func TestEverySleeperOnOneWordIsWoken(t *testing.T) {
	var word uint32 = 0x0b
	const sleepers = 4
	var wg sync.WaitGroup
	var timedOut int32
	var entered int32
	for i := 0; i < sleepers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			atomic.AddInt32(&entered, 1)
			for atomic.LoadUint32(&word) == 0x0b {
				if futexWait(&word, 0x0b, int64(60*time.Second)) == futexTimeout {
					atomic.AddInt32(&timedOut, 1)
				}
			}
		}()
	}
	for atomic.LoadInt32(&entered) < sleepers {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	old := atomic.SwapUint32(&word, 0x0c)
	futexWakeAll(&word, old)
	wg.Wait()
	t.Logf("all %d sleepers returned %v after one wake", sleepers, time.Since(start))
	if atomic.LoadInt32(&timedOut) != 0 || time.Since(start) > 30*time.Second {
		t.Fatal("a sleeper waited for its timeout: a wake-up was lost")
	}
}

// With no host, Connect retries until its deadline and then says so (§W4 guest step 1).
func TestConnectWithoutAHostEndsWithNotFound(t *testing.T) {
	start := time.Now()
	_, err := Connect(ClientConfig{ShmName: "shm-go-win-nobody", ConnectionTimeout: 300 * time.Millisecond})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Connect: %v, want ErrNotFound", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("Connect took %v past its 300 ms deadline", took)
	}
}

// SPDX-License-Identifier: Apache-2.0
//go:build linux || windows

package shm

// cpuRelax executes one PAUSE (pause_amd64.s), as the C++ library's platform::CpuRelax does before every
// re-read of a spinning wait. An assembly function is never inlined: each call also costs a call and return.
func cpuRelax()

// SPDX-License-Identifier: Apache-2.0
//go:build (linux || windows) && !amd64

package shm

// cpuRelax is a no-op where this package has no spin-wait hint in assembly (PAUSE is x86's).
func cpuRelax() {}

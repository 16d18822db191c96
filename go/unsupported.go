// SPDX-License-Identifier: Apache-2.0
//go:build !linux && !windows

package shm

// This package speaks to its host through the system calls of a platform binding: Linux (futexes, memfd
// seals, SO_PEERCRED on an abstract Unix socket; SPECIFICATION.md §1–§4) or Windows (a named pipe, a named
// section and named events; §W). No other platform has a binding, so building for one fails here, with the
// name below as the whole message, instead of with the undefined helpers of the other files.
var _ = shm_supports_only_linux_and_windows

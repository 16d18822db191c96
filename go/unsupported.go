// SPDX-License-Identifier: Apache-2.0
//go:build !linux

package shm

// This package speaks to its host through Linux system calls: futexes, memfd seals, SO_PEERCRED on an abstract
// Unix socket (SPECIFICATION.md §1–§4, "the Linux binding"). No other platform has a binding yet, so building
// for one fails here, with the name below as the whole message, instead of with the undefined Linux-only
// helpers of the other files.
var _ = shm_supports_only_linux_for_now

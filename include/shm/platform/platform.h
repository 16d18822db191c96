// SPDX-License-Identifier: Apache-2.0
// The platform interface: clock, futex-style wait/wake on a 32-bit word in shared memory, the segment memory
// (create, seal, check, map), and the rendezvous through which a host hands it to an admitted guest and each
// side learns that the other died.
//
// Core code includes only this header. A port adds platform/<os>/ with the same names and one #elif here;
// it edits nothing else.
//
// Contract of every function: thread-safe, no allocation except where a std::string is returned,
// errors as Result values, never exceptions.
#pragma once

#include "shm/platform/copy.h"  // CPU, not OS: shared by both layers

#if defined(__linux__)
#include "shm/platform/linux/clock.h"
#include "shm/platform/linux/file.h"
#include "shm/platform/linux/futex.h"
#include "shm/platform/linux/socket.h"
#elif defined(_WIN32)
#include "shm/platform/windows/clock.h"
#include "shm/platform/windows/file.h"
#include "shm/platform/windows/futex.h"
#include "shm/platform/windows/socket.h"
#else
#error "shm: no platform layer for this OS yet (see include/shm/platform/platform.h)"
#endif

// SPDX-License-Identifier: Apache-2.0
// shm — versions. Two numbers that change for different reasons:
//
//   SHM_VERSION_*          the library's release (semantic versioning; CMake's project version, CHANGELOG.md).
//   SHM_PROTOCOL_VERSION   the wire protocol (SPECIFICATION.md): what a host and a guest must agree on to talk.
//
// A release may keep the protocol version (peers of both releases interoperate) or bump it (they refuse each
// other with kVersionMismatch). CHANGELOG.md records the protocol version of every release.
#pragma once

#include "shm/wire/layout.h"

/// The library's release, MAJOR.MINOR.PATCH. Equal to `project(shm VERSION ...)` in CMakeLists.txt (a test
/// checks it) and to the `Version` of the shm.pc and shmConfigVersion.cmake that an install writes.
#define SHM_VERSION_MAJOR 0
#define SHM_VERSION_MINOR 2
#define SHM_VERSION_PATCH 0
#define SHM_VERSION_STRING "0.2.0"

/// The wire protocol this library speaks (SPECIFICATION.md §13): the `version` field of a segment
/// and of the attach hello. Peers accept only an exact match.
#define SHM_PROTOCOL_VERSION 3

static_assert(SHM_PROTOCOL_VERSION == shm::wire::kVersion,
              "SHM_PROTOCOL_VERSION must equal shm::wire::kVersion (include/shm/wire/layout.h)");

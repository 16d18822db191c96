// SPDX-License-Identifier: Apache-2.0
// Child processes of the tests, tools and benchmarks, in one place: the POSIX helper (posix_spawn or fork +
// exec) or its CreateProcessW form on Windows, with the same names. See the header included below.
#pragma once

#if defined(_WIN32)
#include "child_process_windows.h"
#else
#include "child_process_posix.h"
#endif

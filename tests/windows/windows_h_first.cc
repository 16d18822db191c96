// SPDX-License-Identifier: Apache-2.0
// Compiles only: every public header after <windows.h> and its min and max macros. MSVC's <windows.h> defines
// them unless NOMINMAX is set; mingw-w64's C++ library sets NOMINMAX itself, so they are defined here as
// MSVC's headers define them, to catch a `std::min(` or `numeric_limits<T>::max(` in the library that the
// macros would break. The standard headers come first: libstdc++ (unlike MSVC's library) is not written to
// survive the macros, and include guards then keep it from being read again.
#include <windows.h>
#include <xmmintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef min
#define min(a, b) (((a) < (b)) ? (a) : (b))
#endif
#ifndef max
#define max(a, b) (((a) > (b)) ? (a) : (b))
#endif

#include <shm/shm.h>

int shm_windows_h_first() { return static_cast<int>(shm::wire::kVersion); }

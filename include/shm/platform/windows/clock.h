// SPDX-License-Identifier: Apache-2.0
// Windows clock and CPU primitives: QueryPerformanceCounter in nanoseconds, the clock of every deadline in the
// library (system-wide, so host and guest read the same one; SPECIFICATION.md §W5), and the pause and prefetch
// hints through the intrinsics both mingw-w64 and MSVC have.
#pragma once

#include <windows.h>
#include <xmmintrin.h>

#include <climits>
#include <cstdint>

namespace shm {
namespace platform {

namespace internal {
inline int64_t CounterFrequency() noexcept {
  static const int64_t freq = [] {
    LARGE_INTEGER f;
    QueryPerformanceFrequency(&f);  // never fails on Windows XP and later
    return f.QuadPart > 0 ? static_cast<int64_t>(f.QuadPart) : int64_t{1};
  }();
  return freq;
}
}  // namespace internal

/// Nanoseconds on QueryPerformanceCounter (system-wide: comparable across processes). No kernel transition
/// on current Windows. Thread-safe, never fails.
inline int64_t MonotonicNs() noexcept {
  LARGE_INTEGER c;
  QueryPerformanceCounter(&c);
  const int64_t f = internal::CounterFrequency();
  const int64_t t = static_cast<int64_t>(c.QuadPart);
  return (t / f) * 1000000000 + (t % f) * 1000000000 / f;
}

/// The MonotonicNs() instant `timeout_ns` from now, saturating at INT64_MAX (a huge timeout means "never";
/// a negative one means "now"). Thread-safe.
inline int64_t DeadlineAfter(int64_t timeout_ns) noexcept {
  const int64_t now = MonotonicNs();
  if (timeout_ns <= 0) return now;
  return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

/// One spin-wait hint to the CPU (PAUSE on x86-64). Thread-safe.
inline void CpuRelax() noexcept { _mm_pause(); }

/// Start moving the cache line at `p` to this core. A hint: it reads nothing the program sees and cannot
/// fault. Thread-safe.
inline void PrefetchRead(const void* p) noexcept { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }
inline void PrefetchWrite(void* p) noexcept { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T0); }

/// Give the CPU to another runnable thread. Thread-safe.
inline void YieldThread() noexcept { (void)SwitchToThread(); }

/// Windows does not tell a thread how often it left its CPU: -1, so the same-CPU rule of SPECIFICATION.md
/// §7.3 never applies (§W5). Thread-safe.
inline int64_t ContextSwitches() noexcept { return -1; }

/// Sleep for at least `ns` nanoseconds (whole milliseconds: Sleep's unit; used only for bounded back-off).
/// Thread-safe.
inline void SleepNs(int64_t ns) noexcept {
  if (ns <= 0) return;
  const int64_t ms = (ns + 999999) / 1000000;
  Sleep(ms > 0x7FFFFFFF ? 0x7FFFFFFFu : static_cast<DWORD>(ms));
}

/// The calling process's id (for messages only). Thread-safe.
inline uint32_t ProcessId() noexcept { return static_cast<uint32_t>(GetCurrentProcessId()); }

}  // namespace platform
}  // namespace shm

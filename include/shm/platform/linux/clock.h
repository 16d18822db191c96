// SPDX-License-Identifier: Apache-2.0
// Linux clock: CLOCK_MONOTONIC, the clock of every deadline in the library and of FUTEX_WAIT timeouts.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdint>

namespace shm {
namespace platform {

/// Nanoseconds on CLOCK_MONOTONIC (system-wide: comparable across processes). vDSO, no system call.
/// Thread-safe, never fails.
inline int64_t MonotonicNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

/// The CLOCK_MONOTONIC instant `timeout_ns` from now, saturating at INT64_MAX (a huge timeout means "never";
/// a negative one means "now"). Thread-safe.
inline int64_t DeadlineAfter(int64_t timeout_ns) noexcept {
  const int64_t now = MonotonicNs();
  if (timeout_ns <= 0) return now;
  return timeout_ns > INT64_MAX - now ? INT64_MAX : now + timeout_ns;
}

/// One spin-wait hint to the CPU (PAUSE on x86, YIELD on ARM). Thread-safe.
inline void CpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// Start moving the cache line at `p` to this core, for reading or for writing. A hint: it reads nothing the
/// program sees and cannot fault. Thread-safe.
inline void PrefetchRead(const void* p) noexcept { __builtin_prefetch(p, 0, 3); }
inline void PrefetchWrite(void* p) noexcept { __builtin_prefetch(p, 1, 3); }

/// Give the CPU to another runnable thread. Thread-safe.
inline void YieldThread() noexcept { sched_yield(); }

/// How many times the calling thread has left its CPU for another thread (context switches of either kind: a
/// sched_yield that switches counts as involuntary), or -1 if unknown. A system call: for slow paths only.
/// Thread-safe.
inline int64_t ContextSwitches() noexcept {
  rusage u{};
  if (getrusage(RUSAGE_THREAD, &u) != 0) return -1;
  return static_cast<int64_t>(u.ru_nvcsw) + static_cast<int64_t>(u.ru_nivcsw);
}

/// Sleep for `ns` nanoseconds (used only for bounded back-off while all slots are busy). Thread-safe.
inline void SleepNs(int64_t ns) noexcept {
  if (ns <= 0) return;
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  nanosleep(&ts, nullptr);
}

/// The calling process's id (for messages only). Thread-safe.
inline uint32_t ProcessId() noexcept { return static_cast<uint32_t>(::getpid()); }

}  // namespace platform
}  // namespace shm

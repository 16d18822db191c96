// SPDX-License-Identifier: Apache-2.0
// Linux futex wait/wake on a 32-bit word in a MAP_SHARED mapping (shared futexes, not FUTEX_PRIVATE_FLAG:
// the waiter and the waker are in different processes). Timeouts are relative, measured on CLOCK_MONOTONIC.
#pragma once

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace shm {
namespace platform {

enum class WaitResult {
  kWoken,    ///< A wake-up, or a spurious return: re-check the word.
  kChanged,  ///< The word no longer held `expected` when the kernel looked.
  kTimeout,  ///< timeout_ns elapsed.
};

/// Sleep while *word == expected, at most timeout_ns (> 0). The kernel compares atomically with going to
/// sleep, so a wake that follows a change of the word is never lost. Thread-safe; may return spuriously.
inline WaitResult FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) noexcept {
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
  long rc = syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
  if (rc == 0) return WaitResult::kWoken;
  if (errno == ETIMEDOUT) return WaitResult::kTimeout;
  if (errno == EAGAIN) return WaitResult::kChanged;
  return WaitResult::kWoken;  // EINTR: treat as spurious
}

/// Wake every thread sleeping in FutexWait on `word`, in any process. `replaced` (the value the caller's change
/// of the word replaced) is not needed on Linux; the Windows binding wakes by value. Thread-safe.
inline void FutexWakeAll(std::atomic<uint32_t>* word, uint32_t /*replaced*/) noexcept {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace platform
}  // namespace shm

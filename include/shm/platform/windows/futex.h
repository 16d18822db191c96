// SPDX-License-Identifier: Apache-2.0
// Windows wait/wake on a 32-bit word in a mapped segment. Windows has no futex across processes
// (WaitOnAddress wakes only threads of the waker's process), so a sleeper waits on a named manual-reset event
// that stands for "this word left this value": Local\shm-<name>-<instance>-<offset>-<value>
// (SPECIFICATION.md §W5). One event per word and value, never reset, so a SetEvent that comes before the wait
// is not lost and every sleeper on the word is woken, however many there are.
#pragma once

#include <windows.h>

#include <atomic>
#include <cstdint>
#include <mutex>

#include "shm/platform/windows/file.h"

namespace shm {
namespace platform {

enum class WaitResult {
  kWoken,    ///< A wake-up, or a spurious return: re-check the word.
  kChanged,  ///< The word no longer held `expected` when the waiter looked (after creating its event).
  kTimeout,  ///< timeout_ns elapsed.
};

namespace internal {

// Room for "Local\shm-" + a 100-byte name + "-" + 16 + "-" + 10 + "-" + 8 digits and the NUL.
constexpr size_t kEventNameMax = 160;

inline void PutHex(wchar_t* out, size_t* at, uint64_t v, int digits) {
  static const wchar_t kHex[] = L"0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out[(*at)++] = kHex[(v >> (4 * i)) & 0xF];
}

/// The name of the event for `word` holding `value`. A word outside every segment mapping of this process
/// (waits between threads of one process) gets a name private to this process. No allocation.
inline bool EventName(const std::atomic<uint32_t>* word, uint32_t value, wchar_t (&out)[kEventNameMax]) {
  const auto* addr = reinterpret_cast<const unsigned char*>(word);
  size_t at = 0;
  uint64_t offset = 0;
  {
    auto& m = AllMappings();
    std::lock_guard<std::mutex> lock(m.mu);
    const MappedSegment* seg = nullptr;
    for (const auto& s : m.list) {
      if (addr >= s.base && addr < s.base + s.size) seg = &s;
    }
    if (seg != nullptr) {
      if (seg->prefix.size() + 10 + 1 + 8 + 1 > kEventNameMax) return false;
      for (wchar_t c : seg->prefix) out[at++] = c;
      offset = static_cast<uint64_t>(addr - seg->base);
    }
  }
  if (at == 0) {
    static const wchar_t kLocal[] = L"Local\\shm-local-";
    for (const wchar_t* c = kLocal; *c != 0; ++c) out[at++] = *c;
    PutHex(out, &at, GetCurrentProcessId(), 8);
    out[at++] = L'-';
    offset = reinterpret_cast<uintptr_t>(addr);
    PutHex(out, &at, offset, 16);
  } else {
    PutHex(out, &at, offset, 10);
  }
  out[at++] = L'-';
  PutHex(out, &at, value, 8);
  out[at] = 0;
  return true;
}

}  // namespace internal

/// Sleep while *word == expected, at most timeout_ns (> 0, rounded up to whole milliseconds). The event is
/// created before the word is re-read, and a notifier opens it only after changing the word: a wake that
/// follows a change of the word is never lost (SPECIFICATION.md §W5). Thread-safe; may return spuriously.
inline WaitResult FutexWait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) noexcept {
  wchar_t name[internal::kEventNameMax];
  if (!internal::EventName(word, expected, name)) {
    SleepNs(timeout_ns < 1000000 ? timeout_ns : 1000000);
    return WaitResult::kWoken;
  }
  HANDLE e = CreateEventW(nullptr, TRUE, FALSE, name);
  if (e == nullptr) {  // out of handles or memory: sleep a little instead, as if woken spuriously
    SleepNs(timeout_ns < 1000000 ? timeout_ns : 1000000);
    return WaitResult::kWoken;
  }
  // Pairs with the notifier's change of the word before its OpenEventW: either it finds this event, or this
  // load sees its change.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (word->load(std::memory_order_seq_cst) != expected) {
    CloseHandle(e);
    return WaitResult::kChanged;
  }
  const int64_t ms = (timeout_ns + 999999) / 1000000;
  const DWORD rc = WaitForSingleObject(e, ms >= 0x7FFFFFFF ? 0x7FFFFFFEu : static_cast<DWORD>(ms < 1 ? 1 : ms));
  CloseHandle(e);
  return rc == WAIT_TIMEOUT ? WaitResult::kTimeout : WaitResult::kWoken;
}

/// Wake every thread, in any process, sleeping in FutexWait on `word` for the value `replaced` (the value the
/// caller's change of the word replaced, waiting bit set). Thread-safe.
inline void FutexWakeAll(std::atomic<uint32_t>* word, uint32_t replaced) noexcept {
  wchar_t name[internal::kEventNameMax];
  if (!internal::EventName(word, replaced, name)) return;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  HANDLE e = OpenEventW(EVENT_MODIFY_STATE, FALSE, name);
  if (e == nullptr) return;  // no sleeper has created it yet: it re-reads the word after creating it
  SetEvent(e);
  CloseHandle(e);
}

}  // namespace platform
}  // namespace shm

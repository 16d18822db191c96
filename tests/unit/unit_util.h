// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the unit tests.
#pragma once

#if defined(_WIN32)
#include <windows.h>
#else
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

#if !defined(_WIN32)
#include "../common/segment_access.h"
#endif
#include "shm/detail/wait.h"
#include "shm/platform/platform.h"
#include "shm/wire/protocol.h"

namespace shm_unit {

/// A segment name no other test, build or concurrent ctest process uses: tag, pid and a per-process counter.
inline std::string UniqueName(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "shm-unit-" + tag + "-" + std::to_string(shm::platform::ProcessId()) + "-" +
         std::to_string(counter.fetch_add(1));
}

#if defined(_WIN32)
/// Whether a host holds segment name `name` (its host lock Local\shm-<name> exists, SPECIFICATION.md §W2).
inline bool NameHeld(const std::string& name) {
  const std::wstring w = L"Local\\shm-" + std::wstring(name.begin(), name.end());
  HANDLE h = OpenEventW(SYNCHRONIZE, FALSE, w.c_str());
  if (h == nullptr) return false;
  CloseHandle(h);
  return true;
}
#else
/// Whether a host holds segment name `name` (its rendezvous address is bound).
inline bool NameHeld(const std::string& name) { return shm_test::NameHeld(name); }
#endif

/// Poll `cond` until it holds or `timeout` passes (a generous bound for conditions another thread sets).
template <typename Cond>
bool WaitUntil(Cond cond, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

struct WakeResult {
  bool slept = false;  // the waiter published kWaiting before `wake` ran
  shm::detail::WaitStatus status = shm::detail::WaitStatus::kTimeout;
  int64_t latency_ns = 0;  // from just before `wake` to the waiter's return
};

/// Runs `wait` (returning a WaitStatus) on a thread; once it has published kWaiting on `word` (it sleeps or is
/// about to), runs `wake` and measures how long the waiter takes to return.
template <typename Wait, typename Wake>
WakeResult WakeLatency(std::atomic<uint32_t>& word, Wait wait, Wake wake) {
  WakeResult r;
  std::atomic<int64_t> returned_at{0};
  std::thread waiter([&] {
    r.status = wait();
    returned_at.store(shm::platform::MonotonicNs());
  });
  r.slept = WaitUntil([&] { return (word.load() & shm::wire::kWaiting) != 0; });
  const int64_t woke_at = shm::platform::MonotonicNs();
  wake();
  waiter.join();
  r.latency_ns = returned_at.load() - woke_at;
  return r;
}

}  // namespace shm_unit

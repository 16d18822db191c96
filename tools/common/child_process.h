// SPDX-License-Identifier: Apache-2.0
// Child processes of the tools and benchmarks: start one with posix_spawn, wait for it with a deadline, stop
// it (a grace period, then SIGTERM, then SIGKILL), and say how it ended. One copy for shm-demo and shm-bench.
#pragma once

#include <shm/platform/platform.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <vector>

extern char** environ;

namespace shm_tools {

/// Starts args[0] (a path) with args and this process's environment. Returns 0, or the errno of the failure.
inline int SpawnProcess(const std::vector<std::string>& args, pid_t* pid) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  return posix_spawn(pid, argv[0], nullptr, nullptr, argv.data(), environ);
}

/// Waits for `pid` until `deadline_ns` (CLOCK_MONOTONIC; a past deadline looks once), polling every
/// millisecond. True if it exited and was reaped, or is not a child of this process; `status` then receives
/// its wait status (-1: unknown).
inline bool WaitExit(pid_t pid, int64_t deadline_ns, int* status = nullptr) {
  for (;;) {
    int st = 0;
    const pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
      if (status) *status = r == pid ? st : -1;
      return true;
    }
    if (shm::platform::MonotonicNs() >= deadline_ns) return false;
    shm::platform::SleepNs(1'000'000);
  }
}

/// SIGKILL and reap (blocks until the kernel has ended it).
inline void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
}

/// Ends `pid`: lets it exit by itself for `grace_ns`, then sends SIGTERM and waits `term_ns`, then kills it.
/// True if it exited by itself within the grace period (`status` then holds its wait status).
inline bool StopProcess(pid_t pid, int64_t grace_ns, int64_t term_ns, int* status = nullptr) {
  if (WaitExit(pid, shm::platform::MonotonicNs() + grace_ns, status)) return true;
  kill(pid, SIGTERM);
  if (!WaitExit(pid, shm::platform::MonotonicNs() + term_ns)) KillAndReap(pid);
  return false;
}

/// How a process ended, from its wait status; -1 stands for "did not exit in time and was killed".
inline std::string DescribeExit(int status) {
  if (status == -1) return "did not exit in time and was killed";
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "ended with wait status " + std::to_string(status);
}

}  // namespace shm_tools

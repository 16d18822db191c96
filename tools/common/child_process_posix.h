// SPDX-License-Identifier: Apache-2.0
// Child processes of the tests, tools and benchmarks, in one place: start one (posix_spawn, or fork + exec
// when it must drop privileges or die with its parent), with descriptors placed at fixed numbers and optional
// stdin/stdout pipes; wait for it with a deadline; stop it (a grace period, then SIGTERM, then SIGKILL); say
// how it ended. Nothing else in the project may fork, exec or wait for a child (a plain fork that runs this
// process's own code, with no exec, is the one exception, and says why where it happens).
//
// The interface is meant to outlive POSIX: a Windows port gives the same names a CreateProcessW version.
// Wait statuses are POSIX wait statuses there too (an exit code c is reported as c << 8).
//
// Thread safety: the free functions are safe from any thread (they touch only the pid given). A ChildProcess
// is not: one thread at a time, like a std::string. Starting a child from several threads at once is safe
// (descriptors are created close-on-exec, so one child never inherits another's pipe).
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <shm/platform/platform.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace shm_tools {

/// How to start a child. The defaults: args[0] is the file to run, this process's environment, every
/// descriptor that is not close-on-exec inherited as it is.
struct SpawnOptions {
  std::string path;          ///< The file to run, if not args[0] (which is then only the child's argv[0]).
  bool search_path = false;  ///< Look the file up in PATH if it has no '/'. Not with uid/gid/die_with_parent.
  std::optional<std::vector<std::string>> env;  ///< The child's whole environment ("K=V"), if set.
  /// Descriptors of this process to place at fixed numbers in the child: {here, there}. Applied after the
  /// pipes below, so {x, 1} overrides pipe_stdout. Sources and targets may overlap in any way.
  std::vector<std::pair<int, int>> fds;
  bool pipe_stdin = false;       ///< The child's stdin is a pipe: ChildProcess::stdin_fd() writes to it.
  bool pipe_stdout = false;      ///< The child's stdout is a pipe: ChildProcess::stdout_fd() reads it.
  bool default_sigpipe = false;  ///< The child starts with SIGPIPE at its default even if this process ignores it.
  // Privilege drop and parent-death signal: these need code between fork and exec, so they make the start a
  // fork + exec. The child then exits 125 if a step fails, 124 if this process died before it was set up,
  // 127 if exec failed (without them, a failed exec is an error of the start itself).
  int uid = -1;                  ///< setuid to this (after setgid), if >= 0.
  int gid = -1;                  ///< setgid to this and clear the supplementary groups, if >= 0.
  bool die_with_parent = false;  ///< The child gets SIGKILL when this process dies (Linux PR_SET_PDEATHSIG).
};

namespace detail {

/// The start itself. `in`/`out` receive this process's ends of the pipes asked for (or -1). Returns 0 or the
/// errno of the failure (then nothing is left open and no child runs).
inline int Spawn(const std::vector<std::string>& args, const SpawnOptions& opt, pid_t* pid, int* in, int* out) {
  *pid = -1;
  *in = *out = -1;
  if (args.empty() && opt.path.empty()) return EINVAL;
  std::vector<int> close_here;  // descriptors to close in this process once the child has started
  std::vector<int> keep;        // this process's pipe ends, closed too if the start fails
  auto cleanup = [&](int err) {
    for (int fd : close_here) ::close(fd);
    if (err != 0) {
      for (int fd : keep) ::close(fd);
      *in = *out = -1;
    }
    return err;
  };
  std::vector<std::pair<int, int>> map;  // {here, there}
  // A pipe whose end `child_end` (0: read, 1: write) becomes `there` in the child; this process keeps the other.
  auto add_pipe = [&](int child_end, int there, int* mine) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return errno;
    close_here.push_back(p[child_end]);
    keep.push_back(*mine = p[1 - child_end]);
    map.push_back({p[child_end], there});
    return 0;
  };
  if (int err = opt.pipe_stdin ? add_pipe(0, 0, in) : 0; err != 0) return cleanup(err);
  if (int err = opt.pipe_stdout ? add_pipe(1, 1, out) : 0; err != 0) return cleanup(err);
  map.insert(map.end(), opt.fds.begin(), opt.fds.end());
  // Copy every source above every target first (close-on-exec, so the copies vanish at exec): placing one
  // then cannot overwrite another's source, and a source already at its target still loses close-on-exec.
  int above = 3;
  for (const auto& m : map) above = std::max(above, m.second + 1);
  std::vector<std::pair<int, int>> moves;
  for (const auto& [from, to] : map) {
    const int copy = ::fcntl(from, F_DUPFD_CLOEXEC, above);
    if (copy < 0) return cleanup(errno);
    close_here.push_back(copy);
    moves.push_back({copy, to});
  }
  const std::string file = opt.path.empty() ? args[0] : opt.path;
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  if (argv.empty()) argv.push_back(const_cast<char*>(file.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envv;
  if (opt.env) {
    for (const auto& e : *opt.env) envv.push_back(const_cast<char*>(e.c_str()));
    envv.push_back(nullptr);
  }
  char** envp = opt.env ? envv.data() : environ;

  if (opt.uid < 0 && opt.gid < 0 && !opt.die_with_parent) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (const auto& [from, to] : moves) posix_spawn_file_actions_adddup2(&actions, from, to);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    if (opt.default_sigpipe) {
      sigset_t defaults;
      sigemptyset(&defaults);
      sigaddset(&defaults, SIGPIPE);
      posix_spawnattr_setsigdefault(&attr, &defaults);
      posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    }
    const int rc = opt.search_path ? ::posix_spawnp(pid, file.c_str(), &actions, &attr, argv.data(), envp)
                                   : ::posix_spawn(pid, file.c_str(), &actions, &attr, argv.data(), envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) *pid = -1;
    return cleanup(rc);
  }
  if (opt.search_path) return cleanup(EINVAL);  // execvp is not async-signal-safe: give a path
  // fork + exec: everything the child needs is prepared above; between fork and exec only async-signal-safe
  // calls, no allocation.
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) return cleanup(errno);
  if (child == 0) {
    if (opt.gid >= 0 && (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(opt.gid)) != 0)) _exit(125);
    if (opt.uid >= 0 && ::setuid(static_cast<uid_t>(opt.uid)) != 0) _exit(125);
    if (opt.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // after setuid, which clears it
      if (::getppid() != parent) _exit(124);
    }
    for (const auto& [from, to] : moves) {
      if (::dup2(from, to) < 0) _exit(125);  // dup2 clears close-on-exec on the target
    }
    if (opt.default_sigpipe) ::signal(SIGPIPE, SIG_DFL);
    ::execve(file.c_str(), argv.data(), envp);
    _exit(127);
  }
  *pid = child;
  return cleanup(0);
}

}  // namespace detail

/// Starts a child (see SpawnOptions; pipe_stdin/pipe_stdout need a ChildProcess and are refused here with
/// EINVAL). Returns 0, or the errno of the failure. The caller must reap the child (WaitExit, StopProcess or
/// KillAndReap); a ChildProcess does that by itself.
inline int SpawnProcess(const std::vector<std::string>& args, const SpawnOptions& opt, pid_t* pid) {
  if (opt.pipe_stdin || opt.pipe_stdout) return EINVAL;
  int in = -1, out = -1;
  return detail::Spawn(args, opt, pid, &in, &out);
}

/// Starts args[0] (a path) with args and this process's environment. Returns 0, or the errno of the failure.
inline int SpawnProcess(const std::vector<std::string>& args, pid_t* pid) { return SpawnProcess(args, {}, pid); }

/// Waits for `pid` until `deadline_ns` (CLOCK_MONOTONIC; a past deadline looks once). True if it exited and
/// was reaped, or is not a child of this process; `status` then receives its wait status (-1: unknown). The
/// wait sleeps on a pidfd where the kernel has them, otherwise it looks every millisecond.
inline bool WaitExit(pid_t pid, int64_t deadline_ns, int* status = nullptr) {
  int pidfd = -1;
  bool opened = false;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
      if (pidfd >= 0) ::close(pidfd);
      if (status) *status = r == pid ? st : -1;
      return true;
    }
    const int64_t left = deadline_ns - shm::platform::MonotonicNs();
    if (left <= 0) {
      if (pidfd >= 0) ::close(pidfd);
      return false;
    }
#ifdef SYS_pidfd_open
    if (!opened) {
      opened = true;
      pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    }
#endif
    if (pidfd >= 0) {
      pollfd pfd{pidfd, POLLIN, 0};
      (void)::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left / 1'000'000 + 1, 1000)));
    } else {
      shm::platform::SleepNs(std::min<int64_t>(left, 1'000'000));
    }
  }
}

/// SIGKILL and reap (blocks until the kernel has ended it). `status` receives the wait status (-1: unknown).
inline void KillAndReap(pid_t pid, int* status = nullptr) {
  ::kill(pid, SIGKILL);
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(pid, &st, 0)) < 0 && errno == EINTR) {
  }
  if (status) *status = r == pid ? st : -1;
}

/// Ends `pid`: lets it exit by itself for `grace_ns`, then sends SIGTERM and waits `term_ns`, then kills it.
/// True if it exited by itself within the grace period (`status` then holds its wait status).
inline bool StopProcess(pid_t pid, int64_t grace_ns, int64_t term_ns, int* status = nullptr) {
  if (WaitExit(pid, shm::platform::MonotonicNs() + grace_ns, status)) return true;
  ::kill(pid, SIGTERM);
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

/// Exit code of a wait status, or 128 + signal (as a shell reports it), or -1 if unknown.
inline int ExitCode(int status) {
  if (status < 0) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// A child this object owns: its process and this process's ends of its pipes. Move-only; not thread-safe
/// (one thread at a time). The destructor kills (SIGKILL) and reaps a child still running, so that a failing
/// test or an early return leaves nothing behind, and closes the pipes.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& o) noexcept : s_(std::exchange(o.s_, State{})) {}
  /// Takes over o's child; the one this object held is killed and reaped.
  ChildProcess& operator=(ChildProcess&& o) noexcept {
    ChildProcess taken(std::move(o));
    std::swap(s_, taken.s_);  // `taken` now holds the old child and ends it
    return *this;
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Reset(); }

  /// Starts a child (a child this object held before is killed and reaped first). 0, or the errno of the
  /// failure (then !started()).
  int Start(const std::vector<std::string>& args, const SpawnOptions& opt = {}) {
    Reset();
    return detail::Spawn(args, opt, &s_.pid, &s_.in, &s_.out);
  }

  bool started() const { return s_.pid > 0; }
  /// The child's pid (kept after it was reaped, for messages; the kernel may then reuse it).
  pid_t pid() const { return s_.pid; }
  bool reaped() const { return s_.reaped; }
  /// Its wait status once reaped (-1 until then).
  int status() const { return s_.status; }

  /// Whether the child has ended (reaping it if so), without blocking. True if none was started.
  bool Exited() { return Wait(0); }

  /// Waits for the child until `deadline_ns` (CLOCK_MONOTONIC). True once it has ended and was reaped.
  bool Wait(int64_t deadline_ns) {
    if (s_.pid <= 0 || s_.reaped) return true;
    int st = -1;
    if (!WaitExit(s_.pid, deadline_ns, &st)) return false;
    Reaped(st);
    return true;
  }

  /// StopProcess on the child: true if it exited by itself within `grace_ns`.
  bool Stop(int64_t grace_ns, int64_t term_ns) {
    if (s_.pid <= 0 || s_.reaped) return true;
    int st = -1;
    const bool by_itself = StopProcess(s_.pid, grace_ns, term_ns, &st);
    Reaped(by_itself ? st : -1);
    return by_itself;
  }

  /// Sends `sig` to the child if it has not been reaped.
  void Signal(int sig) const {
    if (s_.pid > 0 && !s_.reaped) ::kill(s_.pid, sig);
  }

  /// SIGKILL the child and reap it. Idempotent.
  void Kill() {
    if (s_.pid <= 0 || s_.reaped) return;
    int st = -1;
    KillAndReap(s_.pid, &st);
    Reaped(st);
  }

  /// This process's ends of the pipes (-1 if not asked for or closed). Still owned by this object.
  int stdin_fd() const { return s_.in; }
  int stdout_fd() const { return s_.out; }
  void CloseStdin() { CloseFd(&s_.in); }
  void CloseStdout() { CloseFd(&s_.out); }

 private:
  void Reaped(int st) {
    s_.reaped = true;
    s_.status = st;
  }
  static void CloseFd(int* fd) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  void Reset() {
    Kill();
    CloseStdin();
    CloseStdout();
    s_ = State{};
  }

  struct State {
    pid_t pid = -1;
    bool reaped = false;
    int status = -1;  // wait status once reaped
    int in = -1;      // this process's end of the stdin pipe
    int out = -1;     // this process's end of the stdout pipe
  };
  State s_;
};

}  // namespace shm_tools

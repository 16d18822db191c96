// SPDX-License-Identifier: Apache-2.0
// A child process for tests: spawned with posix_spawn (a real exec), its stdin and stdout connected to
// pipes, waited for with a deadline, and killed and reaped by the destructor so that a failing test leaves
// nothing running. The process itself is a shm_tools::ChildProcess (tools/common/child_process.h); this adds
// line-wise reading and writing of its pipes.
#pragma once

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../../tools/common/child_process.h"

namespace shm_test {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

/// How a child ended.
struct ExitStatus {
  bool exited = false;  ///< It called exit (code is valid); otherwise it was killed by `signal`.
  int code = -1;
  int signal = 0;
  bool Is(int c) const { return exited && code == c; }
  std::string ToString() const {
    return exited ? "exit code " + std::to_string(code) : "killed by signal " + std::to_string(signal);
  }
};

/// How Process::Spawn connects the child's stdin and stdout.
struct SpawnOptions {
  int stdin_fd = -1;        ///< If >= 0: the child's stdin (shared by several children, e.g. a barrier).
  bool pipe_stdin = true;   ///< Otherwise a pipe this object writes to (WriteLine, CloseStdin).
  bool pipe_stdout = true;  ///< A pipe this object reads lines from; otherwise stdout is inherited.
};

class Process {
 public:
  using Options = SpawnOptions;

  Process() = default;
  Process(Process&&) noexcept = default;
  Process& operator=(Process&&) noexcept = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() = default;  // the ChildProcess kills and reaps a child still running, and closes the pipes

  /// Start args[0] with args. On failure the result is !started() and error() says why.
  static Process Spawn(const std::vector<std::string>& args, Options options = {}) {
    IgnoreSigpipe();
    Process p;
    shm_tools::SpawnOptions o;
    o.pipe_stdin = options.stdin_fd < 0 && options.pipe_stdin;
    o.pipe_stdout = options.pipe_stdout;
    if (options.stdin_fd >= 0) o.fds.push_back({options.stdin_fd, 0});
    // The test process ignores SIGPIPE (a write to a dead child must not kill it); the child must not inherit
    // that.
    o.default_sigpipe = true;
    if (const int rc = p.child_.Start(args, o); rc != 0) {
      p.error_ = "start " + (args.empty() ? std::string("(nothing)") : args[0]) + ": " + std::strerror(rc);
    }
    return p;
  }

  bool started() const { return child_.started(); }
  pid_t pid() const { return child_.pid(); }
  const std::string& error() const { return error_; }

  /// Write `line` and a newline to the child's stdin. false if the child no longer reads it.
  bool WriteLine(const std::string& line) {
    const int in = child_.stdin_fd();
    if (in < 0) return false;
    const std::string s = line + "\n";
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(in, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  /// Close the child's stdin (it reads end of file).
  void CloseStdin() { child_.CloseStdin(); }

  /// The next line of the child's stdout, without its newline; nullopt at the deadline or end of file. A zero
  /// timeout returns a line only if one is already there.
  std::optional<std::string> ReadLine(Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const size_t nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        transcript_ += line + "\n";
        return line;
      }
      const int out = child_.stdout_fd();
      if (out < 0) return std::nullopt;
      // At or past the deadline, one last look at what is already there (a zero timeout polls without waiting).
      const auto left =
          std::max<long long>(0, std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count());
      pollfd pfd{out, POLLIN, 0};
      const int r = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (r < 0 && errno != EINTR) return std::nullopt;
      if (r == 0 && left == 0) return std::nullopt;
      if (r <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // end of file: the child closed stdout (usually it exited)
        child_.CloseStdout();
        continue;
      }
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  /// Read lines until one starts with `prefix`; returns it, or nullopt at the deadline or end of file. Lines
  /// skipped on the way stay in transcript().
  std::optional<std::string> WaitForLine(const std::string& prefix, Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      auto line = ReadLine(deadline - Clock::now());
      if (!line) return std::nullopt;
      if (line->compare(0, prefix.size(), prefix) == 0) return line;
    }
  }

  /// Every stdout line read so far, for failure messages.
  const std::string& transcript() const { return transcript_; }

  /// Whether the child has exited (reaping it if so), without blocking.
  bool Exited() { return child_.Exited(); }

  /// Wait for the child to exit, at most `timeout`. nullopt if it is still running then.
  std::optional<ExitStatus> Wait(Clock::duration timeout) {
    if (!child_.started()) return std::nullopt;
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
    if (!child_.Wait(shm::platform::MonotonicNs() + std::max<int64_t>(ns, 0))) return std::nullopt;
    const int st = child_.status();
    ExitStatus e;
    e.exited = st >= 0 && WIFEXITED(st);
    e.code = e.exited ? WEXITSTATUS(st) : -1;
    e.signal = st >= 0 && WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    return e;
  }

  /// Send a signal (if the child has not been reaped).
  void Signal(int sig) { child_.Signal(sig); }

  /// SIGKILL the child and reap it. Idempotent.
  void Kill() { child_.Kill(); }

 private:
  static void IgnoreSigpipe() {
    static const bool once = [] {
      ::signal(SIGPIPE, SIG_IGN);
      return true;
    }();
    (void)once;
  }

  shm_tools::ChildProcess child_;
  std::string buffer_;
  std::string transcript_;
  std::string error_;
};

}  // namespace shm_test

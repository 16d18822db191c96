// SPDX-License-Identifier: Apache-2.0
// A child process for tests: spawned with posix_spawn (a real exec), its stdin and stdout connected to
// pipes, waited for with a deadline, and killed and reaped by the destructor so that a failing test leaves
// nothing running.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

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
  Process(Process&& o) noexcept { *this = std::move(o); }
  Process& operator=(Process&& o) noexcept {
    if (this != &o) {
      Kill();
      CloseFds();
      pid_ = std::exchange(o.pid_, -1);
      reaped_ = std::exchange(o.reaped_, false);
      status_ = o.status_;
      in_ = std::exchange(o.in_, -1);
      out_ = std::exchange(o.out_, -1);
      buffer_ = std::move(o.buffer_);
      transcript_ = std::move(o.transcript_);
      error_ = std::move(o.error_);
    }
    return *this;
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    Kill();
    CloseFds();
  }

  /// Start args[0] with args. On failure the result is !started() and error() says why.
  static Process Spawn(const std::vector<std::string>& args, Options options = {}) {
    IgnoreSigpipe();
    Process p;
    int in[2] = {-1, -1}, out[2] = {-1, -1};
    if (options.stdin_fd < 0 && options.pipe_stdin && ::pipe2(in, O_CLOEXEC) != 0) return p.Failed("pipe2");
    if (options.pipe_stdout && ::pipe2(out, O_CLOEXEC) != 0) {
      CloseBoth(in);
      return p.Failed("pipe2");
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const int child_in = options.stdin_fd >= 0 ? options.stdin_fd : in[0];
    if (child_in >= 0) posix_spawn_file_actions_adddup2(&actions, child_in, 0);
    if (out[1] >= 0) posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    // The test process ignores SIGPIPE (a write to a dead child must not kill it); the child must not inherit
    // that.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (in[0] >= 0) ::close(in[0]);
    if (out[1] >= 0) ::close(out[1]);
    if (rc != 0) {
      if (in[1] >= 0) ::close(in[1]);
      if (out[0] >= 0) ::close(out[0]);
      p.error_ = "posix_spawn " + args[0] + ": " + std::strerror(rc);
      return p;
    }
    p.pid_ = pid;
    p.in_ = in[1];
    p.out_ = out[0];
    return p;
  }

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& error() const { return error_; }

  /// Write `line` and a newline to the child's stdin. false if the child no longer reads it.
  bool WriteLine(const std::string& line) {
    if (in_ < 0) return false;
    const std::string s = line + "\n";
    size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(in_, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  /// Close the child's stdin (it reads end of file).
  void CloseStdin() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
  }

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
      if (out_ < 0) return std::nullopt;
      // At or past the deadline, one last look at what is already there (a zero timeout polls without waiting).
      const auto left =
          std::max<long long>(0, std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count());
      pollfd pfd{out_, POLLIN, 0};
      const int r = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (r < 0 && errno != EINTR) return std::nullopt;
      if (r == 0 && left == 0) return std::nullopt;
      if (r <= 0) continue;
      char chunk[4096];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // end of file: the child closed stdout (usually it exited)
        ::close(out_);
        out_ = -1;
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
  bool Exited() {
    if (reaped_ || pid_ <= 0) return true;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) Record(st);
    return reaped_;
  }

  /// Wait for the child to exit, at most `timeout`. nullopt if it is still running then.
  std::optional<ExitStatus> Wait(Clock::duration timeout) {
    if (pid_ <= 0) return std::nullopt;
    if (reaped_) return status_;
    const auto deadline = Clock::now() + timeout;
    // A pidfd becomes readable when the child exits: a wait with a deadline and no polling.
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    for (;;) {
      if (Exited()) break;
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      if (pidfd >= 0) {
        pollfd pfd{pidfd, POLLIN, 0};
        (void)::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
      } else {
        timespec ts{0, 2000000};  // no pidfd (old kernel): re-check every 2 ms
        ::nanosleep(&ts, nullptr);
      }
    }
    if (pidfd >= 0) ::close(pidfd);
    if (!reaped_) return std::nullopt;
    return status_;
  }

  /// Send a signal (if the child has not been reaped).
  void Signal(int sig) {
    if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
  }

  /// SIGKILL the child and reap it. Idempotent.
  void Kill() {
    if (pid_ <= 0 || reaped_) return;
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    Record(st);
  }

 private:
  static void IgnoreSigpipe() {
    static const bool once = [] {
      ::signal(SIGPIPE, SIG_IGN);
      return true;
    }();
    (void)once;
  }
  static void CloseBoth(int fds[2]) {
    for (int i = 0; i < 2; ++i) {
      if (fds[i] >= 0) ::close(fds[i]);
    }
  }
  Process Failed(const char* what) {
    error_ = std::string(what) + ": " + std::strerror(errno);
    return std::move(*this);
  }
  void Record(int st) {
    reaped_ = true;
    status_.exited = WIFEXITED(st);
    status_.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    status_.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  }
  void CloseFds() {
    CloseStdin();
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  ExitStatus status_;
  int in_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::string transcript_;
  std::string error_;
};

}  // namespace shm_test

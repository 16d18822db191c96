// SPDX-License-Identifier: Apache-2.0
// Child processes on Windows: the CreateProcessW form of child_process_posix.h, with the same names where they
// apply. A child starts in a job that kills it when this process ends (die_with_parent is always on), with
// optional stdin/stdout pipes; it is waited for with a deadline, killed with TerminateProcess, and its exit
// reported as a POSIX-style wait status (exit code c as c << 8) so that callers read it the same way.
//
// Thread safety: a ChildProcess is used by one thread at a time. Starting children from several threads at
// once is safe: the window in which this process's pipe ends are inheritable is serialised, so one child never
// inherits another's pipe.
#pragma once

#include <shm/platform/platform.h>
#include <windows.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace shm_tools {

/// How to start a child (the fields of the POSIX SpawnOptions that apply on Windows).
struct SpawnOptions {
  std::string path;             ///< The file to run, if not args[0].
  bool pipe_stdin = false;      ///< The child's stdin is a pipe: ChildProcess::stdin_handle() writes to it.
  bool pipe_stdout = false;     ///< The child's stdout is a pipe: ChildProcess::stdout_handle() reads it.
  bool die_with_parent = true;  ///< The child is killed when this process ends (a job object).
};

namespace detail {

inline std::wstring WidenArg(const std::string& s) {
  if (s.empty()) return std::wstring();
  const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
  std::wstring w(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), w.data(), n);
  return w;
}

// One argument quoted the way the C runtime's command-line parser splits it back.
inline void AppendQuoted(std::wstring* cmd, const std::wstring& arg) {
  if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring::npos) {
    *cmd += arg;
    return;
  }
  cmd->push_back(L'"');
  for (size_t i = 0;; ++i) {
    size_t backslashes = 0;
    while (i < arg.size() && arg[i] == L'\\') {
      ++i;
      ++backslashes;
    }
    if (i == arg.size()) {
      cmd->append(backslashes * 2, L'\\');
      break;
    }
    if (arg[i] == L'"') {
      cmd->append(backslashes * 2 + 1, L'\\');
    } else {
      cmd->append(backslashes, L'\\');
    }
    cmd->push_back(arg[i]);
  }
  cmd->push_back(L'"');
}

inline std::mutex& InheritLock() {
  static std::mutex m;
  return m;
}

// The job every child joins: closed (and so every child killed) when this process ends.
inline HANDLE KillOnCloseJob() {
  static HANDLE job = [] {
    HANDLE j = CreateJobObjectW(nullptr, nullptr);
    if (j != nullptr) {
      JOBOBJECT_EXTENDED_LIMIT_INFORMATION info{};
      info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
      SetInformationJobObject(j, JobObjectExtendedLimitInformation, &info, sizeof info);
    }
    return j;
  }();
  return job;
}

}  // namespace detail

/// A POSIX-style description of wait status `status` (-1: not ended in time and killed).
inline std::string DescribeExit(int status) {
  if (status == -1) return "did not exit in time and was killed";
  return "exited with status " + std::to_string((status >> 8) & 0xFF) + " (exit code " +
         std::to_string(static_cast<unsigned>(status) >> 8) + ")";
}

/// The exit code of wait status `status`, or -1.
inline int ExitCode(int status) { return status < 0 ? -1 : static_cast<int>(static_cast<unsigned>(status) >> 8); }

/// One child process. Move-only; a child still running when it is destroyed is killed and waited for.
class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(ChildProcess&& o) noexcept : s_(std::exchange(o.s_, State{})) {}
  ChildProcess& operator=(ChildProcess&& o) noexcept {
    if (this != &o) {
      Reset();
      s_ = std::exchange(o.s_, State{});
    }
    return *this;
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { Reset(); }

  /// Start args[0] (or opt.path) with args. 0, or the Windows error of the failure.
  int Start(const std::vector<std::string>& args, const SpawnOptions& opt = {}) {
    Reset();
    if (args.empty() && opt.path.empty()) return ERROR_INVALID_PARAMETER;
    const std::wstring file = detail::WidenArg(opt.path.empty() ? args[0] : opt.path);
    std::wstring cmd;
    for (size_t i = 0; i < args.size(); ++i) {
      if (i > 0) cmd.push_back(L' ');
      detail::AppendQuoted(&cmd, detail::WidenArg(args[i]));
    }
    SECURITY_ATTRIBUTES inherit{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
    HANDLE child_in = nullptr, child_out = nullptr, mine_in = nullptr, mine_out = nullptr;
    std::lock_guard<std::mutex> lock(detail::InheritLock());
    auto fail = [&](DWORD err) {
      for (HANDLE h : {child_in, child_out, mine_in, mine_out}) {
        if (h != nullptr) CloseHandle(h);
      }
      return static_cast<int>(err);
    };
    if (opt.pipe_stdin) {
      if (!CreatePipe(&child_in, &mine_in, &inherit, 0)) return fail(GetLastError());
      SetHandleInformation(mine_in, HANDLE_FLAG_INHERIT, 0);
    }
    if (opt.pipe_stdout) {
      if (!CreatePipe(&mine_out, &child_out, &inherit, 0)) return fail(GetLastError());
      SetHandleInformation(mine_out, HANDLE_FLAG_INHERIT, 0);
    }
    STARTUPINFOW si{};
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = child_in != nullptr ? child_in : GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = child_out != nullptr ? child_out : GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    PROCESS_INFORMATION pi{};
    std::vector<wchar_t> line(cmd.begin(), cmd.end());
    line.push_back(L'\0');
    if (!CreateProcessW(file.c_str(), line.data(), nullptr, nullptr, TRUE, CREATE_SUSPENDED, nullptr, nullptr, &si,
                        &pi)) {
      return fail(GetLastError());
    }
    if (opt.die_with_parent && detail::KillOnCloseJob() != nullptr) {
      AssignProcessToJobObject(detail::KillOnCloseJob(), pi.hProcess);
    }
    ResumeThread(pi.hThread);
    CloseHandle(pi.hThread);
    if (child_in != nullptr) CloseHandle(child_in);
    if (child_out != nullptr) CloseHandle(child_out);
    s_.process = pi.hProcess;
    s_.pid = pi.dwProcessId;
    s_.in = mine_in;
    s_.out = mine_out;
    return 0;
  }

  bool started() const { return s_.process != nullptr; }
  DWORD pid() const { return s_.pid; }
  HANDLE process() const { return s_.process; }
  bool reaped() const { return s_.reaped; }
  int status() const { return s_.status; }

  /// Whether it has ended (without waiting).
  bool Exited() { return Wait(0); }
  /// Wait until it ends or MonotonicNs() reaches `deadline_ns`. true once it has ended (status() is set).
  bool Wait(int64_t deadline_ns) {
    if (s_.reaped) return true;
    if (s_.process == nullptr) return false;
    const int64_t left = deadline_ns - shm::platform::MonotonicNs();
    const DWORD ms = left <= 0                     ? 0
                     : left / 1000000 > 0x7FFFFFFE ? 0x7FFFFFFEu
                                                   : static_cast<DWORD>((left + 999999) / 1000000);
    if (WaitForSingleObject(s_.process, ms) != WAIT_OBJECT_0) return false;
    DWORD code = 0;
    GetExitCodeProcess(s_.process, &code);
    s_.status = static_cast<int>(code << 8);
    s_.reaped = true;
    return true;
  }
  /// TerminateProcess (exit code 9, as SIGKILL's number) and wait for the end.
  void Kill() {
    if (s_.process == nullptr || s_.reaped) return;
    TerminateProcess(s_.process, 9);
    WaitForSingleObject(s_.process, INFINITE);
    (void)Wait(0);
  }

  HANDLE stdin_handle() const { return s_.in; }
  HANDLE stdout_handle() const { return s_.out; }
  void CloseStdin() { CloseOne(&s_.in); }
  void CloseStdout() { CloseOne(&s_.out); }

 private:
  struct State {
    HANDLE process = nullptr;
    DWORD pid = 0;
    HANDLE in = nullptr;
    HANDLE out = nullptr;
    bool reaped = false;
    int status = -1;
  };
  static void CloseOne(HANDLE* h) {
    if (*h != nullptr) CloseHandle(*h);
    *h = nullptr;
  }
  void Reset() {
    if (s_.process != nullptr) {
      if (!s_.reaped) Kill();
      CloseHandle(s_.process);
    }
    CloseOne(&s_.in);
    CloseOne(&s_.out);
    s_ = State{};
  }
  State s_;
};

/// Read the next line (without its newline) from pipe `h`, keeping what follows in `*buffer`; nullopt at the
/// deadline (MonotonicNs) or at end of file.
inline std::optional<std::string> ReadLine(HANDLE h, std::string* buffer, int64_t deadline_ns) {
  for (;;) {
    const size_t nl = buffer->find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer->substr(0, nl);
      buffer->erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (h == nullptr) return std::nullopt;
    DWORD avail = 0;
    if (!PeekNamedPipe(h, nullptr, 0, nullptr, &avail, nullptr)) return std::nullopt;  // end of file
    if (avail == 0) {
      if (shm::platform::MonotonicNs() >= deadline_ns) return std::nullopt;
      Sleep(1);  // anonymous pipes cannot be waited on: look again, until the deadline
      continue;
    }
    char chunk[4096];
    DWORD n = 0;
    if (!ReadFile(h, chunk, avail < sizeof chunk ? avail : sizeof chunk, &n, nullptr) || n == 0) return std::nullopt;
    buffer->append(chunk, n);
  }
}

}  // namespace shm_tools

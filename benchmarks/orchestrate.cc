// SPDX-License-Identifier: Apache-2.0
// shm-bench: one case run in fresh processes (fork + exec of this binary with --child, or the Go guest),
// and its result line parsed.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

RunResult ParseResult(const std::string& line) {
  RunResult r;
  if (line.empty()) {
    r.err = "the caller reported nothing";
    return r;
  }
  std::istringstream in(line);
  std::string tok;
  while (in >> tok) {
    const size_t eq = tok.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = tok.substr(0, eq);
    if (k == "err" || k == "facts") {  // the rest of the line
      std::string rest;
      std::getline(in, rest);
      (k == "err" ? r.err : r.facts) = tok.substr(eq + 1) + rest;
      break;
    }
    if (k == "ok") {
      r.ok = tok.substr(eq + 1) == "1";
    } else {
      r.v[k] = std::atof(tok.c_str() + eq + 1);
    }
  }
  return r;
}

/// fork + exec of this binary, or of `exe` if given. `fds` maps inherited descriptors to fixed numbers in the
/// child.
pid_t Spawn(const std::vector<std::string>& args, const std::vector<std::pair<int, int>>& fds, bool quiet_stdout,
            const std::string& exe) {
  shm_tools::SpawnOptions o;
  o.path = exe.empty() ? "/proc/self/exe" : exe;
  o.fds = fds;
  const int null = quiet_stdout ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
  if (null >= 0) o.fds.push_back({null, 1});
  std::vector<std::string> argv{exe.empty() ? "shm-bench" : exe};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = -1;
  const int rc = shm_tools::SpawnProcess(argv, o, &pid);
  if (null >= 0) close(null);
  if (rc != 0) errno = rc;
  return rc == 0 ? pid : -1;
}

/// End a server: let it exit on its own for `grace_ns`, then SIGTERM, then SIGKILL.
Ended Reap(pid_t pid, int64_t grace_ns) {
  Ended e;
  if (pid <= 0) return e;
  e.by_itself = shm_tools::StopProcess(pid, grace_ns, 3'000'000'000, &e.status);
  return e;
}

/// Why a Go guest that should have exited 0 on the host's shutdown did not (empty if it did).
std::string GoGuestFailure(const Ended& e) {
  if (!e.by_itself) return "the Go guest did not exit after the host's shutdown";
  if (e.status == -1 || (WIFEXITED(e.status) && WEXITSTATUS(e.status) == 0)) return "";
  if (WIFSIGNALED(e.status)) return "the Go guest was killed by signal " + std::to_string(WTERMSIG(e.status));
  return "the Go guest exited with status " + std::to_string(WEXITSTATUS(e.status));
}

/// The start of what a child wrote to `fd` (a memfd), on one line: an error message, or a Go panic's first
/// lines (its message, then the stacks).
std::string Head(int fd, size_t max_chars) {
  std::string s(max_chars + 1, '\0');
  const ssize_t n = pread(fd, &s[0], s.size(), 0);
  s.resize(n > 0 ? static_cast<size_t>(n) : 0);
  for (char& ch : s) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

/// Read the caller's result line until EOF or the deadline.
std::string ReadLine(int fd, int64_t deadline_ns) {
  std::string s;
  char buf[4096];
  for (;;) {
    const int64_t left_ms = (deadline_ns - shm::platform::MonotonicNs()) / 1'000'000;
    if (left_ms <= 0) return s;
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

int g_case_counter = 0;

RunResult RunCase(const Case& c, const Settings& st) {
  const std::string name = "shm-bench-" + std::to_string(getpid()) + "-" + std::to_string(++g_case_counter);
  int caller_send = -1, caller_recv = -1, server_send = -1, server_recv = -1;
  std::vector<int> to_close;
  auto fail = [&](const std::string& what) {
    for (int fd : to_close) close(fd);
    RunResult r;
    r.err = what + ": " + strerror(errno);
    return r;
  };
  if (bench::IsMemfdFloor(c.transport)) {
    int fd = memfd_create("shm-bench-floor", MFD_CLOEXEC);
    if (fd < 0) return fail("memfd_create");
    to_close.push_back(fd);
    if (ftruncate(fd, static_cast<off_t>(bench::FloorSegmentBytes(c.transport, c.payload, c.capacity))) != 0) {
      return fail("ftruncate");
    }
    caller_send = caller_recv = server_send = server_recv = fd;
  } else if (c.transport == "uds-seqpacket" || c.transport == "uds-stream") {
    int sv[2];
    const int type = (c.transport == "uds-seqpacket" ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC;
    if (socketpair(AF_UNIX, type, 0, sv) != 0) return fail("socketpair");
    to_close = {sv[0], sv[1]};
    caller_send = caller_recv = sv[0];
    server_send = server_recv = sv[1];
  } else if (c.transport == "pipe") {
    int up[2], down[2];
    if (pipe2(up, O_CLOEXEC) != 0) return fail("pipe2");
    if (pipe2(down, O_CLOEXEC) != 0) {
      close(up[0]);
      close(up[1]);
      return fail("pipe2");
    }
    to_close = {up[0], up[1], down[0], down[1]};
    caller_send = up[1];
    server_recv = up[0];
    server_send = down[1];
    caller_recv = down[0];
  }
  auto child_args = [&](const char* role, int peer) {
    char secs[32], warm[32], idle[32];
    snprintf(secs, sizeof secs, "%g", st.seconds);
    snprintf(warm, sizeof warm, "%g", st.warmup);
    snprintf(idle, sizeof idle, "%g", st.idle_seconds);
    return std::vector<std::string>{
        "--child", std::string("role=") + role, "transport=" + c.transport, "mode=" + c.mode, "name=" + name,
        "payload=" + std::to_string(c.payload), "threads=" + std::to_string(c.threads), std::string("seconds=") + secs,
        std::string("warmup=") + warm, "samples=" + std::to_string(st.samples), std::string("idle=") + idle,
        "peer=" + std::to_string(peer), "capacity=" + std::to_string(c.capacity),
        // Large messages: at least 5 measured round trips (a 256 MiB one can
        // outlast the window), except in the smoke run.
        "min_calls=" + std::to_string(bench::IsLargeMode(c.mode) && !st.quick ? 5 : 1), "fd_send=10", "fd_recv=11",
        "result_fd=3"};
  };
  pid_t hog = 0;
  if (c.group == "contended") hog = Spawn({"--child", "role=hog"}, {}, true);
  pid_t server = 0;
  // The Go guest's stderr goes to a memfd, so that its message can become the case's error.
  int go_stderr = -1;
  if (IsGoGuest(c.transport)) {
    go_stderr = memfd_create("shm-bench-go-stderr", MFD_CLOEXEC);
    if (go_stderr < 0) return fail("memfd_create");
    std::vector<std::string> args;
    if (c.mode == "bulk") args.push_back("--bulk");
    if (bench::IsLargeMode(c.mode)) {
      args.push_back("--" + c.mode);  // --large-req, --large-resp, --large-both
      args.push_back("--size=" + std::to_string(c.payload));
    }
    args.push_back(name);
    server = Spawn(args, {{go_stderr, 2}}, true, st.go_guest);
    if (server < 0) {
      const int err = errno;
      close(go_stderr);
      errno = err;
      return fail("start the Go guest " + st.go_guest);
    }
  } else if (c.transport != "memcpy") {
    std::vector<std::pair<int, int>> fds;
    if (server_send >= 0) fds = {{server_send, 10}, {server_recv, 11}};
    server = Spawn(child_args("server", 0), fds, true);
    if (server < 0) return fail("start the server");
  }
  int res[2];
  if (pipe2(res, O_CLOEXEC) != 0) {
    Reap(server, 0);
    if (go_stderr >= 0) close(go_stderr);
    return fail("pipe2");
  }
  std::vector<std::pair<int, int>> fds = {{res[1], 3}};
  if (caller_send >= 0) {
    fds.push_back({caller_send, 10});
    fds.push_back({caller_recv, 11});
  }
  pid_t caller = Spawn(child_args("caller", server), fds, true);
  close(res[1]);
  // The orchestrator holds no transport descriptor while the case runs: EOF reaches whoever waits for it.
  for (int fd : to_close) close(fd);
  // A large case measures at least 5 round trips, and a 256 MiB one on a crowded machine can take seconds.
  const double budget_s =
      (bench::IsLargeMode(c.mode) ? 180 : 30) + st.warmup + st.seconds + st.idle_seconds + st.samples * 0.005;
  const std::string line = ReadLine(res[0], shm::platform::MonotonicNs() + static_cast<int64_t>(budget_s * 1e9));
  close(res[0]);
  if (caller > 0) Reap(caller, 5'000'000'000);
  // Servers that block without a peer-gone signal (busy-polling iceoryx, boost's queues) are told by SIGTERM.
  const bool signal_stop = c.transport == "iceoryx" || c.transport == "boost-mq";
  const Ended server_end = Reap(server, signal_stop ? 0 : 3'000'000'000);
  Reap(hog, 0);
  if (c.transport == "boost-mq") bench::RemoveBoostQueues(name);
  RunResult r = ParseResult(line);
  if (!r.ok && r.err.empty()) r.err = "no result";
  if (go_stderr >= 0) {
    // The host's Shutdown ends the Go guest's Wait, and the guest then exits 0: anything else fails the case,
    // even when every answer was right. Its own message comes first: it is usually why the caller failed.
    const std::string why = GoGuestFailure(server_end);
    if (!why.empty()) {
      const std::string said = Head(go_stderr, 300);
      r.err = why + (said.empty() ? "" : " (" + said + ")") + (r.ok ? "" : "; caller: " + r.err);
      r.ok = false;
    }
    close(go_stderr);
  }
  return r;
}

RunResult ChooseFloor(const Case& c, const std::vector<Case>& cases, const std::vector<RunResult>& results) {
  const RunResult* best = nullptr;
  std::string design;
  int tried = 0;
  for (size_t i = 0; i < results.size() && i < cases.size(); ++i) {
    const Case& d = cases[i];
    if (!IsFloorDesign(d.transport) || d.group != c.group || d.payload != c.payload || d.threads != c.threads) {
      continue;
    }
    ++tried;
    const RunResult& r = results[i];
    if (!r.ok || std::isnan(r.Get("p50"))) continue;
    // The lowest p50; on a tie (the histogram's buckets are coarse) the higher throughput.
    if (!best || r.Get("p50") < best->Get("p50") ||
        (r.Get("p50") == best->Get("p50") && r.Get("rtps") > best->Get("rtps"))) {
      best = &r;
      design = d.transport;
    }
  }
  RunResult out;
  if (!best) {
    out.err = tried ? "no floor design succeeded in this run" : "no floor design was run (see --filter)";
    return out;
  }
  out = *best;
  out.design = design;
  out.facts = "fastest of " + std::to_string(tried) + " floor designs: " + design;
  return out;
}

}  // namespace orchestrator
}  // namespace bench

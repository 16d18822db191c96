// shm-bench — round trips through shm side by side with the hardware floor, Unix sockets, pipes, iceoryx and
// Boost.Interprocess, and with the Go guest in place of the C++ one. See BENCHMARKS.md for what each case
// measures and how.
//
//   shm-bench [--quick] [--runs N] [--seconds S] [--out DIR] [--filter TEXT] [--list] [--no-iceoryx]
//             [--no-go] [--go-guest PATH]
//
// The orchestrator (this process) builds the case list, starts iox-roudi when the iceoryx baseline is built,
// and runs every case --runs times, interleaved (run 1 of every case, then run 2, ...) so that drift in the
// machine's load spreads over all transports alike. Each case runs in two fresh processes (fork + exec of this
// binary with --child): the caller measures, the server answers; in the go-* cases the server is the Go guest
// program (go/cmd/shm-bench-guest) instead. It then prints markdown tables (medians over the runs, their
// spread, and each baseline's ratio to shm computed within each run) and, with --out, writes results.md,
// raw.csv (every run) and summary.csv (for plot.py).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "bench.h"

namespace bench {
int ChildMain(int argc, char** argv);
}

namespace {

using bench::SleepNs;

// ---- Cases --------------------------------------------------------------------------------------------------

struct Case {
  std::string group;      // busy | threads | sleep | idle | guestcall | bulk
  std::string transport;  // spin-floor, futex-floor, shm-copy, shm-zc, go-copy, go-zc, uds-seqpacket, ...
  std::string mode;       // busy | sleep | idle | bulk | guestcall (what the children do)
  uint64_t payload = 64;
  int threads = 1;
  std::string Id() const {
    return group + "/" + transport + "/" + std::to_string(payload) + "/t" + std::to_string(threads);
  }
};

// The Go guest that CMake built beside this binary (benchmarks/CMakeLists.txt), when `go` was found.
#ifdef SHM_BENCH_GO_GUEST
constexpr const char* kGoGuestBuilt = SHM_BENCH_GO_GUEST;
#else
constexpr const char* kGoGuestBuilt = "";
#endif

struct Settings {
  bool quick = false;
  int runs = 5;
  double seconds = 0.5;
  double warmup = 0.1;
  int samples = 1000;
  double idle_seconds = 5;
  std::string out;
  std::string filter;
  bool list = false;
  bool iceoryx = true;
  bool go = true;
  std::string go_guest = kGoGuestBuilt;  // the Go guest program; empty: not built
};

const std::vector<uint64_t> kPayloads = {0, 64, 1024, 16384, 1u << 20};

/// "N cores": the CPUs this process may run on, for headings that say how crowded a case is.
std::string CoresText() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return std::to_string(n > 0 ? n : 1) + (n == 1 ? " core" : " cores");
}

/// go-copy and go-zc: the shm host caller of shm-copy and shm-zc, served by the Go guest instead of the C++ one.
bool IsGoGuest(const std::string& transport) { return transport.rfind("go-", 0) == 0; }

std::vector<Case> AllCases(bool with_iceoryx, bool with_boost, bool with_go) {
  std::vector<Case> cs;
  std::vector<std::string> busy = {"spin-floor", "futex-floor", "shm-copy", "shm-zc", "uds-seqpacket",
                                   "uds-stream", "pipe"};
  if (with_iceoryx) busy.push_back("iceoryx");
  if (with_boost) busy.push_back("boost-mq");
  for (uint64_t p : kPayloads) {
    for (const auto& t : busy) {
      cs.push_back({"busy", t, "busy", p, 1});
      // Next to the C++ guest they are compared with. 1 MiB echo adds nothing that the bulk case does not show.
      if (with_go && t == "shm-zc" && p < (1u << 20)) {
        for (const char* g : {"go-copy", "go-zc"}) cs.push_back({"busy", g, "busy", p, 1});
      }
    }
  }
  for (const char* t : {"shm-copy", "shm-zc"}) {
    for (int n : {1, 2, 4}) cs.push_back({"threads", t, "busy", 64, n});
  }
  for (const char* t : {"futex-floor", "shm-copy", "shm-zc", "go-copy", "go-zc", "uds-seqpacket", "pipe"}) {
    if (with_go || !IsGoGuest(t)) cs.push_back({"sleep", t, "sleep", 64, 1});
  }
  // One CPU-bound process competes with the pair for the machine's cores: what a busy machine does to each transport.
  for (const char* t : {"spin-floor", "futex-floor", "shm-copy", "shm-zc", "uds-seqpacket"}) {
    cs.push_back({"contended", t, "busy", 64, 1});
  }
  cs.push_back({"idle", "shm-copy", "idle", 64, 1});
  for (const char* t : {"shm-copy", "shm-zc"}) cs.push_back({"guestcall", t, "guestcall", 64, 1});
  for (const char* t : {"memcpy", "spin-floor", "shm-copy", "shm-zc", "go-zc"}) {
    if (with_go || !IsGoGuest(t)) cs.push_back({"bulk", t, "bulk", 1u << 20, 1});
  }
  return cs;
}

// ---- Results ------------------------------------------------------------------------------------------------

struct RunResult {
  bool ok = false;
  std::string err;
  std::map<std::string, double> v;  // count, secs, rtps, p50, p90, p99, p999, min, max, mean, wall, *_cpu, *_cs
  std::string facts;
  double Get(const std::string& k) const {
    auto it = v.find(k);
    return it == v.end() ? NAN : it->second;
  }
};

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

// ---- Processes ----------------------------------------------------------------------------------------------

/// fork + exec of this binary, or of `exe` if given. `fds` maps inherited descriptors to fixed numbers in the
/// child.
pid_t Spawn(const std::vector<std::string>& args, const std::vector<std::pair<int, int>>& fds, bool quiet_stdout,
            const std::string& exe = "") {
  pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: first move every source out of the way, then place it, so sources and targets cannot collide.
  std::vector<std::pair<int, int>> moved;
  for (const auto& [from, to] : fds) moved.push_back({fcntl(from, F_DUPFD_CLOEXEC, 100), to});
  for (const auto& [from, to] : moved) dup2(from, to);  // dup2 clears close-on-exec on the target
  if (quiet_stdout) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
  }
  std::vector<char*> argv;
  static char self[] = "shm-bench";
  argv.push_back(exe.empty() ? self : const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(exe.empty() ? "/proc/self/exe" : exe.c_str(), argv.data());
  _exit(127);
}

/// Wait for `pid` until `deadline_ns`; true if it exited. `status` receives its wait status (-1: unknown).
bool WaitExit(pid_t pid, int64_t deadline_ns, int* status = nullptr) {
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno == ECHILD)) {
      if (status) *status = r == pid ? st : -1;
      return true;
    }
    if (shm::platform::MonotonicNs() >= deadline_ns) return false;
    SleepNs(2'000'000);
  }
}

/// How a reaped process ended: on its own within the grace period (with its wait status, -1 if unknown), or not.
struct Ended {
  bool by_itself = false;
  int status = -1;
};

/// End a server: let it exit on its own for `grace_ns`, then SIGTERM, then SIGKILL.
Ended Reap(pid_t pid, int64_t grace_ns) {
  Ended e;
  if (pid <= 0) return e;
  if (WaitExit(pid, shm::platform::MonotonicNs() + grace_ns, &e.status)) {
    e.by_itself = true;
    return e;
  }
  kill(pid, SIGTERM);
  if (WaitExit(pid, shm::platform::MonotonicNs() + 3'000'000'000)) return e;
  kill(pid, SIGKILL);
  WaitExit(pid, shm::platform::MonotonicNs() + 3'000'000'000);
  return e;
}

/// Why a Go guest that should have exited 0 on the host's shutdown did not (empty if it did).
std::string GoGuestFailure(const Ended& e) {
  if (!e.by_itself) return "the Go guest did not exit after the host's shutdown";
  if (e.status == -1 || (WIFEXITED(e.status) && WEXITSTATUS(e.status) == 0)) return "";
  if (WIFSIGNALED(e.status)) return "the Go guest was killed by signal " + std::to_string(WTERMSIG(e.status));
  if (WEXITSTATUS(e.status) == 127) return "the Go guest could not be started (exec failed)";
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
  if (c.transport == "spin-floor" || c.transport == "futex-floor") {
    int fd = memfd_create("shm-bench-floor", MFD_CLOEXEC);
    if (fd < 0) return fail("memfd_create");
    to_close.push_back(fd);
    if (ftruncate(fd, static_cast<off_t>(bench::FloorSegmentBytes(c.payload))) != 0) return fail("ftruncate");
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
    return std::vector<std::string>{"--child", std::string("role=") + role, "transport=" + c.transport,
                                    "mode=" + c.mode, "name=" + name, "payload=" + std::to_string(c.payload),
                                    "threads=" + std::to_string(c.threads), std::string("seconds=") + secs,
                                    std::string("warmup=") + warm, "samples=" + std::to_string(st.samples),
                                    std::string("idle=") + idle, "peer=" + std::to_string(peer),
                                    "fd_send=10", "fd_recv=11", "result_fd=3"};
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
    args.push_back(name);
    server = Spawn(args, {{go_stderr, 2}}, true, st.go_guest);
    if (server < 0) {
      close(go_stderr);
      return fail("fork");
    }
  } else if (c.transport != "memcpy") {
    std::vector<std::pair<int, int>> fds;
    if (server_send >= 0) fds = {{server_send, 10}, {server_recv, 11}};
    server = Spawn(child_args("server", 0), fds, true);
    if (server < 0) return fail("fork");
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
  const double budget_s = 30 + st.warmup + st.seconds + st.idle_seconds + st.samples * 0.005;
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

// ---- iox-roudi ----------------------------------------------------------------------------------------------

struct Roudi {
  pid_t pid = 0;
  std::string dir;
  std::string why_not;
  int64_t cpu_start_ns = 0;
};

std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Start our own iox-roudi with a config whose memory pools fit every payload of the run. Skips (why_not set)
/// when the binary is missing, another RouDi runs, or it does not become ready within 10 s.
Roudi StartRoudi() {
  Roudi r;
  char tmpl[] = "/tmp/shm-bench-roudi-XXXXXX";
  if (!mkdtemp(tmpl)) {
    r.why_not = "mkdtemp failed";
    return r;
  }
  r.dir = tmpl;
  {
    std::ofstream cfg(r.dir + "/roudi.toml");
    cfg << "[general]\nversion = 1\n\n[[segment]]\n\n";
    // Chunk sizes include iceoryx's chunk and request/response headers; 1 KiB of headroom over each payload.
    for (auto [size, count] : std::vector<std::pair<uint64_t, int>>{
             {1024, 256}, {2048, 256}, {17408, 64}, {(1u << 20) + 1024, 12}}) {
      cfg << "[[segment.mempool]]\nsize = " << size << "\ncount = " << count << "\n\n";
    }
  }
  const std::string log = r.dir + "/roudi.log";
  const char* exe = "iox-roudi";
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    const std::string cfg = r.dir + "/roudi.toml";
    execlp(exe, exe, "-c", cfg.c_str(), "-l", "info", static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) {
    r.why_not = "fork failed";
    return r;
  }
  const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
  for (;;) {
    if (ReadFile(log).find("RouDi is ready for clients") != std::string::npos) break;
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      std::string text = ReadFile(log);
      if (text.size() > 300) text = "..." + text.substr(text.size() - 300);
      for (char& ch : text) {
        if (ch == '\n') ch = ' ';
      }
      r.why_not = WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "iox-roudi is not installed"
                                                            : "iox-roudi exited: " + text;
      return r;
    }
    if (shm::platform::MonotonicNs() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      r.why_not = "iox-roudi did not become ready within 10 s";
      return r;
    }
    SleepNs(20'000'000);
  }
  r.pid = pid;
  clockid_t clk;
  timespec ts{};
  if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0) {
    r.cpu_start_ns = int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
  }
  return r;
}

/// Stop RouDi (SIGTERM, then SIGKILL) and return the CPU seconds it used while the benchmark ran.
double StopRoudi(Roudi& r) {
  double cpu = NAN;
  if (r.pid > 0) {
    clockid_t clk;
    timespec ts{};
    if (clock_getcpuclockid(r.pid, &clk) == 0 && clock_gettime(clk, &ts) == 0) {
      cpu = static_cast<double>(int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec - r.cpu_start_ns) / 1e9;
    }
    kill(r.pid, SIGTERM);
    if (!WaitExit(r.pid, shm::platform::MonotonicNs() + 10'000'000'000)) {
      kill(r.pid, SIGKILL);
      waitpid(r.pid, nullptr, 0);
    }
    r.pid = 0;
  }
  if (!r.dir.empty()) {
    unlink((r.dir + "/roudi.toml").c_str());
    unlink((r.dir + "/roudi.log").c_str());
    rmdir(r.dir.c_str());
    r.dir.clear();
  }
  return cpu;
}

// ---- Machine ------------------------------------------------------------------------------------------------

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      if (c != std::string::npos) return line.substr(c + 2);
    }
  }
  return "unknown";
}

std::string LoadAvg() {
  std::istringstream in(ReadFile("/proc/loadavg"));
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

/// Cost of one CLOCK_MONOTONIC read, as the callers use it.
double ClockReadNs() {
  const int n = 1'000'000;
  const int64_t t0 = shm::platform::MonotonicNs();
  int64_t sink = 0;
  for (int i = 0; i < n; ++i) sink += shm::platform::MonotonicNs();
  const int64_t t1 = shm::platform::MonotonicNs();
  asm volatile("" : : "r"(sink));
  return static_cast<double>(t1 - t0) / n;
}

std::string Machine() {
  utsname u{};
  uname(&u);
  char buf[512];
  snprintf(buf, sizeof buf, "%s, %ld online CPUs, Linux %s %s, clocksource %s", CpuModel().c_str(),
           sysconf(_SC_NPROCESSORS_ONLN), u.release, u.machine,
           Trim(ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")).c_str());
  return buf;
}

// ---- Statistics and formatting ------------------------------------------------------------------------------

struct Stat {
  double med = NAN, lo = NAN, hi = NAN;
  int n = 0;
};

Stat Summarize(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  Stat s;
  s.n = static_cast<int>(v.size());
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  s.med = v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  s.lo = v.front();
  s.hi = v.back();
  return s;
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// Three significant digits.
std::string Sig(double v) {
  if (std::isnan(v)) return "—";
  const double a = std::fabs(v);
  if (a >= 100) return Fmt("%.0f", v);
  if (a >= 10) return Fmt("%.1f", v);
  if (a >= 1) return Fmt("%.2f", v);
  return Fmt("%.3f", v);
}

/// A value with k/M suffix for rates.
std::string Scaled(double v, bool rate) {
  if (!rate) return Sig(v);
  if (v >= 1e6) return Sig(v / 1e6) + " M";
  if (v >= 1e3) return Sig(v / 1e3) + " k";
  return Sig(v);
}

/// The spread over the runs: "median ±x%" (x = half the range relative to the median) while the runs agree
/// within a factor of two, else "median (min–max)", which says more when one run was disturbed.
std::string Spread(const Stat& s, double scale, bool rate) {
  if (s.n == 0) return "—";
  std::string out = Scaled(s.med * scale, rate);
  if (s.n < 2 || s.med == 0) return out;
  const double half = 50 * (s.hi - s.lo) / std::fabs(s.med);
  if (half <= 100) return out + " ±" + Fmt("%.0f", half) + "%";
  return out + " (" + Scaled(s.lo * scale, rate) + "–" + Scaled(s.hi * scale, rate) + ")";
}

std::string WithSpread(const Stat& s, double scale = 1) { return Spread(s, scale, false); }
std::string Rate(const Stat& s) { return Spread(s, 1, true); }

/// "median [min–max]" for ratios.
std::string RatioCell(const Stat& s) {
  if (s.n == 0) return "—";
  std::string out = Sig(s.med) + "×";
  if (s.n > 1) out += " [" + Sig(s.lo) + "–" + Sig(s.hi) + "]";
  return out;
}

std::string PayloadName(uint64_t p) {
  if (p >= (1u << 20) && p % (1u << 20) == 0) return std::to_string(p >> 20) + " MiB";
  if (p >= 1024 && p % 1024 == 0) return std::to_string(p >> 10) + " KiB";
  return std::to_string(p) + " B";
}

class Report {
 public:
  Report(const std::vector<Case>& cases, const std::vector<std::vector<RunResult>>& runs)
      : cases_(cases), runs_(runs) {}

  const Case* Find(const std::string& group, const std::string& t, uint64_t payload, int threads = 1) const {
    for (const auto& c : cases_) {
      if (c.group == group && c.transport == t && c.payload == payload && c.threads == threads) return &c;
    }
    return nullptr;
  }
  size_t IndexOf(const Case* c) const { return static_cast<size_t>(c - cases_.data()); }

  /// A metric over the runs where the case succeeded.
  Stat Metric(const Case* c, const std::string& key, double scale = 1) const {
    if (!c) return {};
    std::vector<double> v;
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      if (r.ok) v.push_back(r.Get(key) * scale);
    }
    return Summarize(v);
  }

  /// Per-run ratio f(a) / f(b), over the runs where both succeeded.
  Stat Ratio(const Case* a, const Case* b, const std::string& key, bool invert = false) const {
    if (!a || !b) return {};
    std::vector<double> v;
    for (const auto& run : runs_) {
      const RunResult& ra = run[IndexOf(a)];
      const RunResult& rb = run[IndexOf(b)];
      if (!ra.ok || !rb.ok) continue;
      const double x = ra.Get(key), y = rb.Get(key);
      if (y == 0 || x == 0) continue;
      v.push_back(invert ? y / x : x / y);
    }
    return Summarize(v);
  }

  /// Error text if the case never succeeded (first error seen).
  std::string Failure(const Case* c) const {
    if (!c) return "not built";
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      if (r.ok) return "";
    }
    return runs_.empty() ? "not run" : runs_[0][IndexOf(c)].err;
  }

  std::string Facts(const Case* c) const {
    if (!c) return "";
    for (const auto& run : runs_) {
      if (run[IndexOf(c)].ok) return run[IndexOf(c)].facts;
    }
    return "";
  }

  std::string Cores(const Case* c, const char* who) const {
    std::vector<double> v;
    if (!c) return "—";
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      if (r.ok && r.Get("wall") > 0) v.push_back(r.Get(std::string(who) + "_cpu") / r.Get("wall"));
    }
    Stat s = Summarize(v);
    return s.n ? Fmt("%.2f", s.med) : "—";
  }

  std::string CsPerRt(const Case* c) const {
    std::vector<double> v;
    if (!c) return "—";
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      const double n = r.Get("count");
      if (r.ok && n > 0 && !std::isnan(r.Get("server_cs"))) v.push_back(r.Get("server_cs") / n);
    }
    Stat s = Summarize(v);
    return s.n ? Sig(s.med) : "—";
  }

  std::string Markdown() const {
    std::ostringstream o;
    o << "Medians over the runs; ±x% is half the range (max − min) over the runs relative to the median, or "
         "(min–max) when the runs disagree by more than that; "
         "ratios are computed within each run and shown as median [min–max]. Latencies are round-trip times in "
         "µs. CPU is in cores (CPU seconds per wall second) over the measured window; ctx sw/RT is the "
         "server's context switches per round trip (0 when it never sleeps).\n\n";
    bool go = false;
    for (const auto& c : cases_) go |= IsGoGuest(c.transport);
    if (go) {
      o << "go-copy and go-zc are shm-copy and shm-zc with the Go guest (go/cmd/shm-bench-guest, the Go package "
           "in go/) serving instead of the C++ guest: the same C++ host caller, the same requests and checks.\n\n";
    }
    Busy(o);
    Threads(o);
    Contended(o);
    Sleep(o);
    Idle(o);
    GuestCalls(o);
    Bulk(o);
    Targets(o);
    return o.str();
  }

  void Busy(std::ostringstream& o) const {
    o << "## Round trips, back to back (echo of the payload)\n\n";
    for (uint64_t p : kPayloads) {
      const Case* copy = Find("busy", "shm-copy", p);
      const Case* zc = Find("busy", "shm-zc", p);
      bool any = false;
      for (const auto& c : cases_) any |= c.group == "busy" && c.payload == p;
      if (!any) continue;
      o << "### " << PayloadName(p) << "\n\n";
      o << "| transport | round trips/s | p50 µs | p99 µs | p99.9 µs | CPU caller / server | ctx sw/RT | "
           "p50 ÷ shm-copy | p50 ÷ shm-zc |\n";
      o << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
      for (const auto& c : cases_) {
        if (c.group != "busy" || c.payload != p) continue;
        const std::string fail = Failure(&c);
        if (!fail.empty()) {
          o << "| " << c.transport << " | n/a: " << fail << " | | | | | | | |\n";
          continue;
        }
        o << "| " << c.transport << " | " << Rate(Metric(&c, "rtps")) << " | "
          << WithSpread(Metric(&c, "p50", 1e-3)) << " | " << WithSpread(Metric(&c, "p99", 1e-3)) << " | "
          << WithSpread(Metric(&c, "p999", 1e-3)) << " | " << Cores(&c, "caller") << " / " << Cores(&c, "server")
          << " | " << CsPerRt(&c) << " | " << RatioCell(Ratio(&c, copy, "p50")) << " | "
          << RatioCell(Ratio(&c, zc, "p50")) << " |\n";
      }
      o << "\n";
    }
  }

  void Threads(std::ostringstream& o) const {
    bool any = false;
    for (const auto& c : cases_) any |= c.group == "threads";
    if (!any) return;
    o << "## Host threads calling concurrently (64 B, one slot per thread, " << CoresText() << ")\n\n";
    o << "| API | threads | round trips/s | ÷ 1 thread | p50 µs | p99 µs | p99.9 µs | CPU caller / server |\n";
    o << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& c : cases_) {
      if (c.group != "threads") continue;
      const std::string fail = Failure(&c);
      if (!fail.empty()) {
        o << "| " << c.transport << " | " << c.threads << " | n/a: " << fail << " | | | | | |\n";
        continue;
      }
      const Case* one = Find("threads", c.transport, c.payload, 1);
      o << "| " << c.transport << " | " << c.threads << " | " << Rate(Metric(&c, "rtps")) << " | "
        << RatioCell(Ratio(&c, one, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3)) << " | "
        << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | "
        << Cores(&c, "caller") << " / " << Cores(&c, "server") << " |\n";
    }
    o << "\n";
  }

  void Contended(std::ostringstream& o) const {
    bool any = false;
    for (const auto& c : cases_) any |= c.group == "contended";
    if (!any) return;
    o << "## Contended: one CPU-bound process runs beside the pair (64 B, " << CoresText() << ")\n\n";
    o << "| transport | round trips/s | p50 µs | p99 µs | p99.9 µs | CPU caller / server | ctx sw/RT | "
         "p50 ÷ uncontended |\n";
    o << "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for (const auto& c : cases_) {
      if (c.group != "contended") continue;
      const std::string fail = Failure(&c);
      if (!fail.empty()) {
        o << "| " << c.transport << " | n/a: " << fail << " | | | | | | |\n";
        continue;
      }
      o << "| " << c.transport << " | " << Rate(Metric(&c, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3))
        << " | " << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | "
        << Cores(&c, "caller") << " / " << Cores(&c, "server") << " | " << CsPerRt(&c) << " | "
        << RatioCell(Ratio(&c, Find("busy", c.transport, 64), "p50")) << " |\n";
    }
    o << "\n";
  }

  void Sleep(std::ostringstream& o) const {
    bool any = false;
    for (const auto& c : cases_) any |= c.group == "sleep";
    if (!any) return;
    // The shm host's facts (its spin budget and the gap), from whichever shm host ran (--filter may leave one).
    std::string facts;
    for (const char* t : {"shm-copy", "shm-zc", "go-copy", "go-zc"}) {
      if (facts.empty()) facts = Facts(Find("sleep", t, 64));
    }
    o << "## Wake-up round trip: the server is asleep before every request (64 B)\n\n";
    o << "The caller pauses before each request for twice the larger of the host's learned spin budget and the "
         "library's budget ceiling, plus 1 ms (" << facts << "), so the server has stopped spinning "
         "and sleeps in the kernel.\n\n";
    o << "| transport | p50 µs | p99 µs | p99.9 µs | server ctx sw/RT | p50 ÷ futex-floor |\n";
    o << "|---|---:|---:|---:|---:|---:|\n";
    const Case* fl = Find("sleep", "futex-floor", 64);
    for (const auto& c : cases_) {
      if (c.group != "sleep") continue;
      const std::string fail = Failure(&c);
      if (!fail.empty()) {
        o << "| " << c.transport << " | n/a: " << fail << " | | | | |\n";
        continue;
      }
      o << "| " << c.transport << " | " << WithSpread(Metric(&c, "p50", 1e-3)) << " | "
        << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | "
        << CsPerRt(&c) << " | " << RatioCell(Ratio(&c, fl, "p50")) << " |\n";
    }
    o << "\n";
  }

  void Idle(std::ostringstream& o) const {
    const Case* c = Find("idle", "shm-copy", 64);
    if (!c) return;
    o << "## Idle CPU (no calls for the idle window, after the spin budgets expired)\n\n";
    const std::string fail = Failure(c);
    if (!fail.empty()) {
      o << "n/a: " << fail << "\n\n";
      return;
    }
    std::vector<double> g, h;
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      if (!r.ok || !(r.Get("wall") > 0)) continue;
      g.push_back(100 * r.Get("server_cpu") / r.Get("wall"));
      h.push_back(100 * r.Get("caller_cpu") / r.Get("wall"));
    }
    const Stat gs = Summarize(g), hs = Summarize(h);
    o << "| process | % of one core, median [min–max] |\n|---|---:|\n";
    o << "| guest (" << "1 worker, idle) | " << Fmt("%.3f", gs.med) << " [" << Fmt("%.3f", gs.lo) << "–"
      << Fmt("%.3f", gs.hi) << "] |\n";
    o << "| host (guest-call worker started, idle) | " << Fmt("%.3f", hs.med) << " [" << Fmt("%.3f", hs.lo) << "–"
      << Fmt("%.3f", hs.hi) << "] |\n\n";
  }

  void GuestCalls(std::ostringstream& o) const {
    bool any = false;
    for (const auto& c : cases_) any |= c.group == "guestcall";
    if (!any) return;
    o << "## Guest calls: the guest calls the host (64 B echo)\n\n";
    o << "| API | round trips/s | p50 µs | p99 µs | p99.9 µs | CPU caller / server | p50 ÷ spin-floor 64 B |\n";
    o << "|---|---:|---:|---:|---:|---:|---:|\n";
    const Case* fl = Find("busy", "spin-floor", 64);
    for (const auto& c : cases_) {
      if (c.group != "guestcall") continue;
      const std::string fail = Failure(&c);
      if (!fail.empty()) {
        o << "| " << c.transport << " | n/a: " << fail << " | | | | | |\n";
        continue;
      }
      o << "| " << c.transport << " | " << Rate(Metric(&c, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3))
        << " | " << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | "
        << Cores(&c, "caller") << " / " << Cores(&c, "server") << " | " << RatioCell(Ratio(&c, fl, "p50")) << " |\n";
    }
    o << "\n";
  }

  void Bulk(std::ostringstream& o) const {
    bool any = false;
    for (const auto& c : cases_) any |= c.group == "bulk";
    if (!any) return;
    o << "## 1 MiB request, 8-byte answer (the server reads every word)\n\n";
    o << "memcpy is one process copying 1 MiB between two buffers. The others fill the request (zero-copy: in "
         "place in the slot; copy: Send copies it in), the server sums its 64-bit words and answers the sum. "
         "Bandwidth is 1 MiB × round trips/s.\n\n";
    o << "| transport | GB/s | ÷ memcpy | p50 µs | p99 µs | CPU caller / server |\n|---|---:|---:|---:|---:|---:|\n";
    const Case* mc = Find("bulk", "memcpy", 1u << 20);
    for (const auto& c : cases_) {
      if (c.group != "bulk") continue;
      const std::string fail = Failure(&c);
      if (!fail.empty()) {
        o << "| " << c.transport << " | n/a: " << fail << " | | | | |\n";
        continue;
      }
      o << "| " << c.transport << " | " << WithSpread(Metric(&c, "rtps", static_cast<double>(c.payload) / 1e9))
        << " | " << RatioCell(Ratio(&c, mc, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3)) << " | "
        << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << Cores(&c, "caller") << " / " << Cores(&c, "server")
        << " |\n";
    }
    o << "\n";
  }

  // The performance targets (BENCHMARKS.md). Each row: the measured per-run ratio and whether the median meets the target.
  void Target(std::ostringstream& o, const std::string& what, const Stat& s, bool higher_is_better, double limit,
              const std::string& unit = "×") const {
    std::string verdict = "not measured";
    if (s.n > 0) verdict = (higher_is_better ? s.med >= limit : s.med <= limit) ? "**met**" : "**not met**";
    std::string cell = "—";
    if (s.n > 0) {
      cell = Sig(s.med) + unit;
      if (s.n > 1) cell += " [" + Sig(s.lo) + "–" + Sig(s.hi) + "]";
    }
    o << "| " << what << " | " << cell << " | " << verdict << " |\n";
  }

  Stat MinOf(const Stat& a, const Stat& b) const {
    if (a.n == 0) return b;
    if (b.n == 0) return a;
    return a.med <= b.med ? a : b;
  }

  void Targets(std::ostringstream& o) const {
    o << "## Targets\n\n";
    o << "| target | measured: median [min–max] over runs | verdict |\n|---|---:|---|\n";
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      Target(o, a + " 64 B p50 ÷ spin floor 64 B ≤ 1.2", Ratio(Find("busy", a, 64), Find("busy", "spin-floor", 64), "p50"),
             false, 1.2);
    }
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      Target(o, "(stretch) " + a + " 64 B p50 ÷ spin floor 0 B ≤ 1.5",
             Ratio(Find("busy", a, 64), Find("busy", "spin-floor", 0), "p50"), false, 1.5);
    }
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      for (uint64_t p : {uint64_t{64}, uint64_t{1024}}) {
        Target(o, "iceoryx p50 ÷ " + a + " p50 at " + PayloadName(p) + " ≥ 4",
               Ratio(Find("busy", "iceoryx", p), Find("busy", a, p), "p50"), true, 4);
      }
      for (uint64_t p : kPayloads) {
        if (p == 64 || p == 1024) continue;
        Target(o, "iceoryx p50 ÷ " + a + " p50 at " + PayloadName(p) + " > 1",
               Ratio(Find("busy", "iceoryx", p), Find("busy", a, p), "p50"), true, 1.0000001);
      }
    }
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      const Stat s = MinOf(Ratio(Find("busy", "uds-seqpacket", 64), Find("busy", a, 64), "p50"),
                           Ratio(Find("busy", "uds-stream", 64), Find("busy", a, 64), "p50"));
      Target(o, "faster Unix socket p50 ÷ " + a + " p50 at 64 B ≥ 30", s, true, 30);
    }
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      Target(o, "sleeping-guest " + a + " p50 ÷ futex floor p50 ≤ 1.3",
             Ratio(Find("sleep", a, 64), Find("sleep", "futex-floor", 64), "p50"), false, 1.3);
    }
    {
      const Case* c = Find("idle", "shm-copy", 64);
      std::vector<double> v;
      if (c) {
        for (const auto& run : runs_) {
          const RunResult& r = run[IndexOf(c)];
          if (r.ok && r.Get("wall") > 0) v.push_back(100 * r.Get("server_cpu") / r.Get("wall"));
        }
      }
      Target(o, "idle guest CPU < 1% of a core", Summarize(v), false, 0.999999, "%");
    }
    for (const char* api : {"shm-copy", "shm-zc"}) {
      const std::string a = api;
      Target(o, a + " 4 threads ÷ 1 thread throughput ≥ 0.5",
             Ratio(Find("threads", a, 64, 4), Find("threads", a, 64, 1), "rtps"), true, 0.5);
    }
    Target(o, "shm-zc 1 MiB request bandwidth ÷ memcpy ≥ 0.8",
           Ratio(Find("bulk", "shm-zc", 1u << 20), Find("bulk", "memcpy", 1u << 20), "rtps"), true, 0.8);
    o << "\nContext (no target): shm against the floor, and the Go guest against the C++ guest, doing exactly the "
         "same work in the same runs.\n\n";
    o << "| comparison | measured: median [min–max] over runs |\n|---|---:|\n";
    auto context = [&](const std::string& what, const Stat& st) {
      std::string cell = "—";
      if (st.n > 0) cell = Sig(st.med) + "×" + (st.n > 1 ? " [" + Sig(st.lo) + "–" + Sig(st.hi) + "]" : "");
      o << "| " << what << " | " << cell << " |\n";
    };
    context("spin floor 1 MiB bulk bandwidth ÷ memcpy (the hardware's limit for this target)",
            Ratio(Find("bulk", "spin-floor", 1u << 20), Find("bulk", "memcpy", 1u << 20), "rtps"));
    context("shm-zc 1 MiB bulk bandwidth ÷ spin floor bulk",
            Ratio(Find("bulk", "shm-zc", 1u << 20), Find("bulk", "spin-floor", 1u << 20), "rtps"));
    context("spin floor 64 B p50 ÷ spin floor 0 B",
            Ratio(Find("busy", "spin-floor", 64), Find("busy", "spin-floor", 0), "p50"));
    context("futex floor 64 B p50 ÷ spin floor 64 B (what one sleep per side costs here)",
            Ratio(Find("busy", "futex-floor", 64), Find("busy", "spin-floor", 64), "p50"));
    for (const char* api : {"copy", "zc"}) {
      const std::string a = api;
      context("Go guest ÷ C++ guest p50 at 64 B (go-" + a + " ÷ shm-" + a + ")",
              Ratio(Find("busy", "go-" + a, 64), Find("busy", "shm-" + a, 64), "p50"));
    }
    o << "\n";
  }

  std::string RawCsv() const {
    std::ostringstream o;
    o << "run,id,group,transport,mode,payload,threads,ok,count,secs,rtps,p50_ns,p90_ns,p99_ns,p999_ns,min_ns,max_ns,"
         "mean_ns,wall_s,caller_cpu_s,server_cpu_s,caller_cs,server_cs,error\n";
    for (size_t r = 0; r < runs_.size(); ++r) {
      for (size_t i = 0; i < cases_.size(); ++i) {
        const Case& c = cases_[i];
        const RunResult& x = runs_[r][i];
        o << r + 1 << "," << c.Id() << "," << c.group << "," << c.transport << "," << c.mode << "," << c.payload
          << "," << c.threads << "," << (x.ok ? 1 : 0);
        for (const char* k : {"count", "secs", "rtps", "p50", "p90", "p99", "p999", "min", "max", "mean", "wall",
                              "caller_cpu", "server_cpu", "caller_cs", "server_cs"}) {
          const double v = x.Get(k);
          o << ",";
          if (!std::isnan(v)) o << Fmt("%.6g", v);
        }
        std::string e = x.err;
        std::replace(e.begin(), e.end(), ',', ';');
        o << "," << e << "\n";
      }
    }
    return o.str();
  }

  std::string SummaryCsv() const {
    std::ostringstream o;
    o << "group,transport,payload,threads,runs_ok,rtps_med,rtps_min,rtps_max,p50_med,p50_min,p50_max,p99_med,p99_min,"
         "p99_max,p999_med,p999_min,p999_max\n";
    for (const auto& c : cases_) {
      o << c.group << "," << c.transport << "," << c.payload << "," << c.threads;
      const Stat r = Metric(&c, "rtps");
      o << "," << r.n;
      for (const char* k : {"rtps", "p50", "p99", "p999"}) {
        const Stat s = Metric(&c, k);
        for (double v : {s.med, s.lo, s.hi}) {
          o << ",";
          if (!std::isnan(v)) o << Fmt("%.6g", v);
        }
      }
      o << "\n";
    }
    return o.str();
  }

 private:
  const std::vector<Case>& cases_;
  const std::vector<std::vector<RunResult>>& runs_;
};

bool WriteFileText(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--child") return bench::ChildMain(argc - 2, argv + 2);
  signal(SIGPIPE, SIG_IGN);
  Settings st;
  CLI::App app{"shm-bench: round trips through shm beside the hardware floor and the alternatives, every case\n"
               "run --runs times, interleaved (see BENCHMARKS.md).",
               "shm-bench"};
  app.option_defaults()->always_capture_default();
  app.add_flag("--quick", st.quick, "One short run of every case (smoke test; numbers are not meaningful)");
  app.add_option("--runs", st.runs, "Runs of every case, interleaved")->check(CLI::Range(1, 1000));
  app.add_option("--seconds", st.seconds, "Measured window of a back-to-back case in seconds")
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--samples", st.samples, "Requests in a wake-up (sleep) case")->check(CLI::Range(1, 10'000'000));
  app.add_option("--idle", st.idle_seconds, "Idle window of the idle-CPU case in seconds")
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--out", st.out, "Write results.md, raw.csv and summary.csv into DIR")->type_name("DIR");
  app.add_option("--filter", st.filter, "Run only cases whose id (group/transport/payload/tN) contains TEXT");
  app.add_flag("--list", st.list, "Print the case ids and exit");
  app.add_flag_callback("--no-iceoryx", [&st] { st.iceoryx = false; }, "Skip the iceoryx baseline (and iox-roudi)");
  app.add_flag_callback("--no-go", [&st] { st.go = false; }, "Skip the Go guest cases (go-copy, go-zc)");
  app.add_option("--go-guest", st.go_guest,
                 std::string("The Go guest program to serve the go-* cases (default: the one built with shm-bench") +
                     (kGoGuestBuilt[0] ? ")" : ", not built here)"))
      ->type_name("PATH");
  CLI11_PARSE(app, argc, argv);
  if (st.quick) {
    st.runs = 1;
    st.seconds = 0.03;
    st.warmup = 0.02;
    st.samples = 20;
    st.idle_seconds = 0.3;
  }

  std::vector<Case> cases;
  const bool with_go = st.go && !st.go_guest.empty();
  for (const auto& c : AllCases(bench::HaveIceoryx() && st.iceoryx, bench::HaveBoost(), with_go)) {
    if (st.filter.empty() || c.Id().find(st.filter) != std::string::npos) cases.push_back(c);
  }
  if (st.list) {
    for (const auto& c : cases) printf("%s\n", c.Id().c_str());
    return 0;
  }

  printf("# shm-bench%s\n\n", st.quick ? " (quick smoke run: numbers are not meaningful)" : "");
  char date[64];
  const time_t now = time(nullptr);
  strftime(date, sizeof date, "%Y-%m-%d %H:%M %Z", localtime(&now));
  const std::string machine = Machine();
  const double clock_ns = ClockReadNs();
  printf("- date: %s\n- machine: %s\n- clock read (CLOCK_MONOTONIC): %.1f ns\n", date, machine.c_str(), clock_ns);
  printf("- runs: %d; window %.3g s per back-to-back case after %.3g s warm-up; %d wake-up samples; idle %.3g s\n",
         st.runs, st.seconds, st.warmup, st.samples, st.idle_seconds);
  printf("- load average at start: %s\n", LoadAvg().c_str());
  if (!bench::HaveIceoryx()) printf("- iceoryx: not built (find_package(iceoryx_posh) failed at configure time)\n");
  if (!bench::HaveBoost()) printf("- boost-mq: not built (Boost headers not found at configure time)\n");
  const char* const go_not_built = "not built (go not found at configure time, or SHM_BENCH_GO=OFF; --go-guest PATH)";
  if (st.go && st.go_guest.empty()) printf("- go guest: %s\n", go_not_built);
  fflush(stdout);

  // A Go guest that cannot be executed would fail every go-* case only after the caller's 10 s attach timeout:
  // skip them at once with the reason, as a missing iox-roudi skips iceoryx.
  std::string go_note;
  if (std::any_of(cases.begin(), cases.end(), [](const Case& c) { return IsGoGuest(c.transport); })) {
    if (access(st.go_guest.c_str(), X_OK) != 0) {
      go_note = "skipped: " + st.go_guest + ": " + strerror(errno);
      cases.erase(std::remove_if(cases.begin(), cases.end(), [](const Case& c) { return IsGoGuest(c.transport); }),
                  cases.end());
    } else {
      go_note = st.go_guest;
    }
    printf("- go guest: %s\n", go_note.c_str());
  }

  Roudi roudi;
  const bool want_iceoryx =
      std::any_of(cases.begin(), cases.end(), [](const Case& c) { return c.transport == "iceoryx"; });
  std::string iceoryx_note;
  if (want_iceoryx) {
    roudi = StartRoudi();
    if (roudi.pid <= 0) {
      iceoryx_note = "skipped: " + roudi.why_not;
      printf("- iceoryx: %s\n", iceoryx_note.c_str());
      StopRoudi(roudi);
      cases.erase(std::remove_if(cases.begin(), cases.end(), [](const Case& c) { return c.transport == "iceoryx"; }),
                  cases.end());
    } else {
      printf("- iceoryx: iox-roudi started by shm-bench (pid %d)\n", static_cast<int>(roudi.pid));
    }
  }
  printf("\n");
  fflush(stdout);

  std::vector<std::vector<RunResult>> runs;
  std::vector<std::string> loads;
  int failures = 0;
  for (int r = 0; r < st.runs; ++r) {
    loads.push_back(LoadAvg());
    printf("run %d/%d (load average %s)\n", r + 1, st.runs, loads.back().c_str());
    fflush(stdout);
    std::vector<RunResult> results;
    for (const auto& c : cases) {
      RunResult res = RunCase(c, st);
      if (res.ok) {
        printf("  %-36s %10.0f rt/s  p50 %9.2f us  p99 %9.2f us  p99.9 %9.2f us%s%s\n", c.Id().c_str(),
               res.Get("rtps"), res.Get("p50") / 1e3, res.Get("p99") / 1e3, res.Get("p999") / 1e3,
               res.facts.empty() ? "" : "  | ", res.facts.c_str());
      } else {
        // A baseline that cannot run is reported, not fatal; shm with either guest must work.
        if (c.transport.rfind("shm-", 0) == 0 || IsGoGuest(c.transport)) ++failures;
        printf("  %-36s n/a: %s\n", c.Id().c_str(), res.err.c_str());
      }
      fflush(stdout);
      results.push_back(std::move(res));
    }
    runs.push_back(std::move(results));
  }
  const std::string load_end = LoadAvg();
  double roudi_cpu = NAN;
  if (roudi.pid > 0) roudi_cpu = StopRoudi(roudi);

  Report report(cases, runs);
  std::ostringstream md;
  md << "# shm-bench results\n\n";
  md << "- date: " << date << "\n- machine: " << machine << "\n";
  md << "- clock read (CLOCK_MONOTONIC via vDSO, once per round trip): " << Fmt("%.1f", clock_ns) << " ns\n";
  md << "- runs: " << st.runs << " (interleaved); window " << Fmt("%g", st.seconds) << " s per back-to-back case after "
     << Fmt("%g", st.warmup) << " s warm-up; " << st.samples << " wake-up samples; idle window "
     << Fmt("%g", st.idle_seconds) << " s\n";
  md << "- load average (1/5/15 min) before each run:";
  for (const auto& l : loads) md << " [" << l << "]";
  md << "; at the end [" << load_end << "]\n";
  if (!iceoryx_note.empty()) md << "- iceoryx: " << iceoryx_note << "\n";
  if (!bench::HaveIceoryx()) md << "- iceoryx: not built (find_package(iceoryx_posh) failed)\n";
  if (!bench::HaveBoost()) md << "- boost-mq: not built (Boost headers not found)\n";
  if (!go_note.empty()) md << "- go guest: " << go_note << "\n";
  if (st.go && st.go_guest.empty()) md << "- go guest: " << go_not_built << "\n";
  if (!std::isnan(roudi_cpu)) md << "- iox-roudi used " << Fmt("%.2f", roudi_cpu) << " CPU s during the benchmark\n";
  md << "\n" << report.Markdown();
  printf("\n%s", md.str().c_str());
  if (!st.out.empty()) {
    mkdir(st.out.c_str(), 0755);
    bool ok = WriteFileText(st.out + "/results.md", md.str()) && WriteFileText(st.out + "/raw.csv", report.RawCsv()) &&
              WriteFileText(st.out + "/summary.csv", report.SummaryCsv());
    printf("%s %s/results.md, raw.csv, summary.csv\n", ok ? "wrote" : "FAILED to write", st.out.c_str());
    if (!ok) return 1;
  }
  printf("shm-bench: %zu cases x %d runs, %d shm case runs failed (Go guest included)\n", cases.size(), st.runs,
         failures);
  return failures == 0 ? 0 : 1;
}

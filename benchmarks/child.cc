// SPDX-License-Identifier: Apache-2.0
// shm-bench — the two child processes of a case: the caller (times round trips) and the server (answers).
//
// Timing: each caller thread reads CLOCK_MONOTONIC (vDSO, no system call) once per round trip and records the
// difference from its previous reading into its own preallocated LatencyHistogram (an array increment). Reading
// the clock once per round trip, not twice, keeps the overhead to one clock read (~20-40 ns, measured and printed
// by the orchestrator) and makes the histogram account for every nanosecond of the window, so throughput and
// latency agree. Sleep mode times each call alone (two reads) because the pause between calls is not part of
// it. CPU time of both processes over the window comes from CLOCK_PROCESS_CPUTIME_ID and the peer's
// clock_getcpuclockid() clock (nanosecond resolution, not the 10 ms ticks of /proc); context switches from
// /proc/<pid>/task/*/status for
// the server and getrusage(RUSAGE_SELF) for the caller.
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "bench.h"
#include "latency_histogram.h"  // tools/common: the one histogram of shm-bench and shm-demo

namespace bench {

using shm_tools::LatencyHistogram;

std::atomic<bool> g_stop{false};

namespace {

int64_t CpuNs(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return -1;
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

/// Voluntary + involuntary context switches of every thread of `pid`.
int64_t ContextSwitches(int pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = opendir(dir.c_str());
  if (!d) return -1;
  int64_t total = 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    FILE* f = fopen((dir + "/" + e->d_name + "/status").c_str(), "r");
    if (!f) continue;
    char line[256];
    while (fgets(line, sizeof line, f)) {
      long long v = 0;
      if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
          sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1) {
        total += v;
      }
    }
    fclose(f);
  }
  closedir(d);
  return total;
}

/// This process's context switches, threads that already exited included (the measuring threads have been
/// joined when the window's end is sampled).
int64_t OwnContextSwitches() {
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return int64_t{ru.ru_nvcsw} + int64_t{ru.ru_nivcsw};
}

/// CPU and context switches of both processes at one instant.
struct Sample {
  int64_t wall = 0, self_cpu = 0, peer_cpu = 0, self_cs = 0, peer_cs = 0;
};

class Accounting {
 public:
  explicit Accounting(int peer) : peer_(peer) {
    if (peer_ <= 0 || clock_getcpuclockid(peer_, &peer_clock_) != 0) peer_ = 0;
  }
  Sample Take() const {
    Sample s;
    s.wall = shm::platform::MonotonicNs();
    s.self_cpu = CpuNs(CLOCK_PROCESS_CPUTIME_ID);
    s.self_cs = OwnContextSwitches();
    if (peer_) {
      s.peer_cpu = CpuNs(peer_clock_);
      s.peer_cs = ContextSwitches(peer_);
    }
    return s;
  }
  bool has_peer() const { return peer_ != 0; }

 private:
  int peer_;
  clockid_t peer_clock_ = 0;
};

std::unique_ptr<Caller> MakeCaller(const Options& o) {
  // go-copy and go-zc: the shm host caller unchanged; only the server differs (the Go guest program, which the
  // orchestrator starts instead of this binary, so MakeServer has no go-* server).
  if (o.transport.rfind("shm-", 0) == 0 || o.transport.rfind("go-", 0) == 0) return MakeShmCaller(o);
  if (o.transport == "iceoryx") return MakeIceoryxCaller();
  if (o.transport == "boost-mq") return MakeBoostCaller();
  return MakeRawCaller(o);
}

std::unique_ptr<Server> MakeServer(const Options& o) {
  if (o.transport.rfind("shm-", 0) == 0) return MakeShmServer(o);
  if (o.transport == "iceoryx") return MakeIceoryxServer();
  if (o.transport == "boost-mq") return MakeBoostServer();
  return MakeRawServer(o);
}

void WriteResult(const Options& o, const std::string& line) {
  std::string s = line + "\n";
  const char* p = s.data();
  size_t n = s.size();
  while (n > 0) {
    ssize_t w = write(o.result_fd, p, n);
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

std::string Num(const char* key, double v) {
  char buf[96];
  snprintf(buf, sizeof buf, " %s=%.6g", key, v);
  return buf;
}

std::string Report(const LatencyHistogram& h, double secs, const Sample& a, const Sample& b, bool peer,
                   const std::string& facts) {
  std::string s = "ok=1";
  s += Num("count", static_cast<double>(h.count()));
  s += Num("secs", secs);
  s += Num("rtps", secs > 0 ? static_cast<double>(h.count()) / secs : 0);
  s += Num("p50", static_cast<double>(h.Percentile(0.50)));
  s += Num("p90", static_cast<double>(h.Percentile(0.90)));
  s += Num("p99", static_cast<double>(h.Percentile(0.99)));
  s += Num("p999", static_cast<double>(h.Percentile(0.999)));
  s += Num("min", static_cast<double>(h.min()));
  s += Num("max", static_cast<double>(h.max()));
  s += Num("mean", h.mean());
  s += Num("wall", static_cast<double>(b.wall - a.wall) / 1e9);
  s += Num("caller_cpu", static_cast<double>(b.self_cpu - a.self_cpu) / 1e9);
  s += Num("caller_cs", static_cast<double>(b.self_cs - a.self_cs));
  if (peer) {
    s += Num("server_cpu", static_cast<double>(b.peer_cpu - a.peer_cpu) / 1e9);
    s += Num("server_cs", static_cast<double>(b.peer_cs - a.peer_cs));
  }
  if (!facts.empty()) s += " facts=" + facts;  // last: may hold spaces
  return s;
}

/// busy / bulk / guestcall: every thread calls back to back; warm-up until `start`, measured until `end`.
std::string RunWindow(Caller& c, const Options& o, const Accounting& acct) {
  const int n = std::max(1, o.threads);
  std::vector<LatencyHistogram> hist(static_cast<size_t>(n));
  std::vector<int64_t> last(static_cast<size_t>(n), 0);
  std::vector<std::string> errors(static_cast<size_t>(n));
  const int64_t start = shm::platform::MonotonicNs() + static_cast<int64_t>(o.warmup * 1e9);
  const int64_t end = start + static_cast<int64_t>(o.seconds * 1e9);
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      LatencyHistogram& h = hist[static_cast<size_t>(t)];
      int64_t prev = shm::platform::MonotonicNs();
      bool measuring = false;
      for (;;) {
        if (!c.Call(t)) {
          errors[static_cast<size_t>(t)] = c.error().empty() ? "call failed" : c.error();
          return;
        }
        const int64_t now = shm::platform::MonotonicNs();
        if (measuring) {
          h.Add(static_cast<uint64_t>(now - prev));
          if (now >= end && h.count() >= static_cast<uint64_t>(o.min_calls)) break;
        } else if (now >= start) {
          measuring = true;  // the first call that ends inside the window starts the clock
        }
        prev = now;
      }
      last[static_cast<size_t>(t)] = prev;
    });
  }
  SleepNs(start - shm::platform::MonotonicNs());
  const Sample a = acct.Take();
  for (auto& th : threads) th.join();
  const Sample b = acct.Take();
  for (const auto& e : errors) {
    if (!e.empty()) return "ok=0 err=" + e;
  }
  LatencyHistogram all;
  for (const auto& h : hist) all.Merge(h);
  const int64_t finish = *std::max_element(last.begin(), last.end());
  return Report(all, static_cast<double>(finish - a.wall) / 1e9, a, b, acct.has_peer(), c.Facts());
}

/// sleep: pause long enough for the server to be asleep, then time one call.
std::string RunSleep(Caller& c, const Options& o, const Accounting& acct) {
  for (int i = 0; i < 20; ++i) {
    if (!c.Call(0)) return "ok=0 err=" + c.error();
  }
  LatencyHistogram h;
  const Sample a = acct.Take();
  for (int i = 0; i < o.samples; ++i) {
    SleepNs(c.SleepGapNs());
    const int64_t t0 = shm::platform::MonotonicNs();
    if (!c.Call(0)) return "ok=0 err=" + c.error();
    h.Add(static_cast<uint64_t>(shm::platform::MonotonicNs() - t0));
  }
  const Sample b = acct.Take();
  return Report(h, 0, a, b, acct.has_peer(), c.Facts() + " gap " + std::to_string(c.SleepGapNs() / 1000) + " us");
}

/// idle: warm up, let every spin budget expire, then measure both processes' CPU while nothing happens. One
/// call afterwards checks that the idle guest still answers (its time is the recorded sample).
std::string RunIdle(Caller& c, const Options& o, const Accounting& acct) {
  const int64_t warm_end = shm::platform::MonotonicNs() + static_cast<int64_t>(o.warmup * 1e9);
  while (shm::platform::MonotonicNs() < warm_end) {
    if (!c.Call(0)) return "ok=0 err=" + c.error();
  }
  SleepNs(200'000'000);
  const Sample a = acct.Take();
  SleepNs(static_cast<int64_t>(o.idle_seconds * 1e9));
  const Sample b = acct.Take();
  LatencyHistogram h;
  const int64_t t0 = shm::platform::MonotonicNs();
  if (!c.Call(0)) return "ok=0 err=" + c.error();
  h.Add(static_cast<uint64_t>(shm::platform::MonotonicNs() - t0));
  return Report(h, 0, a, b, acct.has_peer(), c.Facts());
}

int RunCaller(const Options& o) {
  std::unique_ptr<Caller> c = MakeCaller(o);
  if (!c) {
    WriteResult(o, "ok=0 err=transport " + o.transport + " is not built");
    return 1;
  }
  const std::string err = c->Open(o);
  if (!err.empty()) {
    c->Close();
    WriteResult(o, "ok=0 err=" + err);
    return 1;
  }
  Accounting acct(o.peer_pid);
  std::string line;
  if (o.mode == "sleep") {
    line = RunSleep(*c, o, acct);
  } else if (o.mode == "idle") {
    line = RunIdle(*c, o, acct);
  } else {
    line = RunWindow(*c, o, acct);
  }
  c->Close();
  WriteResult(o, line);
  return line.rfind("ok=1", 0) == 0 ? 0 : 1;
}

void OnTerm(int) { g_stop.store(true); }

int RunServer(const Options& o) {
  struct sigaction sa {};
  sa.sa_handler = OnTerm;
  sigaction(SIGTERM, &sa, nullptr);
  std::unique_ptr<Server> s = MakeServer(o);
  if (!s) return 3;
  return s->Run(o);
}

}  // namespace

int ChildMain(int argc, char** argv) {
  Options o;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string::npos) continue;
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    if (k == "role")
      o.role = v;
    else if (k == "transport")
      o.transport = v;
    else if (k == "mode")
      o.mode = v;
    else if (k == "name")
      o.name = v;
    else if (k == "payload")
      o.payload = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "threads")
      o.threads = std::atoi(v.c_str());
    else if (k == "seconds")
      o.seconds = std::atof(v.c_str());
    else if (k == "warmup")
      o.warmup = std::atof(v.c_str());
    else if (k == "samples")
      o.samples = std::atoi(v.c_str());
    else if (k == "idle")
      o.idle_seconds = std::atof(v.c_str());
    else if (k == "peer")
      o.peer_pid = std::atoi(v.c_str());
    else if (k == "fd_send")
      o.fd_send = std::atoi(v.c_str());
    else if (k == "fd_recv")
      o.fd_recv = std::atoi(v.c_str());
    else if (k == "result_fd")
      o.result_fd = std::atoi(v.c_str());
    else if (k == "capacity")
      o.capacity = std::strtoull(v.c_str(), nullptr, 10);
    else if (k == "min_calls")
      o.min_calls = std::atoi(v.c_str());
  }
  if (o.role == "caller") return RunCaller(o);
  if (o.role == "server") return RunServer(o);
  if (o.role == "hog") {  // competing CPU-bound work for the contended cases
    struct sigaction sa {};
    sa.sa_handler = OnTerm;
    sigaction(SIGTERM, &sa, nullptr);
    volatile uint64_t x = 0;
    while (!g_stop.load(std::memory_order_relaxed)) x = x + 1;
    return 0;
  }
  fprintf(stderr, "shm-bench: unknown child role '%s'\n", o.role.c_str());
  return 2;
}

}  // namespace bench

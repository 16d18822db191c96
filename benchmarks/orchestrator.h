// SPDX-License-Identifier: Apache-2.0
// shm-bench's orchestrator, shared by its files: the cases (cases.cc), running one case in fresh processes
// (orchestrate.cc), iox-roudi (roudi.cc), the machine's description (machine.cc), statistics over the runs
// (stats.cc), the markdown and CSV report (render.cc), the targets' verdicts (verdicts.cc) and main (main.cc).
// The child processes (child.cc) and the transports are in bench.h.
#pragma once

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

#include <CLI/CLI.hpp>
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

#include "bench.h"
#include "child_process.h"  // tools/common

namespace bench {
namespace orchestrator {

// The Go guest that CMake built beside this binary (benchmarks/CMakeLists.txt), when `go` was found.
#ifdef SHM_BENCH_GO_GUEST
constexpr const char* kGoGuestBuilt = SHM_BENCH_GO_GUEST;
#else
constexpr const char* kGoGuestBuilt = "";
#endif

/// The payload sizes of the busy cases of every transport.
inline const std::vector<uint64_t> kPayloads = {0, 64, 1024, 16384, 1u << 20};
/// The small-payload table: shm and the floor designs are also measured back to back at these sizes.
inline const std::vector<uint64_t> kSmallPayloads = {0, 8, 16, 32, 48, 64, 128};

/// The busy floor designs (floor_transports.cc). `spin-floor` is not run: in each run it is the design of this
/// list with the lowest p50 in the same group at the same payload, so every ratio to it uses the fastest
/// floor of that run.
inline const std::vector<std::string> kFloorDesigns = {"floor-2line", "floor-2line-nopause", "floor-1line",
                                                       "floor-1line-nopause"};
/// Measured beside the floor designs, never chosen as the floor: their payload lives in the control line, a
/// wire shm does not have (what carrying small payloads there could reach).
inline const std::vector<std::string> kInlineDesigns = {"floor-inline", "floor-inline-nopause"};
inline bool IsFloorDesign(const std::string& t) {
  return std::find(kFloorDesigns.begin(), kFloorDesigns.end(), t) != kFloorDesigns.end();
}
inline bool IsInlineDesign(const std::string& t) {
  return std::find(kInlineDesigns.begin(), kInlineDesigns.end(), t) != kInlineDesigns.end();
}

/// The sizes of the large-* groups (messages larger than a slot) and the slot capacities (chunk sizes) they are
/// measured with. --quick runs the first size only.
inline const std::vector<uint64_t> kLargePayloads = {1u << 20, 16u << 20, 256u << 20};
inline const std::vector<uint64_t> kLargeCapacities = {64u << 10, 1u << 20};
inline const std::vector<std::string> kLargeGroups = {"large-req", "large-resp", "large-both"};

struct Case {
  std::string group;      // busy | threads | sleep | idle | guestcall | bulk | large-req | large-resp | large-both
  std::string transport;  // floor-2line, ..., spin-floor, futex-floor, shm-copy, shm-zc, go-copy, uds-seqpacket, ...
  std::string mode;       // busy | sleep | idle | bulk | guestcall (what the children do)
  uint64_t payload = 64;
  int threads = 1;
  uint64_t capacity = 0;  // large-*: the slot capacity (the chunk size) of shm and floor-chunk; 0 elsewhere
  std::string Id() const {
    return group + "/" + transport + "/" + std::to_string(payload) + "/t" + std::to_string(threads) +
           (capacity ? "/c" + std::to_string(capacity) : "");
  }
};

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

struct RunResult {
  bool ok = false;
  std::string err;
  std::map<std::string, double> v;  // count, secs, rtps, p50, p90, p99, p999, min, max, mean, wall, *_cpu, *_cs
  std::string facts;
  std::string design;  // spin-floor: the floor design it is in this run
  double Get(const std::string& k) const {
    auto it = v.find(k);
    return it == v.end() ? NAN : it->second;
  }
};

/// How a reaped process ended: on its own within the grace period (with its wait status, -1 if unknown), or not.
struct Ended {
  bool by_itself = false;
  int status = -1;
};

struct Roudi {
  pid_t pid = 0;
  std::string dir;
  std::string why_not;
  int64_t cpu_start_ns = 0;
};

struct Stat {
  double med = NAN, lo = NAN, hi = NAN;
  int n = 0;
};

/// "N cores": the CPUs this process may run on, for headings that say how crowded a case is.
std::string CoresText();
std::vector<Case> AllCases(bool with_iceoryx, bool with_boost, bool with_go, bool quick);
RunResult ParseResult(const std::string& line);
/// fork + exec of this binary, or of `exe` if given. `fds` maps inherited descriptors to fixed numbers in the
/// child.
pid_t Spawn(const std::vector<std::string>& args, const std::vector<std::pair<int, int>>& fds, bool quiet_stdout,
            const std::string& exe = "");
/// End a server: let it exit on its own for `grace_ns`, then SIGTERM, then SIGKILL.
Ended Reap(pid_t pid, int64_t grace_ns);
/// Why a Go guest that should have exited 0 on the host's shutdown did not (empty if it did).
std::string GoGuestFailure(const Ended& e);
/// The start of what a child wrote to `fd` (a memfd), on one line: an error message, or a Go panic's first
/// lines (its message, then the stacks).
std::string Head(int fd, size_t max_chars);
/// Read the caller's result line until EOF or the deadline.
std::string ReadLine(int fd, int64_t deadline_ns);
RunResult RunCase(const Case& c, const Settings& st);
/// spin-floor in one run: the result of the floor design (kFloorDesigns) with the lowest p50 among the cases of
/// the same group, payload and threads already in `results` (the run so far; cases[i] gave results[i]).
RunResult ChooseFloor(const Case& c, const std::vector<Case>& cases, const std::vector<RunResult>& results);
std::string ReadFile(const std::string& path);
/// Start our own iox-roudi with a config whose memory pools fit every payload of the run. Skips (why_not set)
/// when the binary is missing, another RouDi runs, or it does not become ready within 10 s.
Roudi StartRoudi();
/// Stop RouDi (SIGTERM, then SIGKILL) and return the CPU seconds it used while the benchmark ran.
double StopRoudi(Roudi& r);
std::string Trim(std::string s);
std::string CpuModel();
std::string LoadAvg();
/// Cost of one CLOCK_MONOTONIC read, as the callers use it.
double ClockReadNs();
std::string Machine();
Stat Summarize(std::vector<double> v);
std::string Fmt(const char* f, double v);
/// Three significant digits.
std::string Sig(double v);
/// A value with k/M suffix for rates.
std::string Scaled(double v, bool rate);
/// The spread over the runs: "median ±x%" (x = half the range relative to the median) while the runs agree
/// within a factor of two, else "median (min–max)", which says more when one run was disturbed.
std::string Spread(const Stat& s, double scale, bool rate);
/// "median [min–max]" for ratios.
std::string RatioCell(const Stat& s);
std::string PayloadName(uint64_t p);

/// go-copy and go-zc: the shm host caller of shm-copy and shm-zc, served by the Go guest instead of the C++ one.
inline bool IsGoGuest(const std::string& transport) { return transport.rfind("go-", 0) == 0; }
inline std::string WithSpread(const Stat& s, double scale = 1) { return Spread(s, scale, false); }
inline std::string Rate(const Stat& s) { return Spread(s, 1, true); }

class Report {
 public:
  Report(const std::vector<Case>& cases, const std::vector<std::vector<RunResult>>& runs)
      : cases_(cases), runs_(runs) {}

  const Case* Find(const std::string& group, const std::string& t, uint64_t payload, int threads = 1,
                   uint64_t capacity = 0) const {
    for (const auto& c : cases_) {
      if (c.group == group && c.transport == t && c.payload == payload && c.threads == threads &&
          c.capacity == capacity) {
        return &c;
      }
    }
    return nullptr;
  }
  size_t IndexOf(const Case* c) const { return static_cast<size_t>(c - cases_.data()); }

  /// A metric over the runs where the case succeeded.
  Stat Metric(const Case* c, const std::string& key, double scale = 1) const;

  /// Per-run ratio f(a) / f(b), over the runs where both succeeded.
  Stat Ratio(const Case* a, const Case* b, const std::string& key, bool invert = false) const;

  /// Error text if the case never succeeded (first error seen).
  std::string Failure(const Case* c) const;

  std::string Facts(const Case* c) const;

  std::string Cores(const Case* c, const char* who) const;

  std::string CsPerRt(const Case* c) const;

  std::string Markdown() const;

  void Busy(std::ostringstream& o) const;

  /// shm and every floor design at kSmallPayloads: p50 and the per-run ratio to spin-floor.
  void SmallPayloads(std::ostringstream& o) const;

  /// Which design spin-floor was in each run.
  void FloorChoice(std::ostringstream& o) const;

  void Threads(std::ostringstream& o) const;

  void Contended(std::ostringstream& o) const;

  void Sleep(std::ostringstream& o) const;

  void Idle(std::ostringstream& o) const;

  void GuestCalls(std::ostringstream& o) const;

  void Bulk(std::ostringstream& o) const;

  /// The large-* groups: bandwidth and round trip per transport, size and slot capacity; shm ÷ floor-chunk.
  void Large(std::ostringstream& o) const;

  // The performance targets (BENCHMARKS.md). Each row: the measured per-run ratio and whether the median
  // meets the target.
  void Target(std::ostringstream& o, const std::string& what, const Stat& s, bool higher_is_better, double limit,
              const std::string& unit = "×") const;

  Stat MinOf(const Stat& a, const Stat& b) const;

  void Targets(std::ostringstream& o) const;

  std::string RawCsv() const;

  std::string SummaryCsv() const;

 private:
  const std::vector<Case>& cases_;
  const std::vector<std::vector<RunResult>>& runs_;
};

}  // namespace orchestrator
}  // namespace bench

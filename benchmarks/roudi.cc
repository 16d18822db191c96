// SPDX-License-Identifier: Apache-2.0
// shm-bench: our own iox-roudi for the iceoryx baseline, started and stopped around the run.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

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
    // The large-* cases go up to kIceoryxLargest (16 MiB: 4 chunks, a request and an answer in flight with room).
    for (auto [size, count] : std::vector<std::pair<uint64_t, int>>{
             {1024, 256}, {2048, 256}, {17408, 64}, {(1u << 20) + 1024, 12}, {kIceoryxLargest + 1024, 4}}) {
      cfg << "[[segment.mempool]]\nsize = " << size << "\ncount = " << count << "\n\n";
    }
  }
  const std::string log = r.dir + "/roudi.log";
  const char* exe = "iox-roudi";
  const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  shm_tools::SpawnOptions o;
  o.search_path = true;
  if (fd >= 0) o.fds = {{fd, 1}, {fd, 2}};
  pid_t pid = -1;
  const int rc = shm_tools::SpawnProcess({exe, "-c", r.dir + "/roudi.toml", "-l", "info"}, o, &pid);
  if (fd >= 0) close(fd);
  if (rc != 0) {
    r.why_not = rc == ENOENT ? "iox-roudi is not installed" : std::string("cannot start iox-roudi: ") + strerror(rc);
    return r;
  }
  const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
  for (;;) {
    if (ReadFile(log).find("RouDi is ready for clients") != std::string::npos) break;
    int st = 0;
    if (shm_tools::WaitExit(pid, 0, &st)) {
      std::string text = ReadFile(log);
      if (text.size() > 300) text = "..." + text.substr(text.size() - 300);
      for (char& ch : text) {
        if (ch == '\n') ch = ' ';
      }
      r.why_not = WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "iox-roudi is not installed" : "iox-roudi exited: " + text;
      return r;
    }
    if (shm::platform::MonotonicNs() > deadline) {
      shm_tools::KillAndReap(pid);
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
    shm_tools::StopProcess(r.pid, 0, 10'000'000'000);
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

}  // namespace orchestrator
}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// shm-bench: what the report says about the machine (CPU, load, clock source, cost of a clock read).
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

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

/// "N cores": the CPUs this process may run on, for headings that say how crowded a case is.
std::string CoresText() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return std::to_string(n > 0 ? n : 1) + (n == 1 ? " core" : " cores");
}

}  // namespace orchestrator
}  // namespace bench

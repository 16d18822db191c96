// SPDX-License-Identifier: Apache-2.0
// shm-bench: statistics over the runs (medians, spreads, per-run ratios) and the formatting of numbers.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

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

/// A metric over the runs where the case succeeded.
Stat Report::Metric(const Case* c, const std::string& key, double scale) const {
  if (!c) return {};
  std::vector<double> v;
  for (const auto& run : runs_) {
    const RunResult& r = run[IndexOf(c)];
    if (r.ok) v.push_back(r.Get(key) * scale);
  }
  return Summarize(v);
}

/// Per-run ratio f(a) / f(b), over the runs where both succeeded.
Stat Report::Ratio(const Case* a, const Case* b, const std::string& key, bool invert) const {
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
std::string Report::Failure(const Case* c) const {
  if (!c) return "not built";
  for (const auto& run : runs_) {
    const RunResult& r = run[IndexOf(c)];
    if (r.ok) return "";
  }
  return runs_.empty() ? "not run" : runs_[0][IndexOf(c)].err;
}

std::string Report::Facts(const Case* c) const {
  if (!c) return "";
  for (const auto& run : runs_) {
    if (run[IndexOf(c)].ok) return run[IndexOf(c)].facts;
  }
  return "";
}

std::string Report::Cores(const Case* c, const char* who) const {
  std::vector<double> v;
  if (!c) return "—";
  for (const auto& run : runs_) {
    const RunResult& r = run[IndexOf(c)];
    if (r.ok && r.Get("wall") > 0) v.push_back(r.Get(std::string(who) + "_cpu") / r.Get("wall"));
  }
  Stat s = Summarize(v);
  return s.n ? Fmt("%.2f", s.med) : "—";
}

std::string Report::CsPerRt(const Case* c) const {
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

}  // namespace orchestrator
}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// shm-bench: the performance targets and whether the runs met them.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

// The performance targets (BENCHMARKS.md). Each row: the measured per-run ratio and whether the median
// meets the target.
void Report::Target(std::ostringstream& o, const std::string& what, const Stat& s, bool higher_is_better, double limit,
                    const std::string& unit) const {
  std::string verdict = "not measured";
  if (s.n > 0) verdict = (higher_is_better ? s.med >= limit : s.med <= limit) ? "**met**" : "**not met**";
  std::string cell = "—";
  if (s.n > 0) {
    cell = Sig(s.med) + unit;
    if (s.n > 1) cell += " [" + Sig(s.lo) + "–" + Sig(s.hi) + "]";
  }
  o << "| " << what << " | " << cell << " | " << verdict << " |\n";
}

Stat Report::MinOf(const Stat& a, const Stat& b) const {
  if (a.n == 0) return b;
  if (b.n == 0) return a;
  return a.med <= b.med ? a : b;
}

void Report::Targets(std::ostringstream& o) const {
  o << "## Targets\n\n";
  o << "| target | measured: median [min–max] over runs | verdict |\n|---|---:|---|\n";
  for (const char* api : {"shm-copy", "shm-zc"}) {
    const std::string a = api;
    Target(o, a + " 64 B p50 ÷ spin floor 64 B ≤ 1.2",
           Ratio(Find("busy", a, 64), Find("busy", "spin-floor", 64), "p50"), false, 1.2);
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
  // Messages larger than a slot: shm (C++ guest) against the chunked floor at 16 MiB with the same slot, and
  // against the stream socket at every size (the size where the ratio is lowest).
  for (const auto& g : kLargeGroups) {
    for (uint64_t cap : kLargeCapacities) {
      const std::string slot = PayloadName(cap) + " slot";
      Target(o, g + " shm-copy 16 MiB bandwidth ÷ floor-chunk (" + slot + ") ≥ 0.8",
             Ratio(Find(g, "shm-copy", 16u << 20, 1, cap), Find(g, "floor-chunk", 16u << 20, 1, cap), "rtps"), true,
             0.8);
      Stat worst;
      std::string at;
      for (uint64_t p : kLargePayloads) {
        const Stat s = Ratio(Find(g, "shm-copy", p, 1, cap), Find(g, "uds-stream", p), "rtps");
        if (s.n > 0 && (worst.n == 0 || s.med < worst.med)) {
          worst = s;
          at = PayloadName(p);
        }
      }
      Target(o,
             g + " shm-copy (" + slot + ") bandwidth ÷ uds-stream > 1 at every size" +
                 (at.empty() ? "" : " (lowest: " + at + ")"),
             worst, true, 1.0000001);
    }
  }
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

}  // namespace orchestrator
}  // namespace bench

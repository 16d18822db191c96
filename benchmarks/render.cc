// SPDX-License-Identifier: Apache-2.0
// shm-bench: the report, as markdown tables and CSV files.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

std::string Report::Markdown() const {
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
  SmallPayloads(o);
  FloorChoice(o);
  Threads(o);
  Contended(o);
  Sleep(o);
  Idle(o);
  GuestCalls(o);
  Bulk(o);
  Large(o);
  Targets(o);
  return o.str();
}

void Report::Busy(std::ostringstream& o) const {
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
      o << "| " << c.transport << " | " << Rate(Metric(&c, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3))
        << " | " << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | "
        << Cores(&c, "caller") << " / " << Cores(&c, "server") << " | " << CsPerRt(&c) << " | "
        << RatioCell(Ratio(&c, copy, "p50")) << " | " << RatioCell(Ratio(&c, zc, "p50")) << " |\n";
    }
    o << "\n";
  }
}

void Report::SmallPayloads(std::ostringstream& o) const {
  std::vector<uint64_t> sizes;
  for (uint64_t p : kSmallPayloads) {
    for (const auto& c : cases_) {
      if (c.group == "busy" && c.payload == p && (c.transport == "spin-floor" || c.transport.rfind("shm-", 0) == 0)) {
        sizes.push_back(p);
        break;
      }
    }
  }
  if (sizes.size() < 2) return;
  std::vector<std::string> rows = {"spin-floor"};
  rows.insert(rows.end(), kFloorDesigns.begin(), kFloorDesigns.end());
  rows.insert(rows.end(), kInlineDesigns.begin(), kInlineDesigns.end());
  rows.insert(rows.end(), {"shm-copy", "shm-zc"});
  o << "## Small payloads, back to back: p50 µs, and ÷ spin-floor (per run, median [min–max])\n\n";
  o << "spin-floor is, in each run and at each payload, the fastest of " << kFloorDesigns.size()
    << " floor designs (the next table says which); floor-inline* carry the payload inside the control line "
       "(at most "
    << kFloorInlineMax << " B) and are not counted as the floor.\n\n";
  o << "| transport |";
  for (uint64_t p : sizes) o << " " << PayloadName(p) << " |";
  o << "\n|---|";
  for (size_t i = 0; i < sizes.size(); ++i) o << "---:|";
  o << "\n";
  for (const auto& t : rows) {
    bool any = false;
    for (uint64_t p : sizes) any |= Find("busy", t, p) != nullptr;
    if (!any) continue;
    o << "| " << t << " |";
    for (uint64_t p : sizes) {
      const Case* c = Find("busy", t, p);
      o << " ";
      if (!c) {
        o << (IsInlineDesign(t) && p > kFloorInlineMax ? "does not fit" : "—");
      } else if (!Failure(c).empty()) {
        o << "n/a";
      } else {
        o << WithSpread(Metric(c, "p50", 1e-3));
        if (t != "spin-floor") o << " (" << RatioCell(Ratio(c, Find("busy", "spin-floor", p), "p50")) << ")";
      }
      o << " |";
    }
    o << "\n";
  }
  o << "\n";
}

void Report::FloorChoice(std::ostringstream& o) const {
  std::vector<const Case*> floors;
  for (const auto& c : cases_) {
    if (c.transport == "spin-floor") floors.push_back(&c);
  }
  if (floors.empty()) return;
  o << "## The floor: the fastest design in each run (p50 µs)\n\n";
  o << "| case |";
  for (size_t r = 0; r < runs_.size(); ++r) o << " run " << r + 1 << " |";
  o << "\n|---|";
  for (size_t r = 0; r < runs_.size(); ++r) o << "---|";
  o << "\n";
  for (const Case* c : floors) {
    o << "| " << c->group << " " << PayloadName(c->payload) << " |";
    for (const auto& run : runs_) {
      const RunResult& r = run[IndexOf(c)];
      if (r.ok) {
        o << " " << r.design << " " << Sig(r.Get("p50") / 1e3) << " |";
      } else {
        o << " n/a |";
      }
    }
    o << "\n";
  }
  o << "\n";
}

void Report::Threads(std::ostringstream& o) const {
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

void Report::Contended(std::ostringstream& o) const {
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

void Report::Sleep(std::ostringstream& o) const {
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
       "library's budget ceiling, plus 1 ms ("
    << facts
    << "), so the server has stopped spinning "
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
      << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << WithSpread(Metric(&c, "p999", 1e-3)) << " | " << CsPerRt(&c)
      << " | " << RatioCell(Ratio(&c, fl, "p50")) << " |\n";
  }
  o << "\n";
}

void Report::Idle(std::ostringstream& o) const {
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
  o << "| guest ("
    << "1 worker, idle) | " << Fmt("%.3f", gs.med) << " [" << Fmt("%.3f", gs.lo) << "–" << Fmt("%.3f", gs.hi)
    << "] |\n";
  o << "| host (guest-call worker started, idle) | " << Fmt("%.3f", hs.med) << " [" << Fmt("%.3f", hs.lo) << "–"
    << Fmt("%.3f", hs.hi) << "] |\n\n";
}

void Report::GuestCalls(std::ostringstream& o) const {
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

void Report::Bulk(std::ostringstream& o) const {
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
    o << "| " << c.transport << " | " << WithSpread(Metric(&c, "rtps", static_cast<double>(c.payload) / 1e9)) << " | "
      << RatioCell(Ratio(&c, mc, "rtps")) << " | " << WithSpread(Metric(&c, "p50", 1e-3)) << " | "
      << WithSpread(Metric(&c, "p99", 1e-3)) << " | " << Cores(&c, "caller") << " / " << Cores(&c, "server") << " |\n";
  }
  o << "\n";
}

namespace {

/// Bytes one round trip of a large-* case moves (request + answer).
double LargeBytes(const Case& c) {
  Options o;
  o.mode = c.mode;
  o.payload = c.payload;
  const LargeShape s = ShapeOf(o);
  return static_cast<double>(s.req + s.resp);
}

std::string LargeRow(const Case& c) {
  if (!c.capacity) return c.transport;
  return c.transport + ", " + PayloadName(c.capacity) + " slot";
}

}  // namespace

void Report::Large(std::ostringstream& o) const {
  std::vector<uint64_t> sizes;
  for (uint64_t p : kLargePayloads) {
    for (const auto& c : cases_) {
      if (IsLargeMode(c.mode) && c.payload == p) {
        sizes.push_back(p);
        break;
      }
    }
  }
  if (sizes.empty()) return;
  o << "## Messages larger than a slot\n\n";
  o << "Three shapes, N bytes on the large side, 8 on the other. shm-copy is `DirectHost::Call` from and into "
       "the caller's buffers (a Source and a Sink), served by the C++ guest, go-copy the same served by the Go "
       "guest (StartReply, Reply.Large); a message larger than the slot travels in chunks of the slot's "
       "capacity, one round trip per chunk (SPECIFICATION.md §8.5). floor-chunk is the floor for that: raw "
       "shared memory, buffers of the same capacity, the same chunks, one round trip each with the two-line "
       "handshake of floor-2line and nothing else; floor-chunk2 the same with two chunk buffers each way, so that "
       "consecutive chunks' copies overlap (two slots in flight; its ÷ floor is against floor-chunk). memcpy copies "
       "the same bytes within one process. uds-stream "
       "writes and reads the whole message on a SOCK_STREAM socketpair. Bandwidth is (request + answer bytes) × "
       "round trips/s in GiB/s; RTT is the p50 round trip in ms; ÷ floor is shm's bandwidth ÷ floor-chunk's "
       "with the same slot, per run; ÷ socket the same against uds-stream.\n\n";
  std::vector<std::string> notes;
  for (const auto& g : kLargeGroups) {
    std::vector<const Case*> rows;  // one per transport and capacity, in case order
    for (const auto& c : cases_) {
      if (c.group != g || c.payload != sizes.front()) continue;
      rows.push_back(&c);
    }
    if (rows.empty()) continue;
    o << "### "
      << (g == "large-req"    ? "Large request, 8-byte answer"
          : g == "large-resp" ? "8-byte request, large answer"
                              : "Large both ways (echo)")
      << "\n\n";
    o << "| transport |";
    for (uint64_t p : sizes) o << " " << PayloadName(p) << " GiB/s | RTT ms | ÷ floor | ÷ socket |";
    o << "\n|---|";
    for (size_t i = 0; i < sizes.size(); ++i) o << "---:|---:|---:|---:|";
    o << "\n";
    for (const Case* r : rows) {
      o << "| " << LargeRow(*r) << " |";
      for (uint64_t p : sizes) {
        const Case* c = Find(g, r->transport, p, 1, r->capacity);
        const std::string fail = c ? Failure(c) : "not run";
        if (!fail.empty()) {
          o << " n/a | | | |";
          notes.push_back(g + " " + LargeRow(*r) + " at " + PayloadName(p) + ": " + fail);
          continue;
        }
        o << " " << WithSpread(Metric(c, "rtps", LargeBytes(*c) / double(1u << 30))) << " | "
          << WithSpread(Metric(c, "p50", 1e-6)) << " |";
        const bool shm = r->transport == "shm-copy" || IsGoGuest(r->transport);
        if (r->transport == "floor-chunk2") {  // two chunks in flight against one
          o << " " << RatioCell(Ratio(c, Find(g, "floor-chunk", p, 1, r->capacity), "rtps")) << " | |";
        } else if (shm) {
          o << " " << RatioCell(Ratio(c, Find(g, "floor-chunk", p, 1, r->capacity), "rtps")) << " | "
            << RatioCell(Ratio(c, Find(g, "uds-stream", p), "rtps")) << " |";
        } else {
          o << " | |";
        }
      }
      o << "\n";
    }
    o << "\n";
  }
  for (const auto& n : notes) o << "- " << n << "\n";
  if (!notes.empty()) o << "\n";
}

std::string Report::RawCsv() const {
  std::ostringstream o;
  o << "run,id,group,transport,mode,payload,threads,capacity,ok,count,secs,rtps,p50_ns,p90_ns,p99_ns,p999_ns,min_ns,"
       "max_ns,"
       "mean_ns,wall_s,caller_cpu_s,server_cpu_s,caller_cs,server_cs,error,floor_design\n";
  for (size_t r = 0; r < runs_.size(); ++r) {
    for (size_t i = 0; i < cases_.size(); ++i) {
      const Case& c = cases_[i];
      const RunResult& x = runs_[r][i];
      o << r + 1 << "," << c.Id() << "," << c.group << "," << c.transport << "," << c.mode << "," << c.payload << ","
        << c.threads << "," << c.capacity << "," << (x.ok ? 1 : 0);
      for (const char* k : {"count", "secs", "rtps", "p50", "p90", "p99", "p999", "min", "max", "mean", "wall",
                            "caller_cpu", "server_cpu", "caller_cs", "server_cs"}) {
        const double v = x.Get(k);
        o << ",";
        if (!std::isnan(v)) o << Fmt("%.6g", v);
      }
      std::string e = x.err;
      std::replace(e.begin(), e.end(), ',', ';');
      o << "," << e << "," << x.design << "\n";
    }
  }
  return o.str();
}

std::string Report::SummaryCsv() const {
  std::ostringstream o;
  o << "group,transport,payload,threads,capacity,runs_ok,rtps_med,rtps_min,rtps_max,p50_med,p50_min,p50_max,p99_med,"
       "p99_min,"
       "p99_max,p999_med,p999_min,p999_max\n";
  for (const auto& c : cases_) {
    o << c.group << "," << c.transport << "," << c.payload << "," << c.threads << "," << c.capacity;
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

}  // namespace orchestrator
}  // namespace bench

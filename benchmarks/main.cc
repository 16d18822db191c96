// SPDX-License-Identifier: Apache-2.0
// shm-bench — round trips through shm side by side with the hardware floor, Unix sockets, pipes, iceoryx and
// Boost.Interprocess, and with the Go guest in place of the C++ one. See BENCHMARKS.md for what each case
// measures and how.
//
//   shm-bench [--quick] [--runs N] [--seconds S] [--out DIR] [--filter REGEX] [--list] [--no-iceoryx]
//             [--no-go] [--go-guest PATH]
//
// The orchestrator (this process) builds the case list, starts iox-roudi when the iceoryx baseline is built,
// and runs every case --runs times, interleaved (run 1 of every case, then run 2, ...) so that drift in the
// machine's load spreads over all transports alike. Each case runs in two fresh processes (fork + exec of this
// binary with --child): the caller measures, the server answers; in the go-* cases the server is the Go guest
// program (go/cmd/shm-bench-guest) instead. It then prints markdown tables (medians over the runs, their
// spread, and each baseline's ratio to shm computed within each run) and, with --out, writes results.md,
// raw.csv (every run) and summary.csv (for plot.py).

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>

#include "orchestrator.h"

namespace bench {
int ChildMain(int argc, char** argv);
}

namespace {

using namespace bench::orchestrator;

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
  CLI::App app{
      "shm-bench: round trips through shm beside the hardware floor and the alternatives, every case\n"
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
  app.add_option("--filter", st.filter,
                 "Run only cases whose id (group/transport/payload/tN) contains a match of REGEX (ECMAScript; "
                 "plain text matches itself)")
      ->type_name("REGEX")
      ->check(CLI::Validator(
          [](std::string& v) {
            try {
              std::regex check(v);
            } catch (const std::regex_error& e) {
              return std::string("not a regular expression: ") + e.what();
            }
            return std::string();
          },
          "REGEX"));
  app.add_flag("--list", st.list, "Print the case ids and exit");
  app.add_flag_callback(
      "--no-iceoryx", [&st] { st.iceoryx = false; }, "Skip the iceoryx baseline (and iox-roudi)");
  app.add_flag_callback(
      "--no-go", [&st] { st.go = false; }, "Skip the Go guest cases (go-copy, go-zc)");
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
  const std::regex filter(st.filter);
  auto selected = [&](const Case& c) { return st.filter.empty() || std::regex_search(c.Id(), filter); };
  for (const auto& c : AllCases(bench::HaveIceoryx() && st.iceoryx, bench::HaveBoost(), with_go, st.quick)) {
    // spin-floor is chosen from the floor designs run beside it: a filter that selects it brings them along.
    const bool for_floor =
        IsFloorDesign(c.transport) && selected({c.group, "spin-floor", c.mode, c.payload, c.threads, c.capacity});
    if (selected(c) || for_floor) cases.push_back(c);
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
      RunResult res = c.transport == "spin-floor" ? ChooseFloor(c, cases, results) : RunCase(c, st);
      if (res.ok) {
        printf("  %-36s %10.0f rt/s  p50 %9.2f us  p99 %9.2f us  p99.9 %9.2f us%s%s\n", c.Id().c_str(), res.Get("rtps"),
               res.Get("p50") / 1e3, res.Get("p99") / 1e3, res.Get("p999") / 1e3, res.facts.empty() ? "" : "  | ",
               res.facts.c_str());
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

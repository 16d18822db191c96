// SPDX-License-Identifier: Apache-2.0
// shm-demo: one command runs a host process and a guest process that exchange messages through a segment,
// then the host prints what it measured: round trips per second, round-trip time percentiles, the guest-call
// round trip, and the number of errors (which must be 0; the exit status is 1 otherwise).
//
//   shm-demo [--seconds S] [--count N] [--payload BYTES] [--threads T] [--zero-copy] [--guest-calls N]
//            [--timeout-ms MS] [--guest-cmd "COMMAND"] [--name NAME]
//   shm-demo --guest NAME          (the built-in guest; the host starts it)
//
// The guest contract, for programs plugged in with --guest-cmd (the built-in guest follows it):
//  * The host runs `/bin/sh -c 'COMMAND "$@"' shm-demo-guest NAME` (on Windows `cmd.exe /c COMMAND NAME`): the
//    segment name is the last argument.
//  * A request of type NORMAL is answered with type NORMAL and the same bytes (echo).
//  * A request of type 129 (probe) carries a little-endian uint32 N: make N guest calls of type GUEST_CALL
//    with 64-byte payloads (the host echoes them), time each with a monotonic clock, and answer type 129 with
//    six little-endian uint64: calls that succeeded, calls that failed, p50, p99, p99.9 and max in ns.
//    A guest that does not implement it answers SYSTEM_ERROR (Reply::Failure()); the host then says so.
//  * Exit with status 0 once the host sends shutdown.
#include <shm/shm.h>
#if defined(_WIN32)
#include <windows.h>
#else
#include <unistd.h>
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"      // tools/common
#include "latency_histogram.h"  // tools/common

namespace {

using shm_tools::DescribeExit;
using shm_tools::LatencyHistogram;

constexpr auto kProbeType = static_cast<shm::MsgType>(129);
constexpr uint32_t kGuestCallPayload = 64;
constexpr uint32_t kStampSize = 8;                 // every demo request starts with a unique 8-byte stamp
constexpr int kMaxConsecutiveErrors = 10;          // a caller gives up after this many failures in a row
constexpr int64_t kGuestStartNs = 10'000'000'000;  // how long the guest may take to attach, and to exit

std::string Thousands(uint64_t v) {
  std::string digits = std::to_string(v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string FormatNs(uint64_t ns) {
  char buf[32];
  if (ns < 1000)
    std::snprintf(buf, sizeof buf, "%llu ns", static_cast<unsigned long long>(ns));
  else if (ns < 1'000'000)
    std::snprintf(buf, sizeof buf, "%.2f us", static_cast<double>(ns) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.2f ms", static_cast<double>(ns) / 1e6);
  return buf;
}

std::string Percentiles(const LatencyHistogram& h) {
  return "p50 " + FormatNs(h.Percentile(0.50)) + "   p99 " + FormatNs(h.Percentile(0.99)) + "   p99.9 " +
         FormatNs(h.Percentile(0.999)) + "   max " + FormatNs(h.max());
}

// ---- Guest mode ---------------------------------------------------------------------------------------------

// Answers a probe request: `count` guest calls, timed one by one. Runs on a guest worker thread.
shm::Reply RunProbe(shm::DirectGuest& guest, const shm::Message& m, shm::MutableBytes out) {
  uint32_t count = 0;
  if (m.data.size() < sizeof count || out.size() < 6 * sizeof(uint64_t)) return shm::Reply::Failure();
  std::memcpy(&count, m.data.data(), sizeof count);
  std::vector<uint8_t> request(kGuestCallPayload, 0x5a), answer;
  LatencyHistogram h;
  uint64_t failed = 0;
  for (uint64_t i = 0; i < count; ++i) {
    std::memcpy(request.data(), &i, sizeof i);
    const int64_t t0 = shm::platform::MonotonicNs();
    auto r = guest.SendGuestCall(request, shm::MsgType::GUEST_CALL, answer);
    const int64_t t1 = shm::platform::MonotonicNs();
    if (r && answer == request) {
      h.Add(static_cast<uint64_t>(t1 - t0));
    } else {
      ++failed;
    }
  }
  const uint64_t report[6] = {h.count(), failed, h.Percentile(0.50), h.Percentile(0.99), h.Percentile(0.999), h.max()};
  std::memcpy(out.data(), report, sizeof report);
  return shm::Reply{static_cast<int32_t>(sizeof report), kProbeType};
}

int RunGuest(const std::string& name) {
  shm::GuestConfig config;
  config.name = name;
  shm::DirectGuest guest;
  if (auto r = guest.Connect(config); !r) {
    std::fprintf(stderr, "shm-demo guest: %s\n", r.error().ToString().c_str());
    return 1;
  }
  auto started = guest.Start([&guest](const shm::Message& m, shm::MutableBytes out) {
    if (m.type == kProbeType) return RunProbe(guest, m, out);
    if (m.type != shm::MsgType::NORMAL || m.data.size() > out.size()) return shm::Reply::Failure();
    std::memcpy(out.data(), m.data.data(), m.data.size());
    return shm::Reply{static_cast<int32_t>(m.data.size()), shm::MsgType::NORMAL};
  });
  if (!started) {
    std::fprintf(stderr, "shm-demo guest: %s\n", started.error().ToString().c_str());
    return 1;
  }
  if (auto r = guest.Wait(); !r) {
    std::fprintf(stderr, "shm-demo guest: %s\n", r.error().ToString().c_str());
    return 1;
  }
  return 0;
}

// ---- Host mode ----------------------------------------------------------------------------------------------

struct Options {
  double seconds = 3;
  uint64_t count = 0;  // total measured round trips; 0: no limit
  uint32_t payload = 64;
  uint32_t threads = 1;
  bool zero_copy = false;
  uint32_t guest_calls = 10000;
  int64_t timeout_ms = 5000;
  std::string guest_cmd;  // empty: the built-in guest
  std::string name;
};

// What one caller thread measured.
struct CallerResult {
  LatencyHistogram latency;
  uint64_t calls = 0;
  uint64_t errors = 0;
  std::string first_error;
  bool gave_up = false;
};

// Holds the callers after their warm-up until all are ready, then starts the measured window for all at once.
class StartLine {
 public:
  explicit StartLine(uint32_t callers) : waiting_for_(callers) {}
  // Returns the window's end (CLOCK_MONOTONIC ns).
  int64_t ArriveAndWait(double seconds) {
    std::unique_lock<std::mutex> lock(mu_);
    if (--waiting_for_ == 0) {
      start_ns_ = shm::platform::MonotonicNs();
      end_ns_ = start_ns_ + static_cast<int64_t>(seconds * 1e9);
      cv_.notify_all();
    }
    cv_.wait(lock, [this] { return waiting_for_ == 0; });
    return end_ns_;
  }
  int64_t start_ns() const { return start_ns_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t waiting_for_;
  int64_t start_ns_ = 0;
  int64_t end_ns_ = 0;
};

// One caller thread: a warm-up (not recorded), then round trips until the window ends or its share of --count
// is done. Copy mode uses Send on the thread's own slot; --zero-copy holds a slot and writes in place.
//
// What one timed round trip includes: writing the request (copy mode: copying it into the slot; zero-copy:
// writing the stamp in place), publishing it, the guest noticing it (spinning, or woken from its futex sleep),
// the guest's handler copying the bytes back, publishing the answer, the host noticing it, and checking it
// (copy mode: after copying it out of the slot). Time is CLOCK_MONOTONIC, read once between calls.
void RunCaller(shm::DirectHost& host, const Options& o, uint32_t index, StartLine& start, CallerResult& res) {
  const shm::Duration timeout = std::chrono::milliseconds(o.timeout_ms);
  std::vector<uint8_t> request(o.payload, static_cast<uint8_t>('a' + index % 26)), answer;
  answer.reserve(o.payload);
  shm::ZeroCopySlot slot;
  uint64_t stamp = uint64_t{index} << 48;
  int consecutive = 0;

  auto fail = [&](std::string what) {
    ++res.errors;
    if (res.first_error.empty()) res.first_error = std::move(what);
    return false;
  };
  auto call = [&]() -> bool {
    ++stamp;
    if (!o.zero_copy) {
      std::memcpy(request.data(), &stamp, kStampSize);
      auto type = host.SendToSlot(index, request, shm::MsgType::NORMAL, answer, {timeout});
      if (!type) return fail(type.error().ToString());
      if (*type != shm::MsgType::NORMAL || answer.size() != o.payload ||
          std::memcmp(answer.data(), &stamp, kStampSize) != 0) {
        return fail("wrong answer: not the echo of its request");
      }
      return true;
    }
    if (!slot.valid()) {  // first call, or the slot was lost to a timed-out call
      auto got = host.GetZeroCopySlot(timeout);
      if (!got) return fail(got.error().ToString());
      slot = std::move(*got);
      std::memcpy(slot.RequestBuffer().data(), request.data(), o.payload);
    }
    std::memcpy(slot.RequestBuffer().data(), &stamp, kStampSize);
    if (auto r = slot.Send(static_cast<int32_t>(o.payload), shm::MsgType::NORMAL, timeout); !r) {
      return fail(r.error().ToString());
    }
    const shm::Bytes got = slot.Response();
    if (slot.ResponseType() != shm::MsgType::NORMAL || got.size() != o.payload ||
        std::memcmp(got.data(), &stamp, kStampSize) != 0) {
      return fail("wrong answer: not the echo of its request");
    }
    return true;
  };
  auto give_up = [&](bool ok) {
    consecutive = ok ? 0 : consecutive + 1;
    res.gave_up = consecutive >= kMaxConsecutiveErrors;
    return res.gave_up;
  };

  const int64_t warm_end =
      shm::platform::MonotonicNs() + 200'000'000;  // 0.2 s: lets the spin budget adapt, faults pages in
  while (shm::platform::MonotonicNs() < warm_end) {
    if (give_up(call())) break;
  }
  const int64_t end = start.ArriveAndWait(o.seconds);
  const uint64_t limit = o.count == 0 ? UINT64_MAX : (o.count + o.threads - 1) / o.threads;
  int64_t t = shm::platform::MonotonicNs();
  while (!res.gave_up && t < end && res.calls < limit) {
    const bool ok = call();
    const int64_t t1 = shm::platform::MonotonicNs();
    if (ok) {
      res.latency.Add(static_cast<uint64_t>(t1 - t));
      ++res.calls;
    }
    t = t1;
    if (give_up(ok)) break;
  }
}

// The path of this program.
std::string SelfPath() {
#if defined(_WIN32)
  char self[MAX_PATH + 1] = {};
  const DWORD n = GetModuleFileNameA(nullptr, self, MAX_PATH);
  return std::string(self, n);
#else
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  return n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string();
#endif
}

// Starts the guest process with the segment name as its last argument.
int SpawnGuest(const Options& o, shm_tools::ChildProcess* guest) {
  std::vector<std::string> args;
  if (o.guest_cmd.empty()) {
    const std::string self = SelfPath();
    if (self.empty()) return errno != 0 ? errno : EINVAL;
    args = {self, "--guest", o.name};
  } else {
#if defined(_WIN32)
    args = {"cmd.exe", "/c", o.guest_cmd + " " + o.name};
    shm_tools::SpawnOptions opt;
    char dir[MAX_PATH + 1] = {};
    const UINT n = GetSystemDirectoryA(dir, MAX_PATH);
    opt.path = std::string(dir, n) + "\\cmd.exe";
    return guest->Start(args, opt);
#else
    args = {"/bin/sh", "-c", o.guest_cmd + " \"$@\"", "shm-demo-guest", o.name};
#endif
  }
  return guest->Start(args);
}

// Waits until the guest exits or the deadline passes (then kills it). Returns its wait status, or -1.
int ReapGuest(shm_tools::ChildProcess* guest, int64_t deadline) {
  if (guest->Wait(deadline)) return guest->status();
  guest->Kill();
  return -1;
}

int RunHost(Options o) {
  static std::atomic<uint32_t> counter{0};
  if (o.name.empty()) {
    o.name = "shm-demo-" + std::to_string(shm::platform::ProcessId()) + "-" + std::to_string(++counter);
  }
  shm::HostConfig config;
  config.name = o.name;
  config.host_slots = o.threads;  // one slot per caller thread
  config.guest_slots = 1;
  config.payload_size = std::max(o.payload, kGuestCallPayload);
  config.default_timeout = std::chrono::milliseconds(o.timeout_ms);
  shm::DirectHost host;
  if (auto r = host.Init(config); !r) {
    std::fprintf(stderr, "shm-demo: %s\n", r.error().ToString().c_str());
    return 1;
  }
  // Guest calls are served by the host's worker thread, which sleeps on a futex while there are none.
  auto started = host.Start([](const shm::Message& m, shm::MutableBytes out) {
    if (m.data.size() > out.size()) return shm::Reply::Failure();
    std::memcpy(out.data(), m.data.data(), m.data.size());
    return shm::Reply{static_cast<int32_t>(m.data.size()), shm::MsgType::NORMAL};
  });
  if (!started) {
    std::fprintf(stderr, "shm-demo: %s\n", started.error().ToString().c_str());
    return 1;
  }

  shm_tools::ChildProcess guest;
  if (int err = SpawnGuest(o, &guest); err != 0) {
    std::fprintf(stderr, "shm-demo: cannot start the guest: %s\n", std::strerror(err));
    return 1;
  }
  const int64_t attach_deadline = shm::platform::MonotonicNs() + kGuestStartNs;
  while (!host.GuestAttached()) {
    if (guest.Wait(0)) {
      std::fprintf(stderr, "shm-demo: the guest %s before attaching\n", DescribeExit(guest.status()).c_str());
      return 1;
    }
    if (shm::platform::MonotonicNs() >= attach_deadline) {
      std::fprintf(stderr, "shm-demo: the guest did not attach within %lld s\n",
                   static_cast<long long>(kGuestStartNs / 1'000'000'000));
      ReapGuest(&guest, 0);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  std::printf("shm-demo: host pid %d, guest pid %d (%s), segment %s, %u CPUs\n",
              static_cast<int>(shm::platform::ProcessId()), static_cast<int>(guest.pid()),
              o.guest_cmd.empty() ? "built-in guest" : o.guest_cmd.c_str(), o.name.c_str(),
              std::thread::hardware_concurrency());
  std::printf("  %u caller thread%s, %u-byte messages, %s; 0.2 s warm-up, then %.1f s%s\n", o.threads,
              o.threads == 1 ? "" : "s", o.payload, o.zero_copy ? "zero-copy (in place)" : "copying Send", o.seconds,
              o.count ? (", at most " + Thousands(o.count) + " round trips").c_str() : "");
  std::fflush(stdout);

  std::vector<CallerResult> results(o.threads);
  StartLine start(o.threads);
  std::vector<std::thread> callers;
  for (uint32_t i = 0; i < o.threads; ++i) {
    callers.emplace_back([&, i] { RunCaller(host, o, i, start, results[i]); });
  }
  for (auto& t : callers) t.join();
  const int64_t elapsed_ns = shm::platform::MonotonicNs() - start.start_ns();

  LatencyHistogram all;
  uint64_t errors = 0;
  std::string first_error;
  for (const auto& r : results) {
    all.Merge(r.latency);
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
    if (r.gave_up)
      first_error += " (a caller gave up after " + std::to_string(kMaxConsecutiveErrors) + " consecutive errors)";
  }
  const double secs = static_cast<double>(elapsed_ns) / 1e9;
  std::printf("round trips      %s in %.2f s = %s per second\n", Thousands(all.count()).c_str(), secs,
              Thousands(static_cast<uint64_t>(static_cast<double>(all.count()) / secs)).c_str());
  std::printf("round-trip time  %s\n", Percentiles(all).c_str());

  if (o.guest_calls > 0 && !host.GuestAttached()) {
    std::printf("guest calls      not measured: the guest is gone\n");
  } else if (o.guest_calls > 0) {
    std::vector<uint8_t> report;
    const uint32_t n = o.guest_calls;
    // Generous deadline: the guest makes all n calls inside this one request.
    auto type = host.Send(shm::Bytes(&n, sizeof n), kProbeType, report, {std::chrono::seconds(120)});
    uint64_t v[6] = {};
    if (!type && type.error().code() == shm::ErrorCode::kRemote) {
      std::printf("guest calls      not measured: the guest does not answer the probe (type 129)\n");
    } else if (!type || *type != kProbeType || report.size() != sizeof v) {
      ++errors;
      if (first_error.empty()) first_error = type ? "malformed probe answer" : type.error().ToString();
      std::printf("guest calls      failed\n");
    } else {
      std::memcpy(v, report.data(), sizeof v);
      errors += v[1];
      if (v[1] != 0 && first_error.empty()) first_error = "a guest call failed (reported by the guest)";
      std::printf("guest calls      %s round trips (guest -> host): p50 %s   p99 %s   p99.9 %s   max %s\n",
                  Thousands(v[0]).c_str(), FormatNs(v[2]).c_str(), FormatNs(v[3]).c_str(), FormatNs(v[4]).c_str(),
                  FormatNs(v[5]).c_str());
    }
  }
  std::printf("spin budget      %s (learned from measured wake-up costs)\n",
              FormatNs(static_cast<uint64_t>(host.spin_budget_ns())).c_str());

  (void)host.SendShutdown();
  const int guest_status = ReapGuest(&guest, shm::platform::MonotonicNs() + kGuestStartNs);
  const bool guest_ok = guest_status != -1 && shm_tools::ExitCode(guest_status) == 0;
  host.Shutdown();
  std::printf("errors           %s%s\n", Thousands(errors).c_str(),
              errors ? (" (first: " + first_error + ")").c_str() : "");
  if (!guest_ok) std::printf("guest            %s\n", DescribeExit(guest_status).c_str());
  return errors == 0 && guest_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string guest_name;
  CLI::App app{
      "shm-demo: run a host and a guest process that exchange messages through a segment, and print\n"
      "the round trips per second, their time percentiles, the guest-call round trip and the errors.\n"
      "  shm-demo --guest NAME   is the built-in guest (the host starts it)",
      "shm-demo"};
  app.option_defaults()->always_capture_default();
  app.add_option("--seconds", o.seconds, "Length of the measured window in seconds")->check(CLI::Range(0.001, 3600.0));
  app.add_option("--count", o.count, "Stop after N measured round trips (default: no limit)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000'000}))
      ->capture_default_str()
      ->default_str("");
  app.add_option("--payload", o.payload, "Request and answer size in bytes")
      ->check(CLI::Range(kStampSize, uint32_t{1} << 24));
  app.add_option("--threads", o.threads, "Caller threads, one slot each")->check(CLI::Range(1u, 64u));
  app.add_flag("--zero-copy", o.zero_copy, "Write requests and read answers in place (ZeroCopySlot)");
  app.add_option("--guest-calls", o.guest_calls, "Guest-to-host calls the guest makes and times (0: none)")
      ->check(CLI::Range(0u, 100'000'000u));
  app.add_option("--timeout-ms", o.timeout_ms, "Deadline of each call in milliseconds")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}));
  app.add_option("--guest-cmd", o.guest_cmd, "Run CMD as the guest (via /bin/sh; the segment name is appended)")
      ->type_name("CMD");
  app.add_option("--name", o.name, "Segment name (default shm-demo-<pid>-<n>)");
  app.add_option("--guest", guest_name, "Serve as the built-in guest of segment NAME")->type_name("NAME");
  CLI11_PARSE(app, argc, argv);
  if (!guest_name.empty()) return RunGuest(guest_name);
  return RunHost(o);
}

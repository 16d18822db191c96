// SPDX-License-Identifier: Apache-2.0
// Soak: many round trips between a host and a real guest process, in both directions, with random sizes
// (start- and end-aligned; the copying callers' requests and answers sometimes larger than a slot, in chunks),
// random types, checksums verified on both sides and random timeouts injected.
// Counts mismatches (corrupt requests or answers), stale answers (an answer carrying another call's id) and
// leaked slots (any slot not FREE once traffic has stopped). Exit 0 only when all three are 0.
//
//   soak [--count N] [--seed S] [--threads T] [--max-seconds S]   host side; forks+execs itself as the guest
//   soak --guest <name> <seed> <guest calls> <stop at ns>          guest side (started by the host side)
//
// --max-seconds bounds the traffic on a machine too busy to finish the count in that time: both sides stop
// making calls then (the calls in flight finish), and every check applies to the calls made; the report says
// how many those were.
//
// Message format (both directions): request = [id u64][answer size i32][answer type u32][delay us u32]
// [request type u32][checksum of bytes 32.. u64][payload]; answer = [id u64][checksum of bytes 16.. u64][payload].
// The answer's size and type are those the request asked for, so the caller checks them exactly.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "reliability/testkit.h"
#include "shm/shm.h"

namespace {

using shm::MsgType;
using testkit::Get64;
using testkit::Put64;
using testkit::Rng;

constexpr uint32_t kHeader = 32;  // request header bytes
constexpr uint32_t kAnswerHeader = 16;

MsgType RandomType(Rng& rng) {
  static const MsgType kTypes[] = {MsgType::NORMAL,    MsgType::FLATBUFFER,       MsgType::GUEST_CALL,
                                   MsgType::APP_START, static_cast<MsgType>(200), static_cast<MsgType>(0xFFFFFFFFu)};
  return kTypes[rng.Below(6)];
}

/// One side's counters. Plain atomics: several threads add to them.
struct Stats {
  std::atomic<uint64_t> ok{0}, mismatches{0}, stale{0}, injected{0}, injected_failed{0}, unexpected{0};
  std::atomic<uint64_t> served{0}, served_bad{0}, calls{0}, large{0};
  std::string Line() const {
    char b[400];
    std::snprintf(b, sizeof b,
                  "ok=%" PRIu64 " mismatches=%" PRIu64 " stale=%" PRIu64 " injected_timeouts=%" PRIu64
                  " injected_that_failed=%" PRIu64 " unexpected_errors=%" PRIu64 " served=%" PRIu64
                  " served_bad_requests=%" PRIu64 " calls=%" PRIu64 " larger_than_a_slot=%" PRIu64,
                  ok.load(), mismatches.load(), stale.load(), injected.load(), injected_failed.load(),
                  unexpected.load(), served.load(), served_bad.load(), calls.load(), large.load());
    return b;
  }
};

/// A request: header and payload, `size` bytes in total, into `out` (>= size bytes).
void BuildRequest(uint8_t* out, uint32_t size, uint64_t id, int32_t answer_size, MsgType answer_type, uint32_t delay_us,
                  MsgType type, Rng& rng) {
  Put64(out, id);
  std::memcpy(out + 8, &answer_size, 4);
  const uint32_t at = static_cast<uint32_t>(answer_type), rt = static_cast<uint32_t>(type);
  std::memcpy(out + 12, &at, 4);
  std::memcpy(out + 16, &delay_us, 4);
  std::memcpy(out + 20, &rt, 4);
  rng.Fill(out + kHeader, size - kHeader);
  Put64(out + 24, testkit::Checksum(out + kHeader, size - kHeader));
}

/// The serving side, shared by the guest's workers and the host's guest-call worker.
shm::Reply Serve(const shm::Message& m, shm::MutableBytes out, Stats& stats) {
  stats.served.fetch_add(1, std::memory_order_relaxed);
  const uint8_t* p = m.data.data();
  uint32_t rt = 0;
  if (m.data.size() >= kHeader) std::memcpy(&rt, p + 20, 4);
  if (m.data.size() < kHeader || Get64(p + 24) != testkit::Checksum(p + kHeader, m.data.size() - kHeader) ||
      rt != static_cast<uint32_t>(m.type)) {
    stats.served_bad.fetch_add(1, std::memory_order_relaxed);
    return shm::Reply::Failure();
  }
  int32_t answer_size;
  uint32_t at, delay_us;
  std::memcpy(&answer_size, p + 8, 4);
  std::memcpy(&at, p + 12, 4);
  std::memcpy(&delay_us, p + 16, 4);
  const uint32_t n = static_cast<uint32_t>(answer_size < 0 ? -answer_size : answer_size);
  const uint64_t id = Get64(p);
  if (delay_us) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));  // makes a caller time out
  std::vector<uint8_t> large;
  if (n > out.size()) large.resize(n);  // an answer larger than the slot (SPECIFICATION.md §8.5)
  uint8_t* a = n > out.size() ? large.data() : out.data() + (answer_size < 0 ? out.size() - n : 0);
  Put64(a, id);
  Rng fill(id);
  fill.Fill(a + kAnswerHeader, n - kAnswerHeader);
  Put64(a + 8, testkit::Checksum(a + kAnswerHeader, n - kAnswerHeader));
  if (!large.empty()) return shm::Reply::Owned(std::move(large), static_cast<MsgType>(at));
  return shm::Reply{answer_size, static_cast<MsgType>(at)};
}

/// Checks an answer against the request that asked for it. Returns 0 ok, 1 stale (another call's id),
/// 2 mismatch (size, type or bytes).
int CheckAnswer(const uint8_t* a, size_t n, MsgType type, uint64_t id, int32_t answer_size, MsgType answer_type) {
  if (n < 8) return 2;
  if (Get64(a) != id) return 1;
  if (n != static_cast<size_t>(answer_size < 0 ? -answer_size : answer_size) || n < kAnswerHeader) return 2;
  if (type != answer_type || Get64(a + 8) != testkit::Checksum(a + kAnswerHeader, n - kAnswerHeader)) return 2;
  return 0;
}

/// Parameters of one call, drawn from the caller's generator.
struct Plan {
  uint32_t size;
  bool end_aligned;
  MsgType type, answer_type;
  int32_t answer_size;
  uint32_t delay_us = 0;
  std::chrono::nanoseconds timeout{std::chrono::seconds(30)};
  bool injected = false;
};

/// The largest request or answer a copying caller draws: up to kLargeSlots slots' worth, in chunks.
constexpr uint32_t kLargeSlots = 8;

/// `large`: a copying caller, which may draw requests and answers larger than the slot (1 in 25 each).
Plan Draw(Rng& rng, uint32_t cap, bool large = false) {
  Plan p;
  p.size = kHeader + rng.Below(cap - kHeader + 1);
  if (large && rng.Below(25) == 0) p.size = cap + 1 + rng.Below((kLargeSlots - 1) * cap);
  p.end_aligned = rng.Below(2) == 1;
  p.type = RandomType(rng);
  p.answer_type = RandomType(rng);
  int32_t n = static_cast<int32_t>(kAnswerHeader + rng.Below(cap - kAnswerHeader + 1));
  if (large && rng.Below(25) == 0) n = static_cast<int32_t>(cap + 1 + rng.Below((kLargeSlots - 1) * cap));
  p.answer_size = rng.Below(2) ? -n : n;
  if (rng.Below(500) == 0) {  // an injected timeout: a short deadline, often with a slow handler
    p.injected = true;
    p.timeout = std::chrono::microseconds(1 + rng.Below(500));
    if (rng.Below(2)) p.delay_us = 100 + rng.Below(2000);
  }
  return p;
}

void Count(Stats& s, const Plan& p, int check) {
  if (check == 0)
    s.ok.fetch_add(1, std::memory_order_relaxed);
  else if (check == 1)
    s.stale.fetch_add(1, std::memory_order_relaxed);
  else
    s.mismatches.fetch_add(1, std::memory_order_relaxed);
  if (p.injected) s.injected.fetch_add(1, std::memory_order_relaxed);
}

void CountError(Stats& s, const Plan& p, const shm::Error& e) {
  if (p.injected) {
    s.injected.fetch_add(1, std::memory_order_relaxed);
    s.injected_failed.fetch_add(1, std::memory_order_relaxed);
    // A short deadline may expire while claiming a slot or waiting for the answer; nothing else is expected.
    if (e.code() == shm::ErrorCode::kTimeout || e.code() == shm::ErrorCode::kNoFreeSlot ||
        e.code() == shm::ErrorCode::kSlotLost) {
      return;
    }
  }
  if (s.unexpected.fetch_add(1, std::memory_order_relaxed) < 10) {
    std::fprintf(stderr, "soak: unexpected error: %s\n", e.ToString().c_str());
  }
}

/// Whether a caller may make another call: before `stop_at_ns` (CLOCK_MONOTONIC; 0: no bound).
bool InTime(int64_t stop_at_ns) { return stop_at_ns == 0 || shm::platform::MonotonicNs() < stop_at_ns; }

/// Copying calls through `send` (host Send or guest SendGuestCall).
template <typename SendFn>
void CopyingCaller(SendFn send, uint32_t cap, uint64_t id_base, uint64_t count, uint64_t seed, Stats& stats,
                   int64_t stop_at_ns, bool progress = false) {
  Rng rng(seed);
  std::vector<uint8_t> req(size_t{kLargeSlots} * cap), resp;
  const int64_t t0 = shm::platform::MonotonicNs();
  for (uint64_t i = 0; i < count && InTime(stop_at_ns); ++i) {
    if (progress && count >= 1000000 && i % (count / 10) == 0 && i > 0) {
      std::fprintf(stderr, "soak: %" PRIu64 "%% of one caller's share after %.0f s\n", i * 100 / count,
                   static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e9);
    }
    const Plan p = Draw(rng, cap, true);
    const uint64_t id = id_base + i;
    BuildRequest(req.data(), p.size, id, p.answer_size, p.answer_type, p.delay_us, p.type, rng);
    shm::CallOptions o;
    o.timeout = p.timeout;
    o.end_aligned = p.end_aligned;
    auto r = send(shm::Bytes(req.data(), p.size), p.type, resp, o);
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    if (p.size > cap || static_cast<uint32_t>(p.answer_size < 0 ? -p.answer_size : p.answer_size) > cap) {
      stats.large.fetch_add(1, std::memory_order_relaxed);
    }
    if (r)
      Count(stats, p, CheckAnswer(resp.data(), resp.size(), *r, id, p.answer_size, p.answer_type));
    else
      CountError(stats, p, r.error());
  }
}

/// Zero-copy calls: the slot is held across calls and given back only when a timeout loses it.
template <typename AcquireFn>
void ZeroCopyCaller(AcquireFn acquire, uint32_t cap, uint64_t id_base, uint64_t count, uint64_t seed, Stats& stats,
                    int64_t stop_at_ns) {
  Rng rng(seed);
  shm::ZeroCopySlot slot;
  for (uint64_t i = 0; i < count && InTime(stop_at_ns); ++i) {
    const Plan p = Draw(rng, cap);
    const uint64_t id = id_base + i;
    if (!slot.valid()) {
      auto s = acquire();
      if (!s) {
        CountError(stats, Plan{}, s.error());
        continue;
      }
      slot = std::move(*s);
    }
    const shm::MutableBytes buf = slot.RequestBuffer();
    uint8_t* at = buf.data() + (p.end_aligned ? buf.size() - p.size : 0);
    BuildRequest(at, p.size, id, p.answer_size, p.answer_type, p.delay_us, p.type, rng);
    const int32_t wire = p.end_aligned ? -static_cast<int32_t>(p.size) : static_cast<int32_t>(p.size);
    auto r = slot.Send(wire, p.type, p.timeout);
    stats.calls.fetch_add(1, std::memory_order_relaxed);
    if (r) {
      const shm::Bytes a = slot.Response();
      Count(stats, p, CheckAnswer(a.data(), a.size(), slot.ResponseType(), id, p.answer_size, p.answer_type));
    } else {
      CountError(stats, p, r.error());
    }
  }
}

int GuestMain(const std::string& name, uint64_t seed, uint64_t calls, int64_t stop_at_ns) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(30);
  shm::DirectGuest guest;
  if (auto r = guest.Connect(c); !r) {
    std::fprintf(stderr, "soak guest: %s\n", r.error().ToString().c_str());
    return 3;
  }
  Stats stats;
  if (!guest.Start([&](const shm::Message& m, shm::MutableBytes out) { return Serve(m, out, stats); })) return 3;
  testkit::Notify("ready");
  const uint32_t cap = guest.guest_payload_capacity();
  std::thread copying([&] {
    CopyingCaller([&](shm::Bytes b, MsgType t, std::vector<uint8_t>& out,
                      const shm::CallOptions& o) { return guest.SendGuestCall(b, t, out, o); },
                  cap, 1ull << 62, calls / 2, seed ^ 0x6A, stats, stop_at_ns);
  });
  ZeroCopyCaller([&] { return guest.AcquireGuestSlot(std::chrono::seconds(30)); }, cap, (1ull << 62) + (1ull << 40),
                 calls - calls / 2, seed ^ 0x6B, stats, stop_at_ns);
  copying.join();
  guest.ReleaseParkedSlots();  // the copying caller's parked slot: only leaked ones may remain
  testkit::Notify("calls-done " + stats.Line());
  auto w = guest.Wait();  // until the host's SendShutdown (or its death); the guest dies with its parent
  testkit::Notify("served " + stats.Line());
  return w ? 0 : 4;
}

int HostMain(uint64_t count, uint64_t seed, uint32_t threads, double max_seconds) {
  const std::string name = testkit::UniqueName("soak");
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 4;
  c.guest_slots = 2;
  c.payload_size = 4096;
  shm::DirectHost host;
  if (auto r = host.Init(c); !r) {
    std::fprintf(stderr, "soak: %s\n", r.error().ToString().c_str());
    return 3;
  }
  Stats host_stats;
  if (!host.Start([&](const shm::Message& m, shm::MutableBytes out) { return Serve(m, out, host_stats); })) return 3;
  const uint64_t guest_calls = count / 10;  // guest->host round trips, on top of the host->guest ones
  // When both sides stop making calls: an instant of CLOCK_MONOTONIC, which both processes read alike.
  const int64_t stop_at_ns =
      max_seconds > 0 ? shm::platform::MonotonicNs() + static_cast<int64_t>(max_seconds * 1e9) : 0;
  testkit::Child guest;
  if (!guest.Spawn({"/proc/self/exe", "--guest", name, std::to_string(seed), std::to_string(guest_calls),
                    std::to_string(stop_at_ns)}) ||
      guest.WaitFor("ready", 60000).empty()) {
    std::fprintf(stderr, "soak: the guest did not start\n");
    return 3;
  }
  const uint32_t cap = host.payload_capacity();
  const int64_t t0 = shm::platform::MonotonicNs();
  std::vector<std::thread> callers;
  for (uint32_t t = 0; t < threads; ++t) {
    const uint64_t n = count / threads + (t < count % threads ? 1 : 0);
    const uint64_t base = uint64_t{t} << 40;
    callers.emplace_back([&, t, n, base] {
      if (t == 0) {
        ZeroCopyCaller([&] { return host.GetZeroCopySlot(std::chrono::seconds(30)); }, cap, base, n, seed + t,
                       host_stats, stop_at_ns);
      } else {
        CopyingCaller([&](shm::Bytes b, MsgType ty, std::vector<uint8_t>& out,
                          const shm::CallOptions& o) { return host.Send(b, ty, out, o); },
                      cap, base, n, seed + t, host_stats, stop_at_ns, t == 1);
      }
    });
  }
  for (auto& t : callers) t.join();
  const std::string guest_calls_line = guest.WaitFor("calls-done", 600000);
  const double secs = static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e9;
  // Traffic has stopped: late handlers finish the abandoned calls and free their slots.
  host.ReleaseParkedSlots();  // the copying callers' parked slots: only leaked ones may remain
  testkit::SegmentView view(name);
  const std::string busy = view.ok() ? view.WaitAllFree(30000) : "unreadable";
  (void)host.SendShutdown();
  const std::string guest_line = guest.WaitFor("served", 60000);
  const int guest_exit = testkit::ExitCode(guest.Reap(60000));
  host.Shutdown();

  auto field = [](const std::string& line, const std::string& key) -> uint64_t {
    const size_t p = line.find(" " + key + "=");
    return p == std::string::npos ? ~uint64_t{0} : std::strtoull(line.c_str() + p + key.size() + 2, nullptr, 10);
  };
  const uint64_t g_ok = field(guest_line, "ok"), g_mis = field(guest_line, "mismatches"),
                 g_stale = field(guest_line, "stale"), g_unexp = field(guest_line, "unexpected_errors"),
                 g_bad = field(guest_line, "served_bad_requests"), g_served = field(guest_line, "served");
  const uint64_t mismatches = host_stats.mismatches + g_mis + host_stats.served_bad + g_bad;
  const uint64_t stale = host_stats.stale + g_stale;
  const uint64_t round_trips = host_stats.ok + g_ok;
  const uint64_t host_calls = host_stats.calls, g_calls = field(guest_line, "calls");
  std::printf("soak: seed %" PRIu64 " (replay: --seed %" PRIu64 "), %u host threads, %.1f s\n", seed, seed, threads,
              secs);
  if (stop_at_ns != 0 && shm::platform::MonotonicNs() >= stop_at_ns && (host_calls < count || g_calls < guest_calls)) {
    std::printf("soak: the %.0f s budget ran out first: %" PRIu64 " of %" PRIu64 " host->guest and %" PRIu64
                " of %" PRIu64 " guest->host calls made, every one checked\n",
                max_seconds, host_calls, count, g_calls, guest_calls);
  }
  std::printf("soak: host side   %s\n", host_stats.Line().c_str());
  std::printf("soak: guest side  %s\n", guest_line.empty() ? "(no report)" : guest_line.c_str() + 7);
  const uint64_t injected = host_stats.injected + field(guest_line, "injected_timeouts");
  const size_t leaked = static_cast<size_t>(std::count(busy.begin(), busy.end(), ':'));
  std::printf("soak: %" PRIu64 " verified round trips (%.0f/s), %" PRIu64
              " host->guest served by the guest, "
              "%" PRIu64 " injected timeouts\n",
              round_trips, static_cast<double>(round_trips) / secs, g_served, injected);
  std::printf("soak: RESULT mismatches=%" PRIu64 " stale=%" PRIu64 " leaked_slots=%zu unexpected_errors=%" PRIu64
              " guest_exit=%d\n",
              mismatches, stale, leaked, host_stats.unexpected + g_unexp, guest_exit);
  if (!busy.empty()) std::printf("soak: slots not FREE: %s\n", busy.c_str());
  const bool clean = !guest_line.empty() && !guest_calls_line.empty() && round_trips > 0 && mismatches == 0 &&
                     stale == 0 && busy.empty() && host_stats.unexpected == 0 && g_unexp == 0 && guest_exit == 0;
  std::printf("soak: %s\n", clean ? "PASS" : "FAIL");
  std::printf(
      "RELIABILITY|soak (ctest soak_short): calls both ways with random sizes (both alignments, some larger "
      "than a slot), types "
      "and injected timeouts, checksums on both sides|%" PRIu64 " host->guest + %" PRIu64
      " guest->host "
      "calls: %" PRIu64 " verified round trips; %" PRIu64 " mismatches, %" PRIu64
      " stale answers, %zu "
      "leaked slots, %" PRIu64 " unexpected errors (seed %" PRIu64 ")\n",
      host_calls, g_calls, round_trips, mismatches, stale, leaked, host_stats.unexpected + g_unexp, seed);
  return clean ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  shm::SetLogSink(nullptr);  // the handler failures the soak provokes are counted, not logged
  if (argc >= 6 && std::string(argv[1]) == "--guest") {
    return GuestMain(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10),
                     std::strtoll(argv[5], nullptr, 10));
  }
  uint64_t count = 100000,
           seed = static_cast<uint64_t>(shm::platform::MonotonicNs()) ^ static_cast<uint64_t>(::getpid());
  uint32_t threads = 4;
  double max_seconds = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--count")
      count = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--seed")
      seed = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--threads")
      threads = static_cast<uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    else if (a == "--max-seconds")
      max_seconds = std::strtod(argv[i + 1], nullptr);
    else {
      std::fprintf(stderr, "usage: %s [--count N] [--seed S] [--threads T] [--max-seconds S]\n", argv[0]);
      return 2;
    }
  }
  if (threads == 0) threads = 1;
  return HostMain(count, seed, threads, max_seconds);
}

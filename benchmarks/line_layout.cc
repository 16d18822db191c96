// SPDX-License-Identifier: Apache-2.0
// shm-line-layout — where a small payload should live relative to the slot's control word.
//
// Two processes (fork) ping-pong a payload through one shared mapping, in four layouts, interleaved over
// several runs. It isolates the cache-line traffic of the protocol from everything else in the library:
//
//   floor     the spin floor of shm-bench: the caller's control word and the server's control word in two
//             cache lines, plain release stores, payload in its own request and response lines;
//   protocol  shm's shape: one control word that both sides change with compare-and-swap (publish, take,
//             complete), type and size fields next to it, payload in its own request and response lines;
//   inline    the same protocol with the payload inside the control word's cache line (at most 40 bytes fit
//             beside the word and the fields);
//   adjacent  the same protocol with the payload in the line right after the control line.
//
// Usage: shm-line-layout [--payload N] [--runs R] [--iterations I]. Prints the mean round trip per layout
// (median over the runs, with min and max) and its ratio to the floor of the same run.
#include <shm/platform/platform.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "child_process.h"  // tools/common

namespace {

using A32 = std::atomic<uint32_t>;

constexpr uint32_t kInlineMax = 40;
constexpr uint32_t kStop = 0xFFFFFFFFu;

// One control line: the word, the request fields, the response fields, then room for an inline payload.
struct alignas(64) ControlLine {
  A32 word;
  A32 req_size;
  A32 resp_size;
  uint8_t pad[12];
  uint8_t inline_bytes[kInlineMax];
};
static_assert(sizeof(ControlLine) == 64, "one cache line");

struct alignas(64) Mapping {
  ControlLine a;         // caller's control line (the only one, except for the floor)
  ControlLine b;         // floor: the server's control line; adjacent: the payload line after `a`
  ControlLine spare[2];  // keeps the buffers away from the control lines
  alignas(64) uint8_t request[4096];
  alignas(64) uint8_t response[4096];
};

enum class Layout { kFloor, kProtocol, kInline, kAdjacent };
const char* Name(Layout l) {
  switch (l) {
    case Layout::kFloor: return "floor";
    case Layout::kProtocol: return "protocol";
    case Layout::kInline: return "inline";
    case Layout::kAdjacent: return "adjacent";
  }
  return "?";
}

// Word values: seq * 8 + state, as shm's control word keeps a sequence number beside the state.
constexpr uint32_t kRequest = 2, kServing = 3, kResponse = 4;
uint32_t Word(uint32_t seq, uint32_t state) { return seq * 8 + state; }

void Cas(A32& w, uint32_t to) {
  uint32_t cur = w.load(std::memory_order_relaxed);
  while (!w.compare_exchange_weak(cur, to, std::memory_order_acq_rel, std::memory_order_acquire)) {
  }
}

struct Buffers {
  uint8_t* request;
  uint8_t* response;
};
Buffers BuffersFor(Mapping* m, Layout l) {
  if (l == Layout::kInline) return {m->a.inline_bytes, m->a.inline_bytes};
  if (l == Layout::kAdjacent) return {reinterpret_cast<uint8_t*>(&m->b), reinterpret_cast<uint8_t*>(&m->b)};
  return {m->request, m->response};
}

void Serve(Mapping* m, Layout l, uint32_t n) {
  const Buffers buf = BuffersFor(m, l);
  const bool floor = l == Layout::kFloor;
  A32& in = m->a.word;
  A32& out = floor ? m->b.word : m->a.word;
  uint8_t local[4096];
  for (uint32_t seq = 1;; ++seq) {
    uint32_t v;
    while ((v = in.load(std::memory_order_acquire)) != Word(seq, kRequest)) {
      if (v == kStop) return;
      shm::platform::CpuRelax();
    }
    if (floor) {
      std::memcpy(buf.response, buf.request, n);
      out.store(Word(seq, kResponse), std::memory_order_release);
      continue;
    }
    Cas(in, Word(seq, kServing));  // take: the server proves ownership before it writes
    const uint32_t size = std::min(m->a.req_size.load(std::memory_order_relaxed), n);
    std::memcpy(local, buf.request, size);  // read once (the inline layouts share one area both ways)
    std::memcpy(buf.response, local, size);
    m->a.resp_size.store(size, std::memory_order_relaxed);
    Cas(in, Word(seq, kResponse));
  }
}

// Mean round trip in ns over `iterations`, after a warm-up.
double Call(Mapping* m, Layout l, uint32_t n, uint32_t iterations) {
  const Buffers buf = BuffersFor(m, l);
  const bool floor = l == Layout::kFloor;
  A32& out = m->a.word;
  A32& in = floor ? m->b.word : m->a.word;
  const uint32_t warmup = iterations / 10;
  int64_t t0 = 0;
  for (uint32_t seq = 1; seq <= warmup + iterations; ++seq) {
    if (seq == warmup + 1) t0 = shm::platform::MonotonicNs();
    std::memset(buf.request, static_cast<int>(seq & 0xFF), n);
    if (floor) {
      out.store(Word(seq, kRequest), std::memory_order_release);
    } else {
      m->a.req_size.store(n, std::memory_order_relaxed);
      Cas(out, Word(seq, kRequest));
    }
    while (in.load(std::memory_order_acquire) != Word(seq, kResponse)) shm::platform::CpuRelax();
    if (n != 0 && buf.response[n - 1] != static_cast<uint8_t>(seq & 0xFF)) {
      std::fprintf(stderr, "%s: wrong answer at %u\n", Name(l), seq);
      std::exit(1);
    }
  }
  const double mean = static_cast<double>(shm::platform::MonotonicNs() - t0) / iterations;
  out.store(kStop, std::memory_order_release);
  return mean;
}

double RunOnce(Layout l, uint32_t n, uint32_t iterations) {
  void* p = mmap(nullptr, sizeof(Mapping), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  auto* m = new (p) Mapping();
  // A plain fork, not shm_tools::SpawnProcess: the server is this program's own Serve() on the anonymous
  // shared mapping just made, which only a forked child inherits; an exec would lose the mapping (and a
  // second program would measure its own start-up, not the layouts).
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    Serve(m, l, n);
    _exit(0);
  }
  const double mean = Call(m, l, n, iterations);
  shm_tools::WaitExit(pid, INT64_MAX);  // Call() has stopped the server: it exits at once
  munmap(p, sizeof(Mapping));
  return mean;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  uint32_t n = 32, runs = 7, iterations = 200000;
  CLI::App app{
      "shm-line-layout: the cache-line traffic of the slot protocol alone, with the payload in its own\n"
      "lines, inside the control word's line, or in the line next to it (BENCHMARKS.md).",
      "shm-line-layout"};
  app.option_defaults()->always_capture_default();
  app.add_option("--payload", n, "Payload bytes")->check(CLI::Range(0u, 4096u));
  app.add_option("--runs", runs, "Runs of every layout, interleaved")->check(CLI::Range(1u, 1000u));
  app.add_option("--iterations", iterations, "Round trips in one run")->check(CLI::Range(1000u, 1'000'000'000u));
  CLI11_PARSE(app, argc, argv);
  std::vector<Layout> layouts = {Layout::kFloor, Layout::kProtocol, Layout::kAdjacent};
  if (n <= kInlineMax) layouts.push_back(Layout::kInline);
  if (n > 64) layouts.erase(std::remove(layouts.begin(), layouts.end(), Layout::kAdjacent), layouts.end());
  std::vector<std::vector<double>> mean(layouts.size()), ratio(layouts.size());
  for (uint32_t r = 0; r < runs; ++r) {  // interleaved, so drift in the machine hits every layout alike
    double floor = 0;
    for (size_t i = 0; i < layouts.size(); ++i) {
      const double m = RunOnce(layouts[i], n, iterations);
      if (i == 0) floor = m;
      mean[i].push_back(m);
      ratio[i].push_back(m / floor);
    }
  }
  std::printf("payload %u B, %u runs of %u round trips; mean round trip, median [min-max] over runs\n", n, runs,
              iterations);
  for (size_t i = 0; i < layouts.size(); ++i) {
    std::printf("  %-9s %7.1f ns [%.1f-%.1f]   / floor %.2fx [%.2f-%.2f]\n", Name(layouts[i]), Median(mean[i]),
                *std::min_element(mean[i].begin(), mean[i].end()), *std::max_element(mean[i].begin(), mean[i].end()),
                Median(ratio[i]), *std::min_element(ratio[i].begin(), ratio[i].end()),
                *std::max_element(ratio[i].begin(), ratio[i].end()));
  }
  return 0;
}

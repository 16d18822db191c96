// SPDX-License-Identifier: Apache-2.0
// shm-bench — what the orchestrator, the caller process and the server process share.
//
// Every measured case runs in two fresh processes started by fork+exec of this binary: a *caller* that
// times round trips and a *server* that answers them. A transport is a pair of classes: a Caller (one round
// trip per Call) and a Server (answers until told to stop or its peer goes away).
#pragma once

#include <shm/platform/platform.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace bench {

/// What a child process is told to do (passed on its command line as key=value pairs).
struct Options {
  std::string role;       // caller | server
  std::string transport;  // floor-2line, floor-1line, futex-floor, shm-copy, shm-zc, go-copy, go-zc, uds-seqpacket, ...
  std::string mode;       // busy | sleep | idle | bulk | guestcall
  std::string name;       // unique name for named resources (segments, queues, services)
  uint64_t payload = 64;  // request bytes; the echo answers as many (bulk answers 8)
  int threads = 1;        // caller threads (shm only)
  double seconds = 0.5;   // measured window (busy, bulk, guestcall)
  double warmup = 0.1;    // unmeasured calls before the window
  int samples = 1000;     // round trips in sleep mode
  double idle_seconds = 5;
  int peer_pid = 0;  // the other process (CPU and context-switch accounting)
  int fd_send = -1;  // transport descriptors inherited from the orchestrator
  int fd_recv = -1;
  int result_fd = -1;  // where the caller writes its result line
};

inline void SleepNs(int64_t ns) noexcept {
  if (ns <= 0) return;
  timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/// Bytes the echo actually carries: a byte stream cannot carry an empty message, so 0 B sends 1 byte on
/// sockets and pipes (documented in BENCHMARKS.md).
inline size_t WireBytes(const Options& o, bool can_be_empty) {
  return (o.payload == 0 && !can_be_empty) ? 1 : static_cast<size_t>(o.payload);
}

/// The request pattern: byte i = (i * 7 + 1) mod 251; byte 0 is overwritten with a per-call tag.
inline void FillPattern(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>((i * 7 + 1) % 251);
}

/// The bulk answer: the sum of the request's 64-bit words (the server reads every byte).
inline uint64_t SumWords(const uint8_t* p, size_t n) {
  uint64_t s = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    s += w;
  }
  for (; i < n; ++i) s += p[i];
  return s;
}

/// Checks an echo answer: right length, tag in byte 0, pattern in the last byte.
inline bool EchoOk(const uint8_t* resp, size_t got, size_t want, uint8_t tag, const uint8_t* src) {
  if (got != want) return false;
  if (want == 0) return true;
  if (resp[0] != tag) return false;
  return want == 1 || resp[want - 1] == src[want - 1];
}

/// The caller side of a transport. Call() runs one round trip on caller thread `t` and checks the answer.
class Caller {
 public:
  virtual ~Caller() = default;
  /// Connect and wait for the peer. Returns an error text, empty on success.
  virtual std::string Open(const Options& o) = 0;
  /// One round trip. false on error (see error()). Thread t uses only its own state.
  virtual bool Call(int t) = 0;
  /// Tell the peer to stop (where the transport has a way) and release resources.
  virtual void Close() {}
  /// How long to pause before a sleep-mode request so that the server has gone to sleep.
  virtual int64_t SleepGapNs() { return 1400000; }
  /// One line of transport-specific facts for the report (e.g. the spin budget).
  virtual std::string Facts() { return ""; }
  const std::string& error() const { return error_; }

 protected:
  std::string error_;
};

/// The server side. Run() answers until the caller is gone or told to stop; returns the exit code.
class Server {
 public:
  virtual ~Server() = default;
  virtual int Run(const Options& o) = 0;
};

/// Set by SIGTERM in the server process.
extern std::atomic<bool> g_stop;

/// Bytes of the memfd that the floor baselines share (control words and both buffers).
size_t FloorSegmentBytes(uint64_t payload);
/// The floors that run over a memfd the orchestrator creates: futex-floor and every floor-* design.
bool IsMemfdFloor(const std::string& transport);
/// The most payload floor-inline carries inside its control line (floor_transports.cc).
constexpr size_t kFloorInlineMax = 48;

std::unique_ptr<Caller> MakeRawCaller(const std::string& transport);
std::unique_ptr<Server> MakeRawServer(const std::string& transport);
std::unique_ptr<Caller> MakeFloorCaller(const std::string& transport);
std::unique_ptr<Server> MakeFloorServer(const std::string& transport);
std::unique_ptr<Caller> MakeShmCaller(const Options& o);
std::unique_ptr<Server> MakeShmServer(const Options& o);
std::unique_ptr<Caller> MakeIceoryxCaller();
std::unique_ptr<Server> MakeIceoryxServer();
std::unique_ptr<Caller> MakeBoostCaller();
std::unique_ptr<Server> MakeBoostServer();
bool HaveIceoryx();
bool HaveBoost();
void RemoveBoostQueues(const std::string& name);

}  // namespace bench

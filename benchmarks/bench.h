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
  std::string mode;       // busy | sleep | idle | bulk | guestcall | large-req | large-resp | large-both
  std::string name;       // unique name for named resources (segments, queues, services)
  uint64_t payload = 64;  // request bytes; the echo answers as many (bulk answers 8)
  int threads = 1;        // caller threads (shm only)
  double seconds = 0.5;   // measured window (busy, bulk, guestcall)
  double warmup = 0.1;    // unmeasured calls before the window
  int samples = 1000;     // round trips in sleep mode
  uint64_t capacity = 0;  // large-*: the slot capacity (shm) or the floor's buffer size, i.e. the chunk size
  int min_calls = 1;      // measured round trips at least, even if the window is over (large-*: slow calls)
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

// ---- Messages larger than a slot (the large-* modes) ----------------------------------------------------------
//
// Three shapes, `payload` = N bytes on the large side(s), 8 bytes on the small side:
//   large-req   N-byte request (the pattern, byte 0 = the call's tag); the 8-byte answer is the request's
//               first 4 bytes and its last 4 (the server reads both ends of the message it assembled)
//   large-resp  8-byte request (pattern, byte 0 = tag); the answer is N bytes of the pattern with byte 0 = tag
//   large-both  N-byte request, echoed
// Every transport (shm with either guest, the chunked floor, the stream socket, iceoryx, memcpy) answers
// exactly so, and the caller checks the answer the same way (LargeAnswerOk).

constexpr size_t kLargeSmallSide = 8;
/// The caller checks one byte in every this many of a large answer (and the last): every chunk is seen.
constexpr size_t kLargeCheckStride = 65536;

inline bool IsLargeMode(const std::string& mode) { return mode.rfind("large-", 0) == 0; }

struct LargeShape {
  size_t req = 0, resp = 0;
};
inline LargeShape ShapeOf(const Options& o) {
  const size_t n = static_cast<size_t>(o.payload);
  if (o.mode == "large-req") return {n, kLargeSmallSide};
  if (o.mode == "large-resp") return {kLargeSmallSide, n};
  return {n, n};
}

/// The small answer to a large request (large-req).
inline void LargeSmallAnswer(const uint8_t* req, size_t n, uint8_t* out) {
  std::memcpy(out, req, 4);
  std::memcpy(out + 4, req + n - 4, 4);
}

/// The whole answer of the server, for the request `req` of `req_n` bytes: for large-req the 8 bytes of
/// LargeSmallAnswer into `out`; for large-resp the server's pattern buffer `pattern` (N bytes) with its byte
/// 0 set to the tag (returned); for large-both the request itself (returned).
inline const uint8_t* LargeAnswer(const Options& o, const uint8_t* req, size_t req_n, uint8_t* pattern, uint8_t* out) {
  if (o.mode == "large-req") {
    LargeSmallAnswer(req, req_n, out);
    return out;
  }
  if (o.mode == "large-resp") {
    pattern[0] = req[0];
    return pattern;
  }
  return req;
}

/// The caller's check of an answer of `got` bytes to a request `src` (its byte 0 already the tag).
inline bool LargeAnswerOk(const Options& o, const uint8_t* resp, size_t got, const uint8_t* src) {
  const LargeShape s = ShapeOf(o);
  if (got != s.resp) return false;
  if (o.mode == "large-req") {
    uint8_t want[kLargeSmallSide];
    LargeSmallAnswer(src, s.req, want);
    return std::memcmp(resp, want, kLargeSmallSide) == 0;
  }
  if (resp[0] != src[0]) return false;  // the tag; the rest is the pattern (FillPattern)
  for (size_t i = kLargeCheckStride; i < got; i += kLargeCheckStride) {
    if (resp[i] != static_cast<uint8_t>((i * 7 + 1) % 251)) return false;
  }
  return resp[got - 1] == static_cast<uint8_t>(((got - 1) * 7 + 1) % 251);
}

/// The largest large-* payload the iceoryx baseline carries (its RouDi memory pools, roudi.cc).
constexpr uint64_t kIceoryxLargest = uint64_t{16} << 20;

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
/// The same for a case: floor-chunk's buffers have the chunk size (`capacity`), floor-chunk2's two chunks, the
/// others the payload's.
inline size_t FloorSegmentBytes(const std::string& transport, uint64_t payload, uint64_t capacity) {
  if (transport == "floor-chunk") return FloorSegmentBytes(capacity);
  if (transport == "floor-chunk2") return FloorSegmentBytes(2 * capacity);
  return FloorSegmentBytes(payload);
}
/// The floors that run over a memfd the orchestrator creates: futex-floor and every floor-* design.
bool IsMemfdFloor(const std::string& transport);
/// The most payload floor-inline carries inside its control line (floor_transports.cc).
constexpr size_t kFloorInlineMax = 48;

std::unique_ptr<Caller> MakeRawCaller(const Options& o);
std::unique_ptr<Server> MakeRawServer(const Options& o);
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

// SPDX-License-Identifier: Apache-2.0
// shm-bench — the floors: raw shared memory (a memfd both processes map) and nothing else, in several designs,
// so that the fastest of them is what "the floor" means on this machine (BENCHMARKS.md, Transports).
//
// The memfd: a 4096-byte control area (offset 0), then the request buffer, then the response buffer, each
// rounded up to whole cache lines with a line to spare. The designs differ only in the control area and in
// how a waiter polls:
//
//   floor-2line[-nopause]  two control words, each alone in its cache line: req at offset 0 (the caller stores
//                          a new sequence number), resp at offset 64 (the server stores the same number back).
//                          Plain release stores, acquire loads; the server copies the request buffer into the
//                          response buffer.
//   floor-1line[-nopause]  one control word for both directions, at offset 0: the caller stores
//                          (seq, REQUEST), the server takes it with one compare-and-swap (seq, TAKEN), runs the
//                          handler (the same copy) and answers with one store (seq, RESPONSE). The shape of a
//                          held slot in a CAS-based protocol: the word's line is the only control traffic.
//   floor-inline[-nopause] floor-1line with the payload inside the control line (48 bytes from offset 16) and
//                          the answer's size at offset 4, so a small request and its answer cross cores with
//                          the state change. At most 48 bytes; beyond that (and for bulk) it is n/a.
//   futex-floor            floor-2line where every wait is FUTEX_WAIT and every store is followed by
//                          FUTEX_WAKE: both peers sleep on every message.
//   floor-chunk            the large-* modes (bench.h): floor-2line's handshake moving a message larger
//                          than its buffers in chunks of the buffer size (`capacity`), one round trip per
//                          chunk, as shm's transfers do (SPECIFICATION.md §8.5) but with nothing else: no
//                          chunk header, no checks, both sides know the sizes. The caller copies each
//                          request chunk into the request buffer and stores the next sequence number; the
//                          server copies it out into its own memory and answers, with the first chunk of the
//                          answer after the last chunk of the request; the caller asks for each further
//                          answer chunk with the next number and copies it out of the response buffer. A
//                          message that fits the buffer is used in place by the server, as shm's handler
//                          sees a plain request. Its waits are shm's in shape, without the learning:
//                          PAUSE-spin for 4 us, then offer the CPU (sched_yield) between polls, and after
//                          100 us sleep on the word (FUTEX_WAIT, with a waiting flag beside the word that
//                          tells the storer to FUTEX_WAKE). A pure spin is the floor only on an idle machine:
//                          with other runnable work on the cores a spinning waiter holds off its own peer
//                          (measured: 2.9 s for a 16 MiB request in 64 KiB chunks at load 5 on 2 cores).
//   floor-chunk2           floor-chunk with two chunk buffers each way: the producer of a direction fills
//                          one while the consumer copies the other out, so the two copies of consecutive
//                          chunks overlap. Counts of chunks posted and taken replace the sequence numbers.
//                          The floor of a transfer with two slots in flight, against floor-chunk's one.
//                          Both chunked floors copy with shm::platform::CopyBytes, as shm does: glibc's
//                          memcpy is many times slower at some distances between source and destination on
//                          some CPUs (platform/copy.h), and a floor should not be slowed by that.
//
// A waiter polls its word with PAUSE between loads, or (-nopause) with nothing between them.
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace bench {
namespace {

constexpr size_t kControlBytes = 4096;
constexpr size_t kInlineOffset = 16;
static_assert(kInlineOffset + kFloorInlineMax == 64, "the inline payload ends with the control line");

size_t BufferBytes(uint64_t payload) { return (static_cast<size_t>(payload) + 63) / 64 * 64 + 64; }

enum class Layout { kTwoLines, kOneLine, kInline };
enum class Wait { kPause, kSpin, kFutex };

/// Every `kStopCheck` polls a busy server also looks at g_stop (SIGTERM), so that a caller that died without
/// telling it does not leave it spinning until SIGKILL. Rare enough to cost nothing per round trip.
constexpr uint32_t kStopCheck = 4096;

struct FloorMap {
  uint8_t* base = nullptr;
  size_t size = 0;
  std::atomic<uint32_t>* word = nullptr;        // offset 0: req (two lines) or the one control word
  std::atomic<uint32_t>* word2 = nullptr;       // offset 64: resp (two lines only)
  std::atomic<uint32_t>* size_field = nullptr;  // offset 4: the inline answer's size
  uint8_t* inline_area = nullptr;               // offset 16, 48 bytes: the inline payload
  uint8_t* req_buf = nullptr;
  uint8_t* resp_buf = nullptr;

  std::string Map(int fd, uint64_t payload) {
    size = FloorSegmentBytes(payload);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return std::string("mmap: ") + strerror(errno);
    base = static_cast<uint8_t*>(p);
    word = reinterpret_cast<std::atomic<uint32_t>*>(base);
    size_field = reinterpret_cast<std::atomic<uint32_t>*>(base + 4);
    word2 = reinterpret_cast<std::atomic<uint32_t>*>(base + 64);
    inline_area = base + kInlineOffset;
    req_buf = base + kControlBytes;
    resp_buf = req_buf + BufferBytes(payload);
    return "";
  }
  ~FloorMap() {
    if (base) munmap(base, size);
  }
};

long Futex(std::atomic<uint32_t>* w, int op, uint32_t val) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, val, nullptr, nullptr, 0);
}

template <Wait W>
inline void Relax() {
  if constexpr (W == Wait::kPause) shm::platform::CpuRelax();
}

/// Waits until *w differs from `old`. Returns false if a server was told to stop (g_stop) meanwhile.
template <Wait W>
bool WaitChange(std::atomic<uint32_t>* w, uint32_t old) {
  for (uint32_t polls = 1;; ++polls) {
    if (w->load(std::memory_order_acquire) != old) return true;
    if constexpr (W == Wait::kFutex) {
      Futex(w, FUTEX_WAIT, old);
      if (g_stop.load(std::memory_order_relaxed)) return false;
    } else {
      if (polls % kStopCheck == 0 && g_stop.load(std::memory_order_relaxed)) return false;
      Relax<W>();
    }
  }
}

template <Wait W>
void Store(std::atomic<uint32_t>* w, uint32_t v) {
  w->store(v, std::memory_order_release);
  if constexpr (W == Wait::kFutex) Futex(w, FUTEX_WAKE, INT_MAX);
}

// Two-line designs: the sequence number itself; UINT32_MAX tells the server to stop.
constexpr uint32_t kStopSeq = UINT32_MAX;

// One-line designs: the word is seq * 4 + state (seq wraps; only equality is compared). A word in state 0
// other than the initial 0 tells the server to stop.
constexpr uint32_t kRequest = 1, kTaken = 2, kResponse = 3, kStateMask = 3;
constexpr uint32_t kStopWord = ~kStateMask;
constexpr uint32_t kNoSize = UINT32_MAX;  // the caller's mark in the inline size field: no answer yet
inline uint32_t Word(uint32_t seq, uint32_t state) { return (seq << 2) | state; }

template <Layout L, Wait W>
class FloorCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    bulk_ = o.mode == "bulk";
    if constexpr (L == Layout::kInline) {
      if (bulk_) return "n/a: the inline design carries echoes only";
      if (n_ > kFloorInlineMax) {
        return "n/a: " + std::to_string(n_) + " B does not fit in the control line (at most " +
               std::to_string(kFloorInlineMax) + " B)";
      }
    }
    src_.resize(n_ + 1);
    FillPattern(src_.data(), n_);
    want_sum_ = SumWords(src_.data(), n_);
    return m_.Map(o.fd_send, o.payload);
  }

  bool Call(int) override {
    ++seq_;
    const uint8_t tag = static_cast<uint8_t>(seq_);
    uint8_t* const req = L == Layout::kInline ? m_.inline_area : m_.req_buf;
    if (n_) {
      std::memcpy(req, src_.data(), n_);
      if (!bulk_) req[0] = tag;
    }
    const uint8_t* resp = m_.resp_buf;
    size_t got = n_;
    if constexpr (L == Layout::kTwoLines) {
      Store<W>(m_.word, seq_);
      WaitChange<W>(m_.word2, seq_ - 1);
      if (m_.word2->load(std::memory_order_acquire) != seq_) return Fail("answer to another request");
    } else {
      // The request and its answer share the inline area, so the server's answer is proven by the size it
      // stores, which the caller first overwrites with a mark no answer carries.
      if constexpr (L == Layout::kInline) m_.size_field->store(kNoSize, std::memory_order_relaxed);
      m_.word->store(Word(seq_, kRequest), std::memory_order_release);
      uint32_t v;
      while (((v = m_.word->load(std::memory_order_acquire)) & kStateMask) != kResponse) Relax<W>();
      if (v != Word(seq_, kResponse)) return Fail("answer to another request");
      if constexpr (L == Layout::kInline) {
        resp = m_.inline_area;
        got = m_.size_field->load(std::memory_order_relaxed);
      }
    }
    if (bulk_) {
      uint64_t s;
      std::memcpy(&s, resp, 8);
      return s == want_sum_ || Fail("bulk checksum differs");
    }
    return EchoOk(resp, got, n_, tag, src_.data()) || Fail("echo differs");
  }

  void Close() override {
    if (!m_.base) return;
    if constexpr (L == Layout::kTwoLines) {
      Store<Wait::kFutex>(m_.word, kStopSeq);  // wakes a sleeping server; a spinning one sees it too
    } else {
      m_.word->store(kStopWord, std::memory_order_release);
    }
  }

 private:
  bool Fail(const char* what) {
    error_ = what;
    return false;
  }
  FloorMap m_;
  size_t n_ = 0;
  bool bulk_ = false;
  uint32_t seq_ = 0;
  uint64_t want_sum_ = 0;
  std::vector<uint8_t> src_;
};

/// The handler of every design but inline: echo the request, or answer the bulk request's sum.
inline void Answer(const FloorMap& m, size_t n, bool bulk) {
  if (bulk) {
    const uint64_t s = SumWords(m.req_buf, n);
    std::memcpy(m.resp_buf, &s, 8);
  } else if (n) {
    std::memcpy(m.resp_buf, m.req_buf, n);
  }
}

template <Layout L, Wait W>
class FloorServer final : public Server {
 public:
  int Run(const Options& o) override {
    const size_t n = static_cast<size_t>(o.payload);
    const bool bulk = o.mode == "bulk";
    if (L == Layout::kInline && (bulk || n > kFloorInlineMax)) return 2;  // the caller reports why
    FloorMap m;
    if (!m.Map(o.fd_recv, o.payload).empty()) return 2;
    if constexpr (L == Layout::kTwoLines) {
      uint32_t last = 0;
      for (;;) {
        if (!WaitChange<W>(m.word, last)) return 0;
        const uint32_t v = m.word->load(std::memory_order_acquire);
        if (v == kStopSeq) return 0;
        Answer(m, n, bulk);
        Store<W>(m.word2, v);
        last = v;
      }
    } else {
      for (;;) {
        uint32_t v;
        for (uint32_t polls = 1;; ++polls) {
          v = m.word->load(std::memory_order_acquire);
          if ((v & kStateMask) == kRequest) break;
          if (v == kStopWord) return 0;
          if (polls % kStopCheck == 0 && g_stop.load(std::memory_order_relaxed)) return 0;
          Relax<W>();
        }
        uint32_t expected = v;
        // The take. Only the caller's stop can race with it; the next poll sees that.
        if (!m.word->compare_exchange_strong(expected, v - kRequest + kTaken, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
          continue;
        }
        if constexpr (L == Layout::kInline) {
          // Request and answer share the area: read the request out, then write the answer back, as a handler
          // that builds its answer elsewhere would.
          uint8_t local[kFloorInlineMax];
          std::memcpy(local, m.inline_area, n);
          std::memcpy(m.inline_area, local, n);
          m.size_field->store(static_cast<uint32_t>(n), std::memory_order_relaxed);
        } else {
          Answer(m, n, bulk);
        }
        m.word->store(v - kRequest + kResponse, std::memory_order_release);
      }
    }
  }
};

// ---- floor-chunk ----------------------------------------------------------------------------------------------

inline uint32_t NextSeq(uint32_t s) { return s + 1 == kStopSeq ? 1 : s + 1; }

constexpr int64_t kChunkPureSpinNs = 4000, kChunkSpinNs = 100000;

/// The waiting flag of the control word `w`: 8 bytes after it, in its cache line.
inline std::atomic<uint32_t>* FlagOf(std::atomic<uint32_t>* w) { return w + 2; }

/// Stores `v` into `w` and wakes a waiter that sleeps on it (floor-chunk). The flag is the waiter's to clear:
/// a storer that cleared it could clear the flag of the waiter's next wait, which would then sleep unwoken.
void Post(std::atomic<uint32_t>* w, uint32_t v) {
  w->store(v, std::memory_order_seq_cst);
  if (FlagOf(w)->load(std::memory_order_seq_cst) != 0) Futex(w, FUTEX_WAKE, INT_MAX);
}

/// Await's spin, spin yielding, then sleep, leaving the word's flag set if it slept. false: g_stop.
bool AwaitSleeping(std::atomic<uint32_t>* w, uint32_t old) {
  int64_t start = 0;
  for (uint32_t polls = 1;; ++polls) {
    if (w->load(std::memory_order_acquire) != old) return true;
    shm::platform::CpuRelax();
    if (polls % 8 != 0) continue;
    const int64_t now = shm::platform::MonotonicNs();
    if (start == 0) start = now;
    if (now - start < kChunkPureSpinNs) continue;
    if (g_stop.load(std::memory_order_relaxed)) return false;
    if (now - start < kChunkSpinNs) {
      sched_yield();
      continue;
    }
    FlagOf(w)->store(1, std::memory_order_seq_cst);  // Await clears it when the wait ends
    if (w->load(std::memory_order_seq_cst) != old) return true;
    Futex(w, FUTEX_WAIT, old);  // EINTR on SIGTERM: g_stop is checked on the way round
  }
}

/// Waits until *w differs from `old` (floor-chunk). false: g_stop. One waiter per word: its flag is its own.
bool Await(std::atomic<uint32_t>* w, uint32_t old) {
  const bool changed = AwaitSleeping(w, old);
  if (FlagOf(w)->load(std::memory_order_relaxed) != 0) FlagOf(w)->store(0, std::memory_order_relaxed);
  return changed;
}

/// What the chunked floors' callers share: the message, the answer's buffer, the mapping, and the stop.
class LargeFloorCaller : public Caller {
 public:
  void Close() override {
    if (m_.base) Post(m_.word, kStopSeq);
  }

 protected:
  /// Open for transport `name` with `chunks` chunk buffers each way.
  std::string OpenLarge(const Options& o, const char* name, uint64_t chunks) {
    if (!IsLargeMode(o.mode)) return std::string("n/a: ") + name + " runs the large-* cases only";
    o_ = o;
    shape_ = ShapeOf(o);
    c_ = static_cast<size_t>(o.capacity);
    src_.resize(shape_.req);
    FillPattern(src_.data(), shape_.req);
    dst_.resize(shape_.resp);
    FillPattern(dst_.data(), shape_.resp);  // touched before the window
    return m_.Map(o.fd_send, chunks * o.capacity);
  }
  bool Fail(const char* what) {
    error_ = what;
    return false;
  }
  Options o_;
  LargeShape shape_;
  size_t c_ = 0;
  FloorMap m_;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_, dst_;
};

class ChunkFloorCaller final : public LargeFloorCaller {
 public:
  std::string Open(const Options& o) override { return OpenLarge(o, "floor-chunk", 1); }

  bool Call(int) override {
    src_[0] = static_cast<uint8_t>(++calls_);
    // The request, chunk by chunk; the last chunk's round trip brings the first chunk of the answer.
    for (size_t off = 0; off < shape_.req; off += c_) {
      shm::platform::CopyBytes(m_.req_buf, src_.data() + off, std::min(c_, shape_.req - off));
      if (!RoundTrip()) return false;
    }
    // The answer: the first chunk is there, each further one costs a round trip.
    for (size_t off = 0; off < shape_.resp; off += c_) {
      if (off > 0 && !RoundTrip()) return false;
      shm::platform::CopyBytes(dst_.data() + off, m_.resp_buf, std::min(c_, shape_.resp - off));
    }
    return LargeAnswerOk(o_, dst_.data(), shape_.resp, src_.data()) || Fail("answer differs");
  }

 private:
  bool RoundTrip() {
    const uint32_t prev = seq_;
    seq_ = NextSeq(seq_);
    Post(m_.word, seq_);
    Await(m_.word2, prev);
    return m_.word2->load(std::memory_order_acquire) == seq_ || Fail("answer to another request");
  }
  uint32_t seq_ = 0;
};

class ChunkFloorServer final : public Server {
 public:
  int Run(const Options& o) override {
    if (!IsLargeMode(o.mode)) return 2;
    const LargeShape shape = ShapeOf(o);
    const size_t c = static_cast<size_t>(o.capacity);
    FloorMap m;
    if (!m.Map(o.fd_recv, o.capacity).empty()) return 2;
    // The assembled request (when it does not fit the buffer), the pattern answer of large-resp, the small
    // answer of large-req.
    std::vector<uint8_t> msg(shape.req > c ? shape.req : 0);
    std::vector<uint8_t> pattern(o.mode == "large-resp" ? shape.resp : 0);
    FillPattern(pattern.data(), pattern.size());
    FillPattern(msg.data(), msg.size());  // touched before the window, as the caller's buffers
    uint8_t small[kLargeSmallSide];
    size_t in = 0, out = 0;  // request bytes received, answer bytes sent, of the message in progress
    const uint8_t* answer = nullptr;
    uint32_t last = 0;
    for (;;) {
      if (!Await(m.word, last)) return 0;
      const uint32_t v = m.word->load(std::memory_order_acquire);
      if (v == kStopSeq) return 0;
      if (in < shape.req) {
        const size_t len = std::min(c, shape.req - in);
        if (!msg.empty()) shm::platform::CopyBytes(msg.data() + in, m.req_buf, len);
        in += len;
        if (in == shape.req) {
          const uint8_t* req = msg.empty() ? m.req_buf : msg.data();
          answer = LargeAnswer(o, req, shape.req, pattern.data(), small);
        }
      }
      if (in == shape.req) {  // the request is whole: send the next chunk of the answer
        const size_t len = std::min(c, shape.resp - out);
        shm::platform::CopyBytes(m.resp_buf, answer + out, len);
        out += len;
        if (out == shape.resp) in = out = 0;
      }
      Post(m.word2, v);
      last = v;
    }
  }
};

// ---- floor-chunk2: two chunks in flight -------------------------------------------------------------------

/// Waits until the count in `w` (which only grows, and never reaches kStopSeq) is at least `want`, or the
/// peer stored kStopSeq. false: g_stop or kStopSeq.
bool AwaitCount(std::atomic<uint32_t>* w, uint32_t want) {
  for (uint32_t v = w->load(std::memory_order_acquire);; v = w->load(std::memory_order_acquire)) {
    if (v == kStopSeq) return false;
    if (v >= want) return true;
    if (!Await(w, v)) return false;
  }
}

/// floor-chunk2's control words: each direction is a pipe of two chunk buffers with a count of chunks
/// posted (by the producer) and a count consumed (by the consumer), each alone in its line, with its waiting
/// flag beside it. Counts run on across messages.
struct Pipes {
  std::atomic<uint32_t>* req_posted;   // offset 0, caller
  std::atomic<uint32_t>* req_taken;    // offset 64, server
  std::atomic<uint32_t>* resp_posted;  // offset 128, server
  std::atomic<uint32_t>* resp_taken;   // offset 192, caller
  explicit Pipes(const FloorMap& m)
      : req_posted(m.word),
        req_taken(m.word2),
        resp_posted(reinterpret_cast<std::atomic<uint32_t>*>(m.base + 128)),
        resp_taken(reinterpret_cast<std::atomic<uint32_t>*>(m.base + 192)) {}
};

/// Producer side of a pipe: copies `n` bytes from `src` in chunks of `c` into the two buffers at `buf`,
/// waiting for a buffer only while the consumer still holds both. `count`: chunks posted so far.
bool Produce(std::atomic<uint32_t>* posted, std::atomic<uint32_t>* taken, uint8_t* buf, size_t c, const uint8_t* src,
             size_t n, uint32_t& count) {
  for (size_t off = 0; off < n; off += c) {
    if (count >= 2 && !AwaitCount(taken, count - 1)) return false;  // buffer count % 2 is free again
    shm::platform::CopyBytes(buf + (count % 2) * c, src + off, std::min(c, n - off));
    Post(posted, ++count);
  }
  return true;
}

/// Consumer side: copies `n` bytes in chunks of `c` out of the two buffers into `dst` (nullptr: a message of
/// one chunk is used in place, and `*in_place` points at it). `count`: chunks taken so far.
bool Consume(std::atomic<uint32_t>* posted, std::atomic<uint32_t>* taken, const uint8_t* buf, size_t c, uint8_t* dst,
             size_t n, uint32_t& count, const uint8_t** in_place) {
  for (size_t off = 0; off < n; off += c) {
    if (!AwaitCount(posted, count + 1)) return false;
    const uint8_t* chunk = buf + (count % 2) * c;
    if (dst) {
      shm::platform::CopyBytes(dst + off, chunk, std::min(c, n - off));
    } else {
      *in_place = chunk;  // the caller is done with it before it posts the count
      return true;
    }
    Post(taken, ++count);
  }
  return true;
}

/// floor-chunk with two chunk buffers each way instead of one: the producer fills the next chunk while the
/// consumer copies out the previous one, so that the two copies of a chunk overlap (the design of a transfer
/// that keeps two slots in flight). The same waits, the same checks.
class PipeFloorCaller final : public LargeFloorCaller {
 public:
  std::string Open(const Options& o) override {
    std::string e = OpenLarge(o, "floor-chunk2", 2);
    if (e.empty()) p_.reset(new Pipes(m_));
    return e;
  }

  bool Call(int) override {
    src_[0] = static_cast<uint8_t>(++calls_);
    if (!Produce(p_->req_posted, p_->req_taken, m_.req_buf, c_, src_.data(), shape_.req, posted_) ||
        !Consume(p_->resp_posted, p_->resp_taken, m_.resp_buf, c_, dst_.data(), shape_.resp, taken_, nullptr)) {
      return Fail("stopped");
    }
    return LargeAnswerOk(o_, dst_.data(), shape_.resp, src_.data()) || Fail("answer differs");
  }

 private:
  std::unique_ptr<Pipes> p_;
  uint32_t posted_ = 0, taken_ = 0;
};

class PipeFloorServer final : public Server {
 public:
  int Run(const Options& o) override {
    if (!IsLargeMode(o.mode)) return 2;
    const LargeShape shape = ShapeOf(o);
    const size_t c = static_cast<size_t>(o.capacity);
    FloorMap m;
    if (!m.Map(o.fd_recv, 2 * o.capacity).empty()) return 2;
    const Pipes p(m);
    std::vector<uint8_t> msg(shape.req > c ? shape.req : 0);
    std::vector<uint8_t> pattern(o.mode == "large-resp" ? shape.resp : 0);
    FillPattern(pattern.data(), pattern.size());
    FillPattern(msg.data(), msg.size());
    uint8_t small[kLargeSmallSide];
    uint32_t taken = 0, posted = 0;
    for (;;) {
      const uint8_t* req = nullptr;
      if (!Consume(p.req_posted, p.req_taken, m.req_buf, c, msg.empty() ? nullptr : msg.data(), shape.req, taken,
                   &req)) {
        return 0;
      }
      if (!msg.empty()) req = msg.data();
      const uint8_t* answer = LargeAnswer(o, req, shape.req, pattern.data(), small);
      if (!Produce(p.resp_posted, p.resp_taken, m.resp_buf, c, answer, shape.resp, posted)) return 0;
      if (msg.empty()) Post(p.req_taken, ++taken);  // the in-place request (and an echo of it) is done
    }
  }
};

template <template <Layout, Wait> class T, typename Base>
std::unique_ptr<Base> MakeFloor(const std::string& t) {
  if (t == "floor-2line") return std::make_unique<T<Layout::kTwoLines, Wait::kPause>>();
  if (t == "floor-2line-nopause") return std::make_unique<T<Layout::kTwoLines, Wait::kSpin>>();
  if (t == "floor-1line") return std::make_unique<T<Layout::kOneLine, Wait::kPause>>();
  if (t == "floor-1line-nopause") return std::make_unique<T<Layout::kOneLine, Wait::kSpin>>();
  if (t == "floor-inline") return std::make_unique<T<Layout::kInline, Wait::kPause>>();
  if (t == "floor-inline-nopause") return std::make_unique<T<Layout::kInline, Wait::kSpin>>();
  if (t == "futex-floor") return std::make_unique<T<Layout::kTwoLines, Wait::kFutex>>();
  return nullptr;
}

}  // namespace

size_t FloorSegmentBytes(uint64_t payload) { return kControlBytes + 2 * BufferBytes(payload); }

bool IsMemfdFloor(const std::string& t) { return t == "futex-floor" || t.rfind("floor-", 0) == 0; }

std::unique_ptr<Caller> MakeFloorCaller(const std::string& t) {
  if (t == "floor-chunk") return std::make_unique<ChunkFloorCaller>();
  if (t == "floor-chunk2") return std::make_unique<PipeFloorCaller>();
  return MakeFloor<FloorCaller, Caller>(t);
}

std::unique_ptr<Server> MakeFloorServer(const std::string& t) {
  if (t == "floor-chunk") return std::make_unique<ChunkFloorServer>();
  if (t == "floor-chunk2") return std::make_unique<PipeFloorServer>();
  return MakeFloor<FloorServer, Server>(t);
}

}  // namespace bench

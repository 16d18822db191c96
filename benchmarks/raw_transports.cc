// SPDX-License-Identifier: Apache-2.0
// shm-bench — baselines that need no library: the shared-memory spin floor, the futex floor, Unix domain
// sockets, a pipe pair, and an in-process memcpy.
#include <errno.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace bench {
namespace {

// ---- Floors: two control words, each alone in its cache line, in a memfd both processes map -----------------
//
// Offset 0: req (caller -> server), offset 64: resp (server -> caller), offset 4096: request buffer, then the
// response buffer. The caller writes the request bytes, then stores a new sequence number in req (release); the
// server copies the request into the response buffer and stores the same number in resp. The spin floor waits
// by polling with PAUSE; the futex floor always sleeps in FUTEX_WAIT and the writer always calls FUTEX_WAKE.
constexpr uint32_t kStopSeq = UINT32_MAX;
constexpr size_t kFloorBuffers = 4096;

size_t FloorBufferBytes(uint64_t payload) { return (static_cast<size_t>(payload) + 63) / 64 * 64 + 64; }

struct FloorMap {
  uint8_t* base = nullptr;
  size_t size = 0;
  std::atomic<uint32_t>* req = nullptr;
  std::atomic<uint32_t>* resp = nullptr;
  uint8_t* req_buf = nullptr;
  uint8_t* resp_buf = nullptr;

  std::string Map(int fd, uint64_t payload) {
    size = kFloorBuffers + 2 * FloorBufferBytes(payload);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return std::string("mmap: ") + strerror(errno);
    base = static_cast<uint8_t*>(p);
    req = reinterpret_cast<std::atomic<uint32_t>*>(base);
    resp = reinterpret_cast<std::atomic<uint32_t>*>(base + 64);
    req_buf = base + kFloorBuffers;
    resp_buf = req_buf + FloorBufferBytes(payload);
    return "";
  }
  ~FloorMap() {
    if (base) munmap(base, size);
  }
};

long Futex(std::atomic<uint32_t>* w, int op, uint32_t val) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, val, nullptr, nullptr, 0);
}

template <bool kSleep>
void WaitChange(std::atomic<uint32_t>* w, uint32_t old) {
  for (;;) {
    if (w->load(std::memory_order_acquire) != old) return;
    if (kSleep) {
      Futex(w, FUTEX_WAIT, old);
    } else {
      shm::platform::CpuRelax();
    }
  }
}

template <bool kSleep>
void Store(std::atomic<uint32_t>* w, uint32_t v) {
  w->store(v, std::memory_order_release);
  if (kSleep) Futex(w, FUTEX_WAKE, INT_MAX);
}

template <bool kSleep>
class FloorCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    bulk_ = o.mode == "bulk";
    src_.resize(n_ + 1);
    FillPattern(src_.data(), n_);
    want_sum_ = SumWords(src_.data(), n_);
    return m_.Map(o.fd_send, o.payload);
  }
  bool Call(int) override {
    ++seq_;
    const uint8_t tag = static_cast<uint8_t>(seq_);
    if (n_) {
      std::memcpy(m_.req_buf, src_.data(), n_);
      if (!bulk_) m_.req_buf[0] = tag;
    }
    Store<kSleep>(m_.req, seq_);
    WaitChange<kSleep>(m_.resp, seq_ - 1);
    if (m_.resp->load(std::memory_order_acquire) != seq_) return Fail("answer to another request");
    if (bulk_) {
      uint64_t s;
      std::memcpy(&s, m_.resp_buf, 8);
      return s == want_sum_ || Fail("bulk checksum differs");
    }
    return EchoOk(m_.resp_buf, n_, n_, tag, src_.data()) || Fail("echo differs");
  }
  void Close() override {
    if (m_.base) Store<true>(m_.req, kStopSeq);  // a spinning server sees it too
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

template <bool kSleep>
class FloorServer final : public Server {
 public:
  int Run(const Options& o) override {
    FloorMap m;
    if (!m.Map(o.fd_recv, o.payload).empty()) return 2;
    const size_t n = static_cast<size_t>(o.payload);
    const bool bulk = o.mode == "bulk";
    uint32_t last = 0;
    for (;;) {
      WaitChange<kSleep>(m.req, last);
      const uint32_t v = m.req->load(std::memory_order_acquire);
      if (v == kStopSeq) return 0;
      if (bulk) {
        const uint64_t s = SumWords(m.req_buf, n);
        std::memcpy(m.resp_buf, &s, 8);
      } else if (n) {
        std::memcpy(m.resp_buf, m.req_buf, n);
      }
      Store<kSleep>(m.resp, v);
      last = v;
    }
  }
};

// ---- Sockets and pipes: the caller writes the request, the server reads it whole and writes it back -------------

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadAll(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (r == 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

/// SOCK_SEQPACKET: one send, one recv per message (the message boundary is kept).
bool SendMsg(int fd, const uint8_t* p, size_t n) {
  for (;;) {
    ssize_t w = send(fd, p, n, 0);
    if (w >= 0) return static_cast<size_t>(w) == n;
    if (errno != EINTR) return false;
  }
}

ssize_t RecvMsg(int fd, uint8_t* p, size_t cap) {
  for (;;) {
    ssize_t r = recv(fd, p, cap, 0);
    if (r >= 0 || errno != EINTR) return r;
  }
}

void GrowSocketBuffers(int fd, size_t n) {
  int want = static_cast<int>(std::min<size_t>(2 * n + 65536, INT_MAX / 2));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof want);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
}

class StreamCaller final : public Caller {
 public:
  explicit StreamCaller(bool seqpacket) : seqpacket_(seqpacket) {}
  std::string Open(const Options& o) override {
    n_ = WireBytes(o, false);
    src_.resize(n_);
    dst_.resize(n_ + 1);
    FillPattern(src_.data(), n_);
    send_ = o.fd_send;
    recv_ = o.fd_recv;
    if (seqpacket_) GrowSocketBuffers(send_, n_);
    return "";
  }
  bool Call(int) override {
    const uint8_t tag = static_cast<uint8_t>(++calls_);
    src_[0] = tag;
    if (seqpacket_) {
      if (!SendMsg(send_, src_.data(), n_)) return Fail("send");
      ssize_t r = RecvMsg(recv_, dst_.data(), dst_.size());
      if (r < 0) return Fail("recv");
      return EchoOk(dst_.data(), static_cast<size_t>(r), n_, tag, src_.data()) || Fail("echo differs");
    }
    if (!WriteAll(send_, src_.data(), n_)) return Fail("write");
    if (!ReadAll(recv_, dst_.data(), n_)) return Fail("read");
    return EchoOk(dst_.data(), n_, n_, tag, src_.data()) || Fail("echo differs");
  }
  void Close() override {
    close(send_);
    if (recv_ != send_) close(recv_);
  }

 private:
  bool Fail(const char* what) {
    error_ = std::string(what) + ": " +
             (errno == EMSGSIZE ? "message larger than the socket buffer allows (EMSGSIZE)" : strerror(errno));
    return false;
  }
  bool seqpacket_;
  size_t n_ = 0;
  int send_ = -1, recv_ = -1;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_, dst_;
};

class StreamServer final : public Server {
 public:
  explicit StreamServer(bool seqpacket) : seqpacket_(seqpacket) {}
  int Run(const Options& o) override {
    const size_t n = WireBytes(o, false);
    std::vector<uint8_t> buf(n + 1);
    if (seqpacket_) GrowSocketBuffers(o.fd_send, n);
    for (;;) {
      if (seqpacket_) {
        ssize_t r = RecvMsg(o.fd_recv, buf.data(), buf.size());
        if (r <= 0) return 0;  // the caller closed its end
        if (!SendMsg(o.fd_send, buf.data(), static_cast<size_t>(r))) return 0;
      } else {
        if (!ReadAll(o.fd_recv, buf.data(), n)) return 0;
        if (!WriteAll(o.fd_send, buf.data(), n)) return 0;
      }
    }
  }

 private:
  bool seqpacket_;
};

// ---- memcpy: the bandwidth reference for the 1 MiB bulk case (no server) ----------------------------------------
class MemcpyCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    src_.resize(n_ + 64);
    dst_.resize(n_ + 64);
    FillPattern(src_.data(), n_);
    return "";
  }
  bool Call(int) override {
    std::memcpy(dst_.data(), src_.data(), n_);
    asm volatile("" : : "r"(dst_.data()) : "memory");  // keep the copy
    return true;
  }

 private:
  size_t n_ = 0;
  std::vector<uint8_t> src_, dst_;
};

}  // namespace

size_t FloorSegmentBytes(uint64_t payload) { return kFloorBuffers + 2 * FloorBufferBytes(payload); }

std::unique_ptr<Caller> MakeRawCaller(const std::string& t) {
  if (t == "spin-floor") return std::make_unique<FloorCaller<false>>();
  if (t == "futex-floor") return std::make_unique<FloorCaller<true>>();
  if (t == "uds-seqpacket") return std::make_unique<StreamCaller>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamCaller>(false);
  if (t == "memcpy") return std::make_unique<MemcpyCaller>();
  return nullptr;
}

std::unique_ptr<Server> MakeRawServer(const std::string& t) {
  if (t == "spin-floor") return std::make_unique<FloorServer<false>>();
  if (t == "futex-floor") return std::make_unique<FloorServer<true>>();
  if (t == "uds-seqpacket") return std::make_unique<StreamServer>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamServer>(false);
  return nullptr;
}

}  // namespace bench

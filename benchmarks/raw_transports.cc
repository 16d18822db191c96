// SPDX-License-Identifier: Apache-2.0
// shm-bench — baselines that need no library: Unix domain sockets, a pipe pair, and an in-process memcpy. The
// shared-memory floors are in floor_transports.cc.
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"

namespace bench {
namespace {

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

/// The large-* modes over a byte stream: write the request whole, read the answer whole (bench.h).
class LargeStreamCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    o_ = o;
    shape_ = ShapeOf(o);
    src_.resize(shape_.req);
    FillPattern(src_.data(), shape_.req);
    dst_.resize(shape_.resp);
    FillPattern(dst_.data(), shape_.resp);  // touched before the window
    send_ = o.fd_send;
    recv_ = o.fd_recv;
    return "";
  }
  bool Call(int) override {
    src_[0] = static_cast<uint8_t>(++calls_);
    if (!WriteAll(send_, src_.data(), shape_.req)) return Fail("write");
    if (!ReadAll(recv_, dst_.data(), shape_.resp)) return Fail("read");
    return LargeAnswerOk(o_, dst_.data(), shape_.resp, src_.data()) || Fail("answer differs");
  }
  void Close() override {
    close(send_);
    if (recv_ != send_) close(recv_);
  }

 private:
  bool Fail(const char* what) {
    error_ = std::string(what) + ": " + strerror(errno);
    return false;
  }
  Options o_;
  LargeShape shape_;
  int send_ = -1, recv_ = -1;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_, dst_;
};

class LargeStreamServer final : public Server {
 public:
  int Run(const Options& o) override {
    const LargeShape shape = ShapeOf(o);
    std::vector<uint8_t> req(shape.req), pattern(o.mode == "large-resp" ? shape.resp : 0);
    FillPattern(req.data(), req.size());
    FillPattern(pattern.data(), pattern.size());
    uint8_t small[kLargeSmallSide];
    for (;;) {
      if (!ReadAll(o.fd_recv, req.data(), shape.req)) return 0;  // the caller closed its end
      const uint8_t* answer = LargeAnswer(o, req.data(), shape.req, pattern.data(), small);
      if (!WriteAll(o.fd_send, answer, shape.resp)) return 0;
    }
  }
};

// ---- memcpy: the bandwidth reference for the bulk and large cases (no server) --------------------------------
// Bulk: one copy of the payload. Large: one copy of the request's bytes and one of the answer's (large-both
// moves 2 N bytes per round trip, as the transports do).
class MemcpyCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    if (IsLargeMode(o.mode)) {
      const LargeShape s = ShapeOf(o);
      req_ = s.req;
      resp_ = s.resp;
    } else {
      req_ = n_;
      resp_ = 0;
    }
    src_.resize(n_ + 64);
    dst_.resize(n_ + 64);
    FillPattern(src_.data(), n_);
    return "";
  }
  bool Call(int) override {
    std::memcpy(dst_.data(), src_.data(), req_);
    asm volatile("" : : "r"(dst_.data()) : "memory");  // keep the copy
    if (resp_) {
      std::memcpy(src_.data(), dst_.data(), resp_);
      asm volatile("" : : "r"(src_.data()) : "memory");
    }
    return true;
  }

 private:
  size_t n_ = 0, req_ = 0, resp_ = 0;
  std::vector<uint8_t> src_, dst_;
};

}  // namespace

std::unique_ptr<Caller> MakeRawCaller(const Options& o) {
  const std::string& t = o.transport;
  if (IsLargeMode(o.mode) && t == "uds-stream") return std::make_unique<LargeStreamCaller>();
  if (t == "uds-seqpacket") return std::make_unique<StreamCaller>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamCaller>(false);
  if (t == "memcpy") return std::make_unique<MemcpyCaller>();
  return MakeFloorCaller(t);
}

std::unique_ptr<Server> MakeRawServer(const Options& o) {
  const std::string& t = o.transport;
  if (IsLargeMode(o.mode) && t == "uds-stream") return std::make_unique<LargeStreamServer>();
  if (t == "uds-seqpacket") return std::make_unique<StreamServer>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamServer>(false);
  return MakeFloorServer(t);
}

}  // namespace bench

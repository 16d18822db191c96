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

std::unique_ptr<Caller> MakeRawCaller(const std::string& t) {
  if (t == "uds-seqpacket") return std::make_unique<StreamCaller>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamCaller>(false);
  if (t == "memcpy") return std::make_unique<MemcpyCaller>();
  return MakeFloorCaller(t);
}

std::unique_ptr<Server> MakeRawServer(const std::string& t) {
  if (t == "uds-seqpacket") return std::make_unique<StreamServer>(true);
  if (t == "uds-stream" || t == "pipe") return std::make_unique<StreamServer>(false);
  return MakeFloorServer(t);
}

}  // namespace bench

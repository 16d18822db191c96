// SPDX-License-Identifier: Apache-2.0
// Linux rendezvous: a SOCK_SEQPACKET Unix socket in the abstract namespace at "\0shm/<name>". Binding it is
// the one-host rule (the kernel refuses a second bind and frees the address when its socket closes, also when
// the process dies); a connection carries the attach handshake and the segment's descriptor (SCM_RIGHTS), and
// then proves the guest's and the host's liveness until one end closes. See SPECIFICATION.md §1–§4.
#pragma once

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shm/error.h"
#include "shm/platform/linux/clock.h"
#include "shm/platform/linux/file.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

namespace shm {
namespace platform {

/// Who is at the other end of a connection, as the kernel recorded it at connect() (or listen()) time.
struct PeerCredentials {
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  ///< Supplementary groups (SO_PEERGROUPS); empty if not asked for.
};

namespace internal {
inline socklen_t RendezvousAddress(std::string_view name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  static constexpr char kPrefix[] = "shm/";
  // sun_path[0] stays NUL: the abstract namespace. No terminating NUL: the length says where it ends.
  std::memcpy(addr->sun_path + 1, kPrefix, sizeof kPrefix - 1);
  std::memcpy(addr->sun_path + 1 + sizeof kPrefix - 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + (sizeof kPrefix - 1) + name.size());
}

// Non-blocking: a listener that poll() said was readable must not block in accept() when the connection has
// gone meanwhile, and a connect() to a host whose backlog is full (or that never accepts) must not hang.
inline Result<File> NewSocket() {
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SysError("socket", errno);
  return File(fd);
}
}  // namespace internal

/// This process's effective user and group: the owner class of a host's admission policy.
inline uint32_t EffectiveUserId() noexcept { return static_cast<uint32_t>(::geteuid()); }
inline uint32_t EffectiveGroupId() noexcept { return static_cast<uint32_t>(::getegid()); }

/// The label a host gives its segment's memfd (shows in /proc/<pid>/fd and maps as "memfd:shm/<name>").
inline std::string SegmentLabel(std::string_view name) { return "shm/" + std::string(name); }

/// The credentials of the peer of connected socket `conn`; with its supplementary groups if `with_groups`.
inline Result<PeerCredentials> PeerCredentialsOf(const File& conn, bool with_groups) {
  ucred c{};
  socklen_t len = sizeof c;
  if (::getsockopt(conn.fd(), SOL_SOCKET, SO_PEERCRED, &c, &len) != 0) return SysError("SO_PEERCRED", errno);
  PeerCredentials p;
  p.pid = static_cast<uint32_t>(c.pid);
  p.uid = static_cast<uint32_t>(c.uid);
  p.gid = static_cast<uint32_t>(c.gid);
  if (with_groups) {
    std::vector<gid_t> groups(64);
    for (;;) {
      socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
      if (::getsockopt(conn.fd(), SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
        groups.resize(glen / sizeof(gid_t));
        break;
      }
      if (errno != ERANGE || groups.size() >= 65536) {
        groups.clear();  // an old kernel: the primary gid alone decides
        break;
      }
      groups.resize(groups.size() * 4);
    }
    p.groups.assign(groups.begin(), groups.end());
  }
  return p;
}

/// Connect to the rendezvous of `name`. kNotFound when nobody listens there (yet).
inline Result<File> ConnectRendezvous(std::string_view name) {
  auto s = internal::NewSocket();
  if (!s) return std::move(s).error();
  sockaddr_un addr;
  const socklen_t len = internal::RendezvousAddress(name, &addr);
  for (;;) {
    if (::connect(s->fd(), reinterpret_cast<const sockaddr*>(&addr), len) == 0) return std::move(*s);
    const int err = errno;
    if (err == EINTR) continue;
    if (err == ECONNREFUSED || err == ENOENT || err == EAGAIN) {
      return Error(ErrorCode::kNotFound, "no host listens for segment " + std::string(name));
    }
    return SysError("connect to segment " + std::string(name), err);
  }
}

/// Bind and listen on the rendezvous of `name` (SPECIFICATION.md §3 steps 1–2). kHostAlreadyRunning when the
/// name is held, naming the holder's pid and uid as the kernel recorded them.
inline Result<File> ListenRendezvous(std::string_view name) {
  auto s = internal::NewSocket();
  if (!s) return std::move(s).error();
  sockaddr_un addr;
  const socklen_t len = internal::RendezvousAddress(name, &addr);
  if (::bind(s->fd(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    if (err != EADDRINUSE) return SysError("bind segment name " + std::string(name), err);
    // The holder accepts at once (even while it builds its segment); retry briefly across the instant between
    // its bind and its listen, or a momentarily full backlog.
    auto probe = ConnectRendezvous(name);
    for (int i = 0; !probe && i < 200; ++i) {
      SleepNs(5000000);
      probe = ConnectRendezvous(name);
    }
    if (!probe) {
      return Error(ErrorCode::kHostAlreadyRunning,
                   "segment " + std::string(name) + " is held by a process that does not accept connections");
    }
    auto who = PeerCredentialsOf(*probe, false);
    if (!who) return Error(ErrorCode::kHostAlreadyRunning, "segment " + std::string(name) + " is held");
    std::string m = "segment " + std::string(name) + " is held by live host pid " + std::to_string(who->pid) +
                    " (uid " + std::to_string(who->uid) + ")";
    if (who->uid != static_cast<uint32_t>(::geteuid())) m += ", a process of another user";
    return Error(ErrorCode::kHostAlreadyRunning, m);
  }
  if (::listen(s->fd(), 64) != 0) return SysError("listen", errno);
  return std::move(*s);
}

/// Accept one pending connection of listener `l`, without blocking. An invalid File when none is pending.
inline Result<File> AcceptConnection(const File& l) {
  for (;;) {
    int fd = ::accept4(l.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) return File(fd);
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED || err == EPROTO) return File();
    return SysError("accept", err);
  }
}

/// Wait until `f` is readable (or hung up), at most until `deadline_ns` (CLOCK_MONOTONIC). false on timeout.
inline bool WaitReadable(const File& f, int64_t deadline_ns) {
  for (;;) {
    const int64_t now = MonotonicNs();
    if (now >= deadline_ns) return false;
    const int64_t ms = (deadline_ns - now + 999999) / 1000000;
    pollfd p{f.fd(), POLLIN, 0};
    const int rc = ::poll(&p, 1, ms > 1000000 ? 1000000 : static_cast<int>(ms));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return true;  // let the read report the error
  }
}

/// One received record.
struct Record {
  size_t size = 0;          ///< Its length (0: end of file). May exceed the buffer: see `truncated`.
  bool truncated = false;   ///< Longer than the buffer, or control data (descriptors) cut off.
  std::vector<File> files;  ///< Every descriptor it carried (closed with the Record unless moved out).
};

/// Receive one record of at most `n` bytes without blocking. kTimeout-free: EAGAIN is kNotFound ("nothing
/// yet"). Descriptors arrive close-on-exec.
inline Result<Record> ReceiveRecord(const File& conn, void* buf, size_t n) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  iovec iov{buf, n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r;
  bool reset_seen = false;
  for (;;) {
    r = ::recvmsg(conn.fd(), &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT | MSG_TRUNC);
    if (r >= 0 || errno == EINTR) {
      if (r >= 0) break;
      continue;
    }
    // A peer that closed with a record of ours unread (a host refusing before it read the hello) leaves a
    // pending ECONNRESET, which the kernel reports once, before the records still queued here: look again.
    if (errno == ECONNRESET && !reset_seen) {
      reset_seen = true;
      continue;
    }
    break;
  }
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (reset_seen) return Record{};  // nothing was queued behind the reset: the peer is gone
      return Error(ErrorCode::kNotFound, "no record yet");
    }
    if (errno == ECONNRESET || errno == EPIPE) return Record{};
    return SysError("recvmsg", errno);
  }
  Record rec;
  rec.size = static_cast<size_t>(r);
  rec.truncated = rec.size > n || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      rec.files.emplace_back(fd);
    }
  }
  return rec;
}

/// Send one record, with the descriptor of `attach` attached unless it is null. Never blocks, never raises
/// SIGPIPE.
inline Result<void> SendRecord(const File& conn, const void* buf, size_t n, const File* attach = nullptr) {
  const int fd = attach != nullptr ? attach->fd() : -1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  iovec iov{const_cast<void*>(buf), n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (fd >= 0) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t r;
  do {
    r = ::sendmsg(conn.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return SysError("sendmsg", errno);
  if (static_cast<size_t>(r) != n) return Error(ErrorCode::kSystem, "sendmsg sent a partial record");
  return Ok();
}

/// Whether the peer of connection `conn` is gone (end of file, reset). A system call; never on the hot path.
/// When the check itself fails for another reason the peer counts as alive: deadlines still bound every wait.
inline bool ConnectionClosed(const File& conn) noexcept {
  char b;
  ssize_t r;
  do {
    r = ::recv(conn.fd(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return true;
  return r < 0 && (errno == ECONNRESET || errno == EPIPE || errno == ENOTCONN);
}

/// End both directions of `conn` without closing the descriptor (other threads may still test it): the peer
/// sees end of file at once.
inline void ShutdownConnection(const File& conn) noexcept {
  if (conn.valid()) (void)::shutdown(conn.fd(), SHUT_RDWR);
}

/// A wake-up for a thread sleeping in poll(): Signal() makes it readable. Thread-safe.
class Wakeup {
 public:
  Result<void> Open() {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) return SysError("eventfd", errno);
    file_ = File(fd);
    return Ok();
  }
  /// Consume the signals so far (poll() then sleeps again).
  void Drain() noexcept {
    uint64_t n;
    ssize_t r = ::read(file_.fd(), &n, sizeof n);
    (void)r;
  }
  void Signal() noexcept {
    const uint64_t one = 1;
    ssize_t r = ::write(file_.fd(), &one, sizeof one);
    (void)r;
  }
  const File& file() const noexcept { return file_; }

 private:
  File file_;
};

/// Sleep until one of `fds` has an event (POLLIN, hang-up, error), at most timeout_ms (-1: no limit).
/// `revents[i]` gets the events of fds[i] (0 if none). Negative fds are ignored.
inline void PollFiles(const Handle* fds, short* revents, size_t n, int timeout_ms) {
  pollfd p[4];
  const size_t k = n < 4 ? n : 4;
  for (size_t i = 0; i < k; ++i) p[i] = pollfd{fds[i], static_cast<short>(POLLIN | POLLRDHUP), 0};
  int rc;
  do {
    rc = ::poll(p, static_cast<nfds_t>(k), timeout_ms);
  } while (rc < 0 && errno == EINTR);
  for (size_t i = 0; i < k; ++i) revents[i] = rc > 0 ? p[i].revents : short{0};
}

}  // namespace platform
}  // namespace shm

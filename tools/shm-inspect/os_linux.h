// SPDX-License-Identifier: Apache-2.0
// shm-inspect's Linux part: everything that asks the kernel. Finding the names (the abstract sockets in
// /proc/net/unix), proving the host alive (its listening socket exists; the kernel closes it when the
// process dies), receiving a read-only descriptor of the segment as an OBSERVER (SPECIFICATION.md §4.1 step 3:
// no guest seat, no lock, nothing written), mapping it read-only, and the terminal of --watch. A port adds an
// os_<name>.h with the same functions; snapshot.h and render.h stay as they are.
#pragma once

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "render.h"
#include "shm/config.h"
#include "shm/platform/platform.h"
#include "shm/wire/layout.h"

namespace shm_inspect {
namespace os {

/// A line of /proc/net/unix whose address is a segment's rendezvous ("@shm/<name>").
struct NameSocket {
  std::string name;
  bool listening = false;  ///< The host's listening socket (__SO_ACCEPTCON).
  bool connected = false;  ///< A connection the host accepted (SS_CONNECTED): a guest seat or an observer.
  uint64_t inode = 0;
};

/// Every socket bound to a segment name, as the kernel lists them. Read-only; needs no rights over the host.
inline std::vector<NameSocket> ReadNameSockets() {
  std::vector<NameSocket> out;
  std::ifstream in("/proc/net/unix");
  std::string line;
  std::getline(in, line);  // the column titles
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string num, refs, proto, flags, type, st, inode, path;
    if (!(f >> num >> refs >> proto >> flags >> type >> st >> inode >> path)) continue;
    static const std::string kPrefix = "@shm/";
    if (path.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    NameSocket s;
    s.name = path.substr(kPrefix.size());
    if (!shm::ValidateName(s.name)) continue;  // not one of ours (or the kernel showed a NUL as '@')
    const unsigned long fl = std::strtoul(flags.c_str(), nullptr, 16);
    const unsigned long state = std::strtoul(st.c_str(), nullptr, 16);
    s.listening = (fl & 0x10000ul) != 0;
    s.connected = state == 3;
    s.inode = std::strtoull(inode.c_str(), nullptr, 10);
    out.push_back(s);
  }
  return out;
}

/// The listening socket of `name` (inode; 0 if none) and how many connections to it the host holds.
inline uint64_t ListenerOf(const std::string& name, int* connections) {
  uint64_t inode = 0;
  int n = 0;
  for (const NameSocket& s : ReadNameSockets()) {
    if (s.name != name) continue;
    if (s.listening) inode = s.inode;
    if (s.connected) ++n;
  }
  if (connections) *connections = n;
  return inode;
}

/// A read-only mapping of a segment's memfd. The descriptor is closed as soon as the memory is mapped, so
/// this process holds no descriptor of the memory at all (one opened O_RDONLY, of a file sealed against
/// resizing, could not resize it anyway).
class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { Reset(); }
  void Reset() {
    if (base_ != nullptr) ::munmap(base_, static_cast<size_t>(size_));
    base_ = nullptr;
    size_ = 0;
  }
  const uint8_t* data() const noexcept { return static_cast<const uint8_t*>(base_); }
  uint64_t size() const noexcept { return size_; }
  bool valid() const noexcept { return base_ != nullptr; }
  void Adopt(void* base, uint64_t size) {
    Reset();
    base_ = base;
    size_ = size;
  }

 private:
  void* base_ = nullptr;
  uint64_t size_ = 0;
};

/// Find out who holds `name` and, if a live host does, receive and map its segment read-only (the observer
/// handshake), waiting for its answer at most until `deadline_ns`. Never blocks past the deadline: every
/// socket operation is non-blocking and every wait is a poll with that deadline.
inline HostView Observe(const std::string& name, int64_t deadline_ns, Mapping* map, uint64_t* listener_inode) {
  namespace platform = shm::platform;
  HostView h;
  // The kernel's list first, before this process's own connection shows in it.
  *listener_inode = ListenerOf(name, &h.guest_connections);
  auto conn = platform::ConnectRendezvous(name);
  if (!conn) {
    if (*listener_inode != 0) {
      h.alive = true;
      h.error = "the host's listening socket exists but refused a connection (" + conn.error().message() + ")";
    } else {
      h.error = conn.error().message();
    }
    return h;
  }
  h.alive = true;  // something listens on the address: a live process (the kernel closes it at death)
  auto who = platform::PeerCredentialsOf(*conn, false);
  if (!who) {
    h.error = who.error().message();
    return h;
  }
  h.pid = who->pid;
  h.uid = who->uid;
  if (h.uid != platform::EffectiveUserId() && h.uid != 0) {
    h.error = "the name is held by uid " + std::to_string(h.uid) + ", neither this user nor root: not asking it";
    return h;
  }
  shm::wire::Hello hello;
  hello.role = static_cast<uint32_t>(shm::wire::AttachRole::kObserver);
  (void)platform::SendRecord(*conn, &hello, sizeof hello);
  shm::wire::AttachReply reply;
  platform::Record rec;
  for (;;) {
    if (!platform::WaitReadable(*conn, deadline_ns)) {
      h.error = "the host did not answer within the deadline (stopped, or too busy)";
      return h;
    }
    auto r = platform::ReceiveRecord(*conn, &reply, sizeof reply);
    if (r) {
      rec = std::move(*r);
      break;
    }
    if (r.error().code() != shm::ErrorCode::kNotFound) {
      h.error = r.error().message();
      return h;
    }
  }
  if (rec.size != sizeof reply || rec.truncated || reply.reserved != 0) {
    h.error = rec.size == 0 ? "the host closed the connection without an answer" : "malformed attach reply";
    return h;
  }
  const auto status = static_cast<shm::wire::AttachStatus>(reply.status);
  if (status != shm::wire::AttachStatus::kAccepted) {
    switch (status) {
      case shm::wire::AttachStatus::kDenied: h.error = "the host does not admit this user as an observer"; break;
      case shm::wire::AttachStatus::kVersionMismatch:
        h.error = "the host speaks protocol version " + std::to_string(reply.detail) + "; this shm-inspect reads " +
                  std::to_string(shm::wire::kVersion);
        break;
      case shm::wire::AttachStatus::kShuttingDown: h.error = "the host is shutting down"; break;
      default: h.error = "the host refused the observer (status " + std::to_string(reply.status) + ")"; break;
    }
    return h;
  }
  if (rec.files.size() != 1) {
    h.error = std::to_string(rec.files.size()) + " descriptors instead of one";
    return h;
  }
  // The seals fix the size, so the whole mapping stays backed (no SIGBUS from a truncation).
  auto size = platform::CheckSealedSize(rec.files[0]);
  if (!size) {
    h.error = size.error().message();
    return h;
  }
  if (*size == 0 || *size > shm::wire::kMaxSegmentSize) {
    h.error = "the memory is " + std::to_string(*size) + " bytes";
    return h;
  }
  auto base = platform::Map(rec.files[0], *size, false);
  if (!base) {
    h.error = base.error().message();
    return h;
  }
  rec.files.clear();  // closes the descriptor: the mapping keeps the memory
  map->Adopt(*base, *size);
  h.answered = true;
  return h;
}

/// Whether the host's listening socket `inode` still exists (the same host is alive), without a word to it.
inline bool ListenerAlive(const std::string& name, uint64_t inode, int* connections) {
  return inode != 0 && ListenerOf(name, connections) == inode;
}

/// CLOCK_MONOTONIC now, in ns (the clock of host_since_ns and guest_since_ns).
inline int64_t Now() { return shm::platform::MonotonicNs(); }

// ---- The terminal of --watch ---------------------------------------------------------------------------

inline volatile sig_atomic_t& Interrupted() {
  static volatile sig_atomic_t flag = 0;
  return flag;
}
extern "C" inline void OnInterrupt(int) { Interrupted() = 1; }

/// Raw keys from stdin while it lives (no echo, no line buffering; Ctrl-C still raises SIGINT, which sets
/// Interrupted()), restored on destruction. Also for a stdin that is not a terminal (keys still read).
class Terminal {
 public:
  Terminal() {
    struct sigaction sa {};
    sa.sa_handler = OnInterrupt;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, nullptr);
    ::sigaction(SIGTERM, &sa, nullptr);
    if (::isatty(0) && ::tcgetattr(0, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= static_cast<tcflag_t>(~(ICANON | ECHO));
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      raw_ = ::tcsetattr(0, TCSANOW, &raw) == 0;
    }
    Write("\x1b[?25l");  // hide the cursor
  }
  ~Terminal() {
    Write("\x1b[?25h");
    if (raw_) ::tcsetattr(0, TCSANOW, &saved_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  /// Wait up to timeout_ms for a key; returns it, or -1 (timeout, signal, or stdin closed: then never again).
  int ReadKey(int timeout_ms) {
    if (stdin_closed_) {
      pollfd none{-1, 0, 0};
      (void)::poll(&none, 0, timeout_ms);
      return -1;
    }
    pollfd p{0, POLLIN, 0};
    const int rc = ::poll(&p, 1, timeout_ms);
    if (rc <= 0) return -1;
    unsigned char c;
    const ssize_t n = ::read(0, &c, 1);
    if (n == 1) return c;
    if (n == 0) stdin_closed_ = true;
    return -1;
  }
  /// Replace the screen with `text`.
  void Show(const std::string& text) { Write("\x1b[H\x1b[2J" + text); }
  static void Write(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::write(1, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<size_t>(n);
    }
  }

 private:
  termios saved_{};
  bool raw_ = false;
  bool stdin_closed_ = false;
};

}  // namespace os
}  // namespace shm_inspect

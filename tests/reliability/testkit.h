// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the reliability tests, their peer program and the soak: unique names, checksummed
// messages, child processes with a notification pipe, a read-only (observer) view of a segment's slot states,
// and the tagged result lines that scripts/reliability_table.py turns into RELIABILITY.md's table.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../../tools/common/child_process.h"
#include "../common/segment_access.h"
#include "shm/detail/attach.h"
#include "shm/wire/layout.h"

namespace testkit {

/// A segment name no other test (or concurrent run) uses: tag, pid and a per-process counter.
inline std::string UniqueName(const std::string& tag) {
  static std::atomic<uint32_t> counter{0};
  return "shmrel-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

/// An order-sensitive 64-bit checksum, eight bytes at a time (the soak checksums gigabytes): catches torn,
/// shifted or misplaced bytes.
/// Whether the request a handler was given lies where SPECIFICATION.md §8.1 puts it: inside its slot's request
/// buffer, or, for at most wire::kInlineSize bytes, inside the inline area of its slot's header. `response` is
/// the response buffer the handler was given (the request buffer precedes it); `g` the segment's geometry.
inline bool RequestInItsArea(const uint8_t* data, size_t size, uint32_t slot, const uint8_t* response, size_t capacity,
                             const shm::wire::Geometry& g) {
  const uint8_t* request = response - capacity;
  if (size <= capacity && data >= request && data + size <= response) return true;
  const uint8_t* base = request - shm::wire::RequestBufferOffset(g, slot);
  const uint8_t* area = base + shm::wire::kSegmentHeaderSize + uint64_t{shm::wire::kSlotHeaderSize} * slot +
                        offsetof(shm::wire::SlotHeader, inline_data);
  return size <= shm::wire::kInlineSize && data >= area && data + size <= area + shm::wire::kInlineSize;
}

inline uint64_t Checksum(const uint8_t* p, size_t n, uint64_t h = 1469598103934665603ull) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h ^ n;
}

/// splitmix64: a seeded generator whose sequence is the same on every platform (replayable seeds).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t Next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t Below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(Next() % n); }
  void Fill(uint8_t* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const uint64_t v = Next();
      std::memcpy(p + i, &v, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<uint8_t>(Next());
  }
};

inline void Put64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint64_t Get64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// ---- The echo protocol used by the reliability peers ------------------------------------------------------
// Request: [id u64][payload...]. Answer: [id u64][checksum of the whole request u64][server pid u64]
// [checksum of the first 24 bytes u64]. The caller checks that the answer names its own id (no misdelivery,
// no stale answer) and the checksum of what it sent (no torn request), and the answer's own checksum.
constexpr size_t kEchoAnswerSize = 32;

inline std::vector<uint8_t> MakeEchoRequest(uint64_t id, size_t size, Rng& rng) {
  std::vector<uint8_t> r(size < 8 ? 8 : size);
  Put64(r.data(), id);
  rng.Fill(r.data() + 8, r.size() - 8);
  return r;
}

/// Writes the answer into `out` (>= kEchoAnswerSize bytes). Returns false if the request is too short.
inline bool WriteEchoAnswer(const uint8_t* req, size_t n, uint8_t* out, uint64_t server_pid) {
  if (n < 8) return false;
  Put64(out, Get64(req));
  Put64(out + 8, Checksum(req, n));
  Put64(out + 16, server_pid);
  Put64(out + 24, Checksum(out, 24));
  return true;
}

enum class EchoCheck { kOk, kWrongId, kBadRequestChecksum, kBadAnswer };
inline EchoCheck CheckEchoAnswer(const std::vector<uint8_t>& req, const std::vector<uint8_t>& ans) {
  if (ans.size() != kEchoAnswerSize || Get64(ans.data() + 24) != Checksum(ans.data(), 24)) {
    return EchoCheck::kBadAnswer;
  }
  if (Get64(ans.data()) != Get64(req.data())) return EchoCheck::kWrongId;
  if (Get64(ans.data() + 8) != Checksum(req.data(), req.size())) return EchoCheck::kBadRequestChecksum;
  return EchoCheck::kOk;
}

// ---- Child processes ----------------------------------------------------------------------------------------

/// Options for Spawn. The child gets the write end of a pipe as fd 3 (its notification channel) and dies with
/// its parent (PR_SET_PDEATHSIG), so a failing test never leaves a peer behind.
struct SpawnOptions {
  int uid = -1;  ///< setuid to this in the child (after setgid), if >= 0
  int gid = -1;  ///< setgid (and clear supplementary groups), if >= 0
};

/// A peer process (a shm_tools::ChildProcess, killed and reaped by the destructor) and the read end of its
/// notification pipe.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& o) noexcept { *this = std::move(o); }
  Child& operator=(Child&& o) noexcept {
    std::swap(proc_, o.proc_);
    std::swap(fd_, o.fd_);
    std::swap(buf_, o.buf_);
    std::swap(last_line_, o.last_line_);
    return *this;
  }
  ~Child() {
    proc_.Kill();
    if (fd_ >= 0) ::close(fd_);
  }

  /// Start argv[0] with argv. Returns false (with errno) if it could not be started. The child exits 125 if
  /// the privilege drop fails, 127 if exec fails.
  bool Spawn(const std::vector<std::string>& argv, const SpawnOptions& opt = {}) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return false;
    shm_tools::SpawnOptions o;
    o.uid = opt.uid;
    o.gid = opt.gid;
    o.die_with_parent = true;
    o.fds.push_back({p[1], 3});
    const int rc = proc_.Start(argv, o);
    ::close(p[1]);
    if (rc != 0) {
      ::close(p[0]);
      errno = rc;
      return false;
    }
    if (fd_ >= 0) ::close(fd_);
    fd_ = p[0];
    buf_.clear();
    return true;
  }

  /// The child's pid; -1 once Reap has reaped it.
  pid_t pid() const { return proc_.started() && !proc_.reaped() ? proc_.pid() : -1; }

  /// Next line the child wrote on fd 3, waiting until `timeout_ms`. Empty on timeout or end of file.
  std::string ReadLine(int timeout_ms) {
    const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return line;
      }
      const int64_t left = deadline - shm::platform::MonotonicNs();
      if (left <= 0 || fd_ < 0) return "";
      pollfd pfd{fd_, POLLIN, 0};
      int r = ::poll(&pfd, 1, static_cast<int>(left / 1000000 + 1));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      char tmp[512];
      ssize_t n = ::read(fd_, tmp, sizeof tmp);
      if (n <= 0) {
        ::close(fd_);
        fd_ = -1;
        return "";
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
  }

  /// Read lines until one starts with `prefix`; returns it (empty on timeout).
  std::string WaitFor(const std::string& prefix, int timeout_ms) {
    const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
    for (;;) {
      const int64_t left_ms = (deadline - shm::platform::MonotonicNs()) / 1000000;
      if (left_ms <= 0) return "";
      std::string line = ReadLine(static_cast<int>(left_ms));
      if (line.empty() && fd_ < 0) return "";
      if (!line.empty()) last_line_ = line;
      if (line.compare(0, prefix.size(), prefix) == 0) return line;
    }
  }

  /// The last line WaitFor read (for failure messages).
  const std::string& last_line() const { return last_line_; }

  /// Send `sig` (without reaping).
  void Kill(int sig = SIGKILL) const { proc_.Signal(sig); }

  /// Reap the child, waiting at most timeout_ms. Returns the wait status, or -1 on timeout.
  int Reap(int timeout_ms) {
    const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
    if (pid() <= 0 || !proc_.Wait(deadline)) return -1;
    return proc_.status();
  }

 private:
  shm_tools::ChildProcess proc_;
  int fd_ = -1;
  std::string buf_;
  std::string last_line_;
};

using shm_tools::ExitCode;  // exit code of a wait status, or 128 + signal, or -1

/// The state letter of /proc/<pid>/stat ('Z' for a dead process not yet reaped), or '?' if unreadable.
inline char ProcState(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  std::getline(f, s);
  size_t p = s.rfind(')');
  return (p == std::string::npos || p + 2 >= s.size()) ? '?' : s[p + 2];
}

/// Wait until `pid` (a child) has completely exited — every thread gone, so the kernel has closed its files
/// and sockets — without reaping it (WNOWAIT): it stays a zombie. false on timeout.
inline bool WaitDeadUnreaped(pid_t pid, int timeout_ms) {
  const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
  for (;;) {
    siginfo_t info;
    std::memset(&info, 0, sizeof info);
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT | WNOHANG) == 0 && info.si_pid == pid) {
      return true;
    }
    if (shm::platform::MonotonicNs() >= deadline) return false;
    ::usleep(1000);
  }
}

/// Write a line on fd 3 (a peer's notification channel). Thread-safe (one write call per line).
inline void Notify(const std::string& line) {
  std::string l = line + "\n";
  ssize_t r = ::write(3, l.data(), l.size());
  (void)r;
}

// ---- A read-only view of a segment's slot control words ---------------------------------------------------
/// Maps a live host's segment as an observer (SPECIFICATION.md §4.1 step 3): a read-only descriptor the host
/// hands out without giving away the guest seat. The host must be running (and admit this process) when the
/// view is built; the mapping stays valid after the host is gone.
class SegmentView {
 public:
  explicit SegmentView(const std::string& name, int timeout_ms = 30000) {
    auto seg = shm::detail::Observe(name, shm::platform::DeadlineAfter(int64_t{timeout_ms} * 1000000));
    if (!seg) {
      error_ = seg.error().ToString();
      return;
    }
    segment_ = std::move(*seg);
    slots_ = segment_.slot_count();
    host_slots_ = segment_.geometry().host_slots;
  }
  bool ok() const { return segment_.valid(); }
  /// Why the view could not be built (empty when ok()).
  const std::string& error() const { return error_; }
  uint32_t slots() const { return slots_; }
  uint32_t host_slots() const { return host_slots_; }
  /// The host's pid as the header states it (informational, like every header field).
  uint32_t host_pid() const { return segment_.header().host_pid.load(std::memory_order_relaxed); }
  uint32_t Ctl(uint32_t i) const { return segment_.Slot(i).header->ctl.load(std::memory_order_acquire); }
  uint32_t State(uint32_t i) const { return shm::wire::CtlState(Ctl(i)); }
  /// Slots not FREE, as "index:state" (empty when every slot is FREE).
  std::string Busy() const {
    std::string s;
    for (uint32_t i = 0; i < slots_; ++i) {
      if (State(i) != 0) s += std::to_string(i) + ":" + std::to_string(State(i)) + " ";
    }
    return s;
  }
  /// Wait until every slot is FREE (or timeout); returns the busy list seen last.
  std::string WaitAllFree(int timeout_ms) const {
    const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
    for (;;) {
      std::string b = Busy();
      if (b.empty() || shm::platform::MonotonicNs() >= deadline) return b;
      ::usleep(1000);
    }
  }

 private:
  shm::detail::Segment segment_;
  std::string error_;
  uint32_t slots_ = 0, host_slots_ = 0;
};

inline bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

/// Open descriptors of this process.
inline int CountFds() {
  int n = 0;
  if (auto* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n - 2;
}

/// Lines of /proc/self/maps (one per mapping).
inline int CountMaps() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) ++n;
  return n;
}

}  // namespace testkit

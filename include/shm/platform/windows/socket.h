// SPDX-License-Identifier: Apache-2.0
// Windows rendezvous: the host lock Local\shm-<name> (an event only hosts open: the one-host rule) and the
// message-mode named pipe \\.\pipe\shm-<name>, whose instances carry the attach handshake and then prove the
// guest's and the host's liveness until one end closes; the kernel closes both ends at process death. The
// ACCEPTED reply carries the host's instance number in place of Linux's descriptor, and the guest opens the
// section it names. See SPECIFICATION.md §W1–§W4.
#pragma once

#include <windows.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shm/error.h"
#include "shm/platform/windows/clock.h"
#include "shm/platform/windows/file.h"

#if defined(_MSC_VER)
#pragma comment(lib, "advapi32.lib")
#endif

namespace shm {
namespace platform {

/// Who is at the other end of a pipe. Windows has no uids: `uid` is EffectiveUserId() when the peer's token
/// user is this process's, kOtherUser otherwise (also when it cannot be read); `gid` is never a group this
/// process is in (the Windows binding has no group class, SPECIFICATION.md §W3).
struct PeerCredentials {
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;
};

constexpr uint32_t kThisUser = 1;             ///< EffectiveUserId() on Windows.
constexpr uint32_t kOtherUser = 0xFFFFFFFEu;  ///< Any other user.
constexpr uint32_t kNoGroup = 0xFFFFFFFDu;    ///< EffectiveGroupId() on Windows: a group no peer is in.

inline uint32_t EffectiveUserId() noexcept { return kThisUser; }
inline uint32_t EffectiveGroupId() noexcept { return kNoGroup; }

/// The host's segment label: the segment name itself (it names the section, SPECIFICATION.md §W1).
inline std::string SegmentLabel(std::string_view name) { return std::string(name); }

namespace internal {

constexpr size_t kInstanceBytes = 8;  // the u64 an ACCEPTED reply carries after its 16 bytes (§W4)

inline std::wstring PipeName(std::string_view name) { return L"\\\\.\\pipe\\shm-" + Widen(name); }
inline std::wstring LockName(std::string_view name) { return L"Local\\shm-" + Widen(name); }

// The user SID of process `pid`'s token, compared with this process's. false when either cannot be read.
inline bool SameUser(DWORD pid) {
  auto user_of = [](HANDLE process, std::vector<unsigned char>* out) {
    HANDLE token = nullptr;
    if (!OpenProcessToken(process, TOKEN_QUERY, &token)) return false;
    DWORD n = 0;
    (void)GetTokenInformation(token, TokenUser, nullptr, 0, &n);
    bool ok = false;
    if (n > 0 && n < 65536) {
      out->resize(n);
      ok = GetTokenInformation(token, TokenUser, out->data(), n, &n) != 0;
    }
    CloseHandle(token);
    return ok;
  };
  std::vector<unsigned char> mine, theirs;
  if (!user_of(GetCurrentProcess(), &mine)) return false;
  HANDLE p = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, pid);
  if (p == nullptr) return false;
  const bool ok = user_of(p, &theirs);
  CloseHandle(p);
  if (!ok) return false;
  const auto* a = reinterpret_cast<const TOKEN_USER*>(mine.data());
  const auto* b = reinterpret_cast<const TOKEN_USER*>(theirs.data());
  return IsValidSid(a->User.Sid) && IsValidSid(b->User.Sid) && EqualSid(a->User.Sid, b->User.Sid);
}

inline std::unique_ptr<PipeState> NewPipeState(HANDLE pipe, bool server, std::string_view name) {
  auto p = std::make_unique<PipeState>();
  p->pipe = pipe;
  p->server = server;
  p->name = std::string(name);
  p->event = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  p->ov.hEvent = p->event;
  return p;
}

// Issue the read that is always pending on a connected end (SPECIFICATION.md §W2), unless a completed one
// is still unconsumed or the end is broken.
inline void StartRead(PipeState& p) {
  if (p.pending || p.done || p.broken) return;
  ResetEvent(p.event);
  p.ov = OVERLAPPED{};
  p.ov.hEvent = p.event;
  p.truncated = false;
  p.got = 0;
  DWORD n = 0;
  if (ReadFile(p.pipe, p.buf, sizeof p.buf, &n, &p.ov)) {
    p.got = n;
    p.done = true;
    SetEvent(p.event);
    return;
  }
  const DWORD err = GetLastError();
  if (err == ERROR_IO_PENDING) {
    p.pending = true;
    return;
  }
  if (err == ERROR_MORE_DATA) {
    p.got = sizeof p.buf;
    p.truncated = true;
    p.done = true;
  } else {
    p.broken = true;
  }
  SetEvent(p.event);
}

// Read and drop the rest of a message longer than the buffer.
inline void DrainMessage(PipeState& p) {
  unsigned char sink[256];
  for (int i = 0; i < 1 << 16; ++i) {
    OVERLAPPED ov{};
    HANDLE ev = CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (ev == nullptr) return;
    ov.hEvent = ev;
    DWORD n = 0;
    BOOL ok = ReadFile(p.pipe, sink, sizeof sink, &n, &ov);
    DWORD err = ok ? ERROR_SUCCESS : GetLastError();
    if (!ok && err == ERROR_IO_PENDING) {
      if (WaitForSingleObject(ev, 1000) != WAIT_OBJECT_0) {
        CancelIoEx(p.pipe, &ov);
      }
      ok = GetOverlappedResult(p.pipe, &ov, &n, TRUE);
      err = ok ? ERROR_SUCCESS : GetLastError();
    }
    CloseHandle(ev);
    if (err != ERROR_MORE_DATA) {
      if (err != ERROR_SUCCESS) p.broken = true;
      return;
    }
  }
}

// Collect the pending read's completion without waiting. true when one is there to consume.
inline bool Completed(PipeState& p) {
  if (p.done || p.broken) return true;
  if (!p.pending) return false;
  DWORD n = 0;
  if (GetOverlappedResult(p.pipe, &p.ov, &n, FALSE)) {
    p.pending = false;
    p.got = n;
    p.done = true;
    return true;
  }
  const DWORD err = GetLastError();
  if (err == ERROR_IO_INCOMPLETE) return false;
  p.pending = false;
  if (err == ERROR_MORE_DATA) {
    p.got = sizeof p.buf;
    p.truncated = true;
    p.done = true;
  } else {
    p.broken = true;
  }
  return true;
}

// Start waiting for a client on the listener's current instance.
inline void StartConnect(PipeState& p) {
  ResetEvent(p.event);
  p.ov = OVERLAPPED{};
  p.ov.hEvent = p.event;
  p.done = false;
  p.pending = false;
  if (ConnectNamedPipe(p.pipe, &p.ov)) {
    p.done = true;
    SetEvent(p.event);
    return;
  }
  const DWORD err = GetLastError();
  if (err == ERROR_IO_PENDING) {
    p.pending = true;
  } else if (err == ERROR_PIPE_CONNECTED) {  // the client came between CreateNamedPipe and ConnectNamedPipe
    p.done = true;
    SetEvent(p.event);
  } else {  // e.g. ERROR_NO_DATA: it came and went; AcceptConnection recycles the instance
    p.broken = true;
    SetEvent(p.event);
  }
}

inline HANDLE NewInstance(std::string_view name, bool first) {
  const std::wstring pipe = PipeName(name);
  DWORD open = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED | (first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0);
  const DWORD mode = PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS;
  HANDLE h = CreateNamedPipeW(pipe.c_str(), open, mode, PIPE_UNLIMITED_INSTANCES, 4096, 4096, 0, nullptr);
  return h == INVALID_HANDLE_VALUE ? nullptr : h;
}

}  // namespace internal

/// The credentials of the peer at the other end of pipe end `conn` (SPECIFICATION.md §W4 step 1 and guest
/// step 2). `with_groups` is ignored: the Windows binding has no group class.
inline Result<PeerCredentials> PeerCredentialsOf(const File& conn, bool /*with_groups*/) {
  internal::PipeState* p = conn.pipe();
  if (p == nullptr) return Error(ErrorCode::kSystem, "not a pipe");
  ULONG pid = 0;
  const BOOL ok = p->server ? GetNamedPipeClientProcessId(p->pipe, &pid) : GetNamedPipeServerProcessId(p->pipe, &pid);
  if (!ok) return SysError(p->server ? "GetNamedPipeClientProcessId" : "GetNamedPipeServerProcessId", GetLastError());
  PeerCredentials c;
  c.pid = static_cast<uint32_t>(pid);
  c.uid = internal::SameUser(pid) ? kThisUser : kOtherUser;
  c.gid = kOtherUser;
  return c;
}

/// Connect to the rendezvous of `name` (§W4 guest step 1). kNotFound when no instance listens there (yet).
inline Result<File> ConnectRendezvous(std::string_view name) {
  const std::wstring pipe = internal::PipeName(name);
  HANDLE h =
      CreateFileW(pipe.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr);
  if (h == INVALID_HANDLE_VALUE) {
    const DWORD err = GetLastError();
    if (err == ERROR_FILE_NOT_FOUND || err == ERROR_PIPE_BUSY || err == ERROR_PATH_NOT_FOUND) {
      return Error(ErrorCode::kNotFound, "no host listens for segment " + std::string(name));
    }
    return SysError("connect to segment " + std::string(name), err);
  }
  DWORD mode = PIPE_READMODE_MESSAGE;
  if (!SetNamedPipeHandleState(h, &mode, nullptr, nullptr)) {
    const DWORD err = GetLastError();
    CloseHandle(h);
    return SysError("SetNamedPipeHandleState", err);
  }
  auto p = internal::NewPipeState(h, false, name);
  if (p->event == nullptr) return SysError("CreateEvent", GetLastError());
  internal::StartRead(*p);
  File f;
  f.set_pipe(std::move(p));
  return f;
}

/// Take the host lock of `name` and create the first instance of its pipe (SPECIFICATION.md §W3 steps 1–2).
/// kHostAlreadyRunning when the name is held, naming the holder's process id.
inline Result<File> ListenRendezvous(std::string_view name) {
  const std::wstring lock_name = internal::LockName(name);
  HANDLE lock = CreateEventW(nullptr, TRUE, FALSE, lock_name.c_str());
  const DWORD lock_err = GetLastError();
  if (lock == nullptr || lock_err == ERROR_ALREADY_EXISTS) {
    if (lock != nullptr) CloseHandle(lock);
    if (lock == nullptr && lock_err != ERROR_ACCESS_DENIED) {
      return SysError("CreateEvent " + std::string(name), lock_err);
    }
    // The holder creates its pipe right after the lock: retry briefly across that instant.
    auto probe = ConnectRendezvous(name);
    for (int i = 0; !probe && i < 200; ++i) {
      SleepNs(5000000);
      probe = ConnectRendezvous(name);
    }
    if (!probe) {
      return Error(ErrorCode::kHostAlreadyRunning,
                   "segment " + std::string(name) + " is held by a process that does not serve it");
    }
    auto who = PeerCredentialsOf(*probe, false);
    if (!who) return Error(ErrorCode::kHostAlreadyRunning, "segment " + std::string(name) + " is held");
    std::string m = "segment " + std::string(name) + " is held by live host pid " + std::to_string(who->pid);
    if (who->uid != kThisUser) m += ", a process of another user";
    return Error(ErrorCode::kHostAlreadyRunning, m);
  }
  HANDLE pipe = internal::NewInstance(name, true);
  if (pipe == nullptr && GetLastError() == ERROR_ACCESS_DENIED) {
    pipe = internal::NewInstance(name, false);  // a dead host's instances linger (§W3 step 2)
  }
  if (pipe == nullptr) {
    const DWORD err = GetLastError();
    CloseHandle(lock);
    return SysError("CreateNamedPipe " + std::string(name), err);
  }
  auto p = internal::NewPipeState(pipe, true, name);
  if (p->event == nullptr) {
    CloseHandle(lock);
    return SysError("CreateEvent", GetLastError());
  }
  p->lock = lock;
  p->listener = true;
  internal::StartConnect(*p);
  File f;
  f.set_pipe(std::move(p));
  return f;
}

/// Accept one connected instance of listener `l`, without blocking, and put a new instance in its place. An
/// invalid File when no client is connected yet.
inline Result<File> AcceptConnection(const File& l) {
  internal::PipeState* p = l.pipe();
  if (p == nullptr || !p->listener) return Error(ErrorCode::kSystem, "not a listener");
  for (int round = 0; round < 4; ++round) {
    if (p->pending) {
      DWORD n = 0;
      if (GetOverlappedResult(p->pipe, &p->ov, &n, FALSE)) {
        p->pending = false;
        p->done = true;
      } else {
        const DWORD err = GetLastError();
        if (err == ERROR_IO_INCOMPLETE) return File();
        p->pending = false;
        p->broken = true;
      }
    }
    if (!p->done && !p->broken) return File();
    HANDLE next = internal::NewInstance(p->name, false);
    if (next == nullptr) return SysError("CreateNamedPipe " + p->name, GetLastError());
    HANDLE connected = p->pipe;
    const bool ok = p->done;
    p->pipe = next;
    p->broken = false;
    internal::StartConnect(*p);
    if (!ok) {  // the client left before it was accepted: drop that instance
      CloseHandle(connected);
      continue;
    }
    auto c = internal::NewPipeState(connected, true, p->name);
    if (c->event == nullptr) return SysError("CreateEvent", GetLastError());
    internal::StartRead(*c);
    File f;
    f.set_pipe(std::move(c));
    return f;
  }
  return File();
}

/// Wait until pipe end `f` has a message (or is broken), at most until `deadline_ns`. false on timeout.
inline bool WaitReadable(const File& f, int64_t deadline_ns) {
  internal::PipeState* p = f.pipe();
  if (p == nullptr) return true;
  if (!p->listener) internal::StartRead(*p);
  for (;;) {
    if (!p->listener && internal::Completed(*p)) return true;
    const int64_t now = MonotonicNs();
    if (now >= deadline_ns) return false;
    const int64_t ms = (deadline_ns - now + 999999) / 1000000;
    const DWORD rc = WaitForSingleObject(p->event, ms > 1000000 ? 1000000u : static_cast<DWORD>(ms));
    if (rc == WAIT_OBJECT_0 && p->listener) return true;
    if (rc == WAIT_FAILED) return true;  // let the read report the error
  }
}

/// One received record.
struct Record {
  size_t size = 0;          ///< Its length (0: end of file: the peer is gone or left).
  bool truncated = false;   ///< Longer than the buffer.
  std::vector<File> files;  ///< The section an ACCEPTED reply names (guest ends only, §W4).
};

/// Receive one message of at most `n` bytes without blocking: kNotFound when none has arrived yet. On a
/// guest's end a message of exactly n + 8 bytes is a record carrying the host's instance number: the section
/// it names is opened and returned in `files` (SPECIFICATION.md §W4 steps 3–4).
inline Result<Record> ReceiveRecord(const File& conn, void* buf, size_t n) {
  internal::PipeState* p = conn.pipe();
  if (p == nullptr) return Error(ErrorCode::kSystem, "not a pipe");
  internal::StartRead(*p);
  if (!internal::Completed(*p)) return Error(ErrorCode::kNotFound, "no record yet");
  Record rec;
  if (p->broken) return rec;  // end of file, for good
  const bool truncated = p->truncated;
  const size_t got = p->got;
  p->done = false;
  if (truncated) internal::DrainMessage(*p);
  rec.truncated = truncated;
  if (!truncated && !p->server && n > 0 && got == n + internal::kInstanceBytes) {
    uint64_t instance = 0;
    std::memcpy(&instance, p->buf + n, sizeof instance);
    std::memcpy(buf, p->buf, n);
    rec.size = n;
    const std::wstring section = internal::SectionName(p->name, instance);
    HANDLE h = OpenFileMappingW(FILE_MAP_READ | FILE_MAP_WRITE, FALSE, section.c_str());
    if (h == nullptr && GetLastError() == ERROR_ACCESS_DENIED) {
      h = OpenFileMappingW(FILE_MAP_READ, FALSE, section.c_str());
    }
    if (h == nullptr) {
      const DWORD err = GetLastError();
      internal::StartRead(*p);
      return Error(ErrorCode::kProtocol,
                   "the host named a segment section that cannot be opened: " + ErrnoText(static_cast<int>(err)));
    }
    File f(h);
    f.set_section(p->name, instance);
    rec.files.push_back(std::move(f));
  } else {
    rec.size = got == 0 ? 0 : got;
    std::memcpy(buf, p->buf, got < n ? got : n);
    if (got > n) rec.truncated = true;
    // A 0-byte message is a guest leaving without dying (§W2): end of file, for good.
    if (got == 0 && !truncated) p->broken = true;
  }
  internal::StartRead(*p);
  return rec;
}

/// Send one message; with `attach` (a section), the host's instance number follows the bytes (§W4). Waits at
/// most 1 s for the pipe to take it (a 24-byte message into a 4 KiB pipe buffer: at once).
inline Result<void> SendRecord(const File& conn, const void* buf, size_t n, const File* attach = nullptr) {
  internal::PipeState* p = conn.pipe();
  if (p == nullptr) return Error(ErrorCode::kSystem, "not a pipe");
  unsigned char msg[256];
  if (n + internal::kInstanceBytes > sizeof msg) return Error(ErrorCode::kSystem, "record too long");
  if (n > 0) std::memcpy(msg, buf, n);
  size_t len = n;
  if (attach != nullptr) {
    const uint64_t instance = attach->instance();
    std::memcpy(msg + n, &instance, sizeof instance);
    len += sizeof instance;
  }
  OVERLAPPED ov{};
  ov.hEvent = CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (ov.hEvent == nullptr) return SysError("CreateEvent", GetLastError());
  DWORD sent = 0;
  BOOL ok = WriteFile(p->pipe, msg, static_cast<DWORD>(len), &sent, &ov);
  DWORD err = ok ? ERROR_SUCCESS : GetLastError();
  if (!ok && err == ERROR_IO_PENDING) {
    if (WaitForSingleObject(ov.hEvent, 1000) != WAIT_OBJECT_0) CancelIoEx(p->pipe, &ov);
    ok = GetOverlappedResult(p->pipe, &ov, &sent, TRUE);
    err = ok ? ERROR_SUCCESS : GetLastError();
  }
  CloseHandle(ov.hEvent);
  if (!ok) return SysError("WriteFile", err);
  if (sent != len) return Error(ErrorCode::kSystem, "WriteFile sent a partial record");
  return Ok();
}

/// Whether the peer of pipe end `conn` is gone (§W2). A system call; never on the hot path. When the check
/// itself fails for another reason the peer counts as alive: deadlines still bound every wait.
inline bool ConnectionClosed(const File& conn) noexcept {
  internal::PipeState* p = conn.pipe();
  if (p == nullptr) return true;
  DWORD avail = 0;
  if (PeekNamedPipe(p->pipe, nullptr, 0, nullptr, &avail, nullptr)) return false;
  const DWORD err = GetLastError();
  return err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED || err == ERROR_NO_DATA ||
         err == ERROR_INVALID_HANDLE;
}

/// Leave without closing the handle (other threads may still test it): a guest's end writes the 0-byte
/// message the host reads as "gone" (§W2); the host's end disconnects its instance.
inline void ShutdownConnection(const File& conn) noexcept {
  internal::PipeState* p = conn.pipe();
  if (p == nullptr) return;
  if (p->server) {
    (void)DisconnectNamedPipe(p->pipe);
    return;
  }
  (void)SendRecord(conn, nullptr, 0);
}

/// A wake-up for a thread sleeping in PollFiles(): Signal() makes it ready. Thread-safe.
class Wakeup {
 public:
  Result<void> Open() {
    HANDLE h = CreateEventW(nullptr, TRUE, FALSE, nullptr);
    if (h == nullptr) return SysError("CreateEvent", GetLastError());
    file_ = File(h);
    return Ok();
  }
  /// Consume the signals so far (PollFiles() then sleeps again).
  void Drain() noexcept { ResetEvent(file_.handle()); }
  void Signal() noexcept { SetEvent(file_.handle()); }
  const File& file() const noexcept { return file_; }

 private:
  File file_;
};

/// Sleep until one of `fds` (File::fd(): events) is signalled, at most timeout_ms (-1: no limit).
/// `revents[i]` gets 1 if fds[i] is signalled, else 0. kNoHandle entries are ignored.
inline void PollFiles(const Handle* fds, short* revents, size_t n, int timeout_ms) {
  HANDLE hs[4];
  size_t idx[4];
  DWORD k = 0;
  for (size_t i = 0; i < n && k < 4; ++i) {
    revents[i] = 0;
    if (fds[i] != kNoHandle) {
      hs[k] = fds[i];
      idx[k] = i;
      ++k;
    }
  }
  if (k == 0) {
    if (timeout_ms > 0) Sleep(static_cast<DWORD>(timeout_ms));
    return;
  }
  const DWORD rc = WaitForMultipleObjects(k, hs, FALSE, timeout_ms < 0 ? INFINITE : static_cast<DWORD>(timeout_ms));
  if (rc == WAIT_TIMEOUT) return;
  if (rc == WAIT_FAILED) {  // let the callers' reads report what is wrong, without spinning here
    Sleep(1);
    for (DWORD j = 0; j < k; ++j) revents[idx[j]] = 1;
    return;
  }
  for (DWORD j = 0; j < k; ++j) {
    if (WaitForSingleObject(hs[j], 0) == WAIT_OBJECT_0) revents[idx[j]] = 1;
  }
}

}  // namespace platform
}  // namespace shm

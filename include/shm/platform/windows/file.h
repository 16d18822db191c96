// SPDX-License-Identifier: Apache-2.0
// Windows segment memory: a pagefile-backed section named Local\shm-<name>-<instance>, created by the host
// with SEC_COMMIT (every page charged at creation), opened by name by a guest the host admitted. A section of
// this kind keeps its size for its whole life, so no peer can shrink or grow the memory under the other. See
// SPECIFICATION.md §W1, §W3 and §W4.
//
// File is the one owning handle type of the Windows layer: a section, an event, or a pipe end (socket.h) with
// the overlapped state a pipe needs to be waited on.
#pragma once

#include <windows.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/error.h"
#include "shm/platform/windows/clock.h"

namespace shm {
namespace platform {

/// Longest segment name (SPECIFICATION.md §W1: the same names as on Linux).
constexpr size_t kMaxNameLength = 100;

/// What PollFiles() waits on: an event handle. kNoHandle is ignored.
using Handle = HANDLE;
constexpr Handle kNoHandle = nullptr;

/// The text of Windows error `err` (GetLastError()). Thread-safe.
inline std::string ErrnoText(int err) {
  char buf[256] = {};
  const DWORD n = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr,
                                 static_cast<DWORD>(err), 0, buf, sizeof buf, nullptr);
  std::string s(buf, n);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '.')) s.pop_back();
  return (s.empty() ? std::string("error") : s) + " (" + std::to_string(err) + ")";
}

inline Error SysError(const std::string& what, DWORD err) {
  const ErrorCode code = err == ERROR_ACCESS_DENIED ? ErrorCode::kPermissionDenied : ErrorCode::kSystem;
  return Error(code, what + ": " + ErrnoText(static_cast<int>(err)), wire::WireError::kNone, static_cast<int>(err));
}

namespace internal {

/// A pipe end's overlapped state. Heap-allocated so that its OVERLAPPED and buffer keep their address while
/// the kernel owns them, whatever happens to the File that holds it.
struct PipeState {
  HANDLE pipe = nullptr;   ///< The pipe instance (host) or the client end (guest).
  HANDLE event = nullptr;  ///< Manual-reset: signalled while a connect or a read has completed.
  HANDLE lock = nullptr;   ///< Listener only: the host lock, Local\shm-<name> (SPECIFICATION.md §W2).
  OVERLAPPED ov{};
  bool server = false;     ///< The host's end (or the listener); false: a guest's end.
  bool listener = false;   ///< Waiting for a client in ConnectNamedPipe, not reading.
  bool pending = false;    ///< The kernel owns ov and buf.
  bool done = false;       ///< A read or connect completed and is not consumed yet.
  bool broken = false;     ///< The read completed with an error: the peer is gone (it stays gone).
  bool truncated = false;  ///< The message was longer than buf.
  DWORD got = 0;           ///< Bytes of the completed message in buf.
  std::string name;        ///< The segment name.
  unsigned char buf[256];

  ~PipeState() {
    if (pipe != nullptr) {
      if (pending) {
        CancelIoEx(pipe, &ov);
        DWORD n = 0;
        (void)GetOverlappedResult(pipe, &ov, &n, TRUE);  // the kernel lets go of ov and buf
      }
      CloseHandle(pipe);
    }
    if (event != nullptr) CloseHandle(event);
    if (lock != nullptr) CloseHandle(lock);
  }
};

}  // namespace internal

/// Owning handle: a section, an event, or a pipe end. Move-only. Not thread-safe, except that several threads
/// may test a pipe end at once (ConnectionClosed).
class File {
 public:
  File() = default;
  explicit File(HANDLE h) : h_(h) {}
  File(File&& o) noexcept { *this = std::move(o); }
  File& operator=(File&& o) noexcept {
    if (this != &o) {
      Close();
      h_ = std::exchange(o.h_, nullptr);
      pipe_ = std::move(o.pipe_);
      segment_ = std::move(o.segment_);
      instance_ = std::exchange(o.instance_, 0);
    }
    return *this;
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() { Close(); }

  /// What to wait on: a pipe end's event, otherwise the handle itself.
  Handle fd() const noexcept { return pipe_ ? pipe_->event : h_; }
  /// The handle itself (a section, an event, a pipe end).
  HANDLE handle() const noexcept { return pipe_ ? pipe_->pipe : h_; }
  bool valid() const noexcept { return h_ != nullptr || pipe_ != nullptr; }
  void Close() noexcept {
    if (h_ != nullptr) CloseHandle(h_);
    h_ = nullptr;
    pipe_.reset();
    segment_.clear();
    instance_ = 0;
  }

  // A section: the segment's name and the host's instance number, which name the section and its events.
  const std::string& segment_name() const noexcept { return segment_; }
  uint64_t instance() const noexcept { return instance_; }
  void set_section(std::string segment, uint64_t instance) {
    segment_ = std::move(segment);
    instance_ = instance;
  }

  internal::PipeState* pipe() const noexcept { return pipe_.get(); }
  void set_pipe(std::unique_ptr<internal::PipeState> p) noexcept { pipe_ = std::move(p); }

 private:
  HANDLE h_ = nullptr;
  std::unique_ptr<internal::PipeState> pipe_;
  std::string segment_;
  uint64_t instance_ = 0;
};

namespace internal {

inline void AppendHex(std::wstring* out, uint64_t v, int digits) {
  static const wchar_t kHex[] = L"0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i) out->push_back(kHex[(v >> (4 * i)) & 0xF]);
}

inline std::wstring Widen(std::string_view s) {
  std::wstring w;
  w.reserve(s.size());
  for (char c : s) w.push_back(static_cast<wchar_t>(static_cast<unsigned char>(c)));
  return w;
}

/// "Local\shm-<name>-<instance>": the section (SPECIFICATION.md §W1).
inline std::wstring SectionName(std::string_view name, uint64_t instance) {
  std::wstring w = L"Local\\shm-" + Widen(name) + L"-";
  AppendHex(&w, instance, 16);
  return w;
}

/// A mapping of this process and the prefix of its wake events' names ("Local\shm-<name>-<instance>-").
struct MappedSegment {
  const unsigned char* base;
  uint64_t size;
  std::wstring prefix;
};

struct Mappings {
  std::mutex mu;
  std::vector<MappedSegment> list;
};

inline Mappings& AllMappings() {
  static Mappings m;
  return m;
}

/// A new instance number: never 0, different for each call and each process (it need not be secret).
inline uint64_t NewInstance() {
  static std::atomic<uint64_t> counter{0};
  uint64_t x = static_cast<uint64_t>(MonotonicNs()) ^ (uint64_t{GetCurrentProcessId()} << 32) ^
               (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
  FILETIME ft;
  GetSystemTimeAsFileTime(&ft);
  x ^= (uint64_t{ft.dwHighDateTime} << 32 | ft.dwLowDateTime) * 0xBF58476D1CE4E5B9ull;
  // splitmix64's finaliser: every input bit moves every output bit.
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x != 0 ? x : 1;
}

}  // namespace internal

/// A new pagefile-backed section of `size` bytes for segment `label` (its name), every page committed, under a
/// fresh instance number (SPECIFICATION.md §W3 step 3). Nothing to seal: its size never changes.
inline Result<File> CreateSharedMemory(const std::string& label, uint64_t size) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    const uint64_t instance = internal::NewInstance();
    const std::wstring name = internal::SectionName(label, instance);
    HANDLE h = CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE | SEC_COMMIT,
                                  static_cast<DWORD>(size >> 32), static_cast<DWORD>(size & 0xFFFFFFFFu), name.c_str());
    if (h == nullptr) return SysError("CreateFileMapping", GetLastError());
    if (GetLastError() == ERROR_ALREADY_EXISTS) {  // someone else's object: never adopted
      CloseHandle(h);
      continue;
    }
    File f(h);
    f.set_section(label, instance);
    return f;
  }
  return Error(ErrorCode::kSystem, "CreateFileMapping: 16 fresh section names for " + label + " were all taken");
}

/// Nothing to do on Windows: a pagefile-backed section cannot change size.
inline Result<void> Seal(const File&) { return Ok(); }

/// The size of a section received from a host, for the checks of SPECIFICATION.md §W4 step 5: the region a
/// whole view of it spans (whole pages).
inline Result<uint64_t> CheckSealedSize(const File& f) {
  void* p = MapViewOfFile(f.handle(), FILE_MAP_READ, 0, 0, 0);
  if (p == nullptr) return SysError("MapViewOfFile", GetLastError());
  MEMORY_BASIC_INFORMATION mbi{};
  const SIZE_T n = VirtualQuery(p, &mbi, sizeof mbi);
  UnmapViewOfFile(p);
  if (n == 0) return SysError("VirtualQuery", GetLastError());
  return static_cast<uint64_t>(mbi.RegionSize);
}

/// A read-only handle of the same section, for observers.
inline Result<File> ReopenReadOnly(const File& f) {
  HANDLE h = nullptr;
  if (!DuplicateHandle(GetCurrentProcess(), f.handle(), GetCurrentProcess(), &h, FILE_MAP_READ, FALSE, 0)) {
    return SysError("DuplicateHandle", GetLastError());
  }
  File r(h);
  r.set_section(f.segment_name(), f.instance());
  return r;
}

/// Map `size` bytes of section `f`; read-write unless `writable` is false. Records the mapping, so that waits
/// on its words find their events' names (futex.h).
inline Result<void*> Map(const File& f, uint64_t size, bool writable = true) {
  void* p = MapViewOfFile(f.handle(), writable ? FILE_MAP_READ | FILE_MAP_WRITE : FILE_MAP_READ, 0, 0,
                          static_cast<SIZE_T>(size));
  if (p == nullptr) return SysError("MapViewOfFile", GetLastError());
  auto& m = internal::AllMappings();
  std::lock_guard<std::mutex> lock(m.mu);
  m.list.push_back(
      {static_cast<const unsigned char*>(p), size, internal::SectionName(f.segment_name(), f.instance()) + L"-"});
  return p;
}

inline void Unmap(void* p, uint64_t) noexcept {
  if (p == nullptr) return;
  {
    auto& m = internal::AllMappings();
    std::lock_guard<std::mutex> lock(m.mu);
    m.list.erase(
        std::remove_if(m.list.begin(), m.list.end(), [p](const internal::MappedSegment& s) { return s.base == p; }),
        m.list.end());
  }
  UnmapViewOfFile(p);
}

/// Memory a new segment can still take, in bytes: what the system's commit limit still allows (a SEC_COMMIT
/// section is charged in full at creation), lowered to the physical memory available. ~0 if unknown.
inline uint64_t MemoryAvailable() {
  MEMORYSTATUSEX s{};
  s.dwLength = sizeof s;
  if (!GlobalMemoryStatusEx(&s)) return ~uint64_t{0};
  return (std::min)(static_cast<uint64_t>(s.ullAvailPageFile), static_cast<uint64_t>(s.ullAvailPhys));
}

}  // namespace platform
}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// Linux segment memory: an anonymous memfd, sealed against resizing before anyone else sees it, mapped
// MAP_SHARED. It has no name in any file system: a guest gets the descriptor from the host over the
// rendezvous socket (socket.h), so only an admitted peer can map it, and neither side can shrink or grow it
// under the other (no SIGBUS from a truncated mapping). See SPECIFICATION.md §1 and §3.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>

#include "shm/error.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

namespace shm {
namespace platform {

/// Longest segment name: the abstract socket address "\0shm/<name>" must fit sun_path (108 bytes).
constexpr size_t kMaxNameLength = 100;

/// What PollFiles() waits on: a descriptor. kNoHandle is ignored.
using Handle = int;
constexpr Handle kNoHandle = -1;

/// The seals a segment must carry before it is mapped by a peer, and those it must not carry.
constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
constexpr unsigned kForbiddenSeals = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;

namespace internal {
// strerror_r comes in two shapes (XSI returns int, GNU returns the text); take whichever this libc has.
inline const char* StrerrorText(int rc, const char* buf) noexcept { return rc == 0 ? buf : "unknown error"; }
inline const char* StrerrorText(const char* text, const char*) noexcept { return text; }
}  // namespace internal

/// The text of errno value `err`. Thread-safe (strerror is not).
inline std::string ErrnoText(int err) {
  char buf[128] = {};
  return internal::StrerrorText(::strerror_r(err, buf, sizeof buf), buf);
}

inline Error SysError(const std::string& what, int err) {
  const ErrorCode code = (err == EACCES || err == EPERM) ? ErrorCode::kPermissionDenied : ErrorCode::kSystem;
  return Error(code, what + ": " + ErrnoText(err), wire::WireError::kNone, err);
}

/// Owning file descriptor. Move-only. Not thread-safe.
class File {
 public:
  File() = default;
  explicit File(int fd) : fd_(fd) {}
  File(File&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  File& operator=(File&& o) noexcept {
    if (this != &o) {
      Close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File() { Close(); }
  int fd() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  void Close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

/// A new anonymous memfd of `size` bytes with its pages reserved (so touching a mapped page cannot fail for
/// lack of memory in the file system), not sealed yet: Seal() it once its contents are written.
/// `label` shows in /proc/<pid>/maps and /proc/<pid>/fd as "memfd:<label>".
inline Result<File> CreateSharedMemory(const std::string& label, uint64_t size) {
  int fd = ::memfd_create(label.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return SysError("memfd_create", errno);
  File f(fd);
  // Owner only: a peer handed a read-only descriptor must not reopen it read-write through /proc (a memfd is
  // created 0777). Peers get their descriptors from the host, never by opening.
  if (::fchmod(fd, 0600) != 0) return SysError("fchmod", errno);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return SysError("ftruncate", errno);
  int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) return SysError("fallocate", rc);
  return f;
}

/// Forbid every later change of the size, and of the seals themselves.
inline Result<void> Seal(const File& f) {
  if (::fcntl(f.fd(), F_ADD_SEALS, kRequiredSeals) != 0) return SysError("fcntl(F_ADD_SEALS)", errno);
  return Ok();
}

/// Check a descriptor received from a peer before mapping it: a regular file whose size can never change
/// (SPECIFICATION.md §4.2 step 4). Returns its size. kProtocol if it is not sealed as required.
inline Result<uint64_t> CheckSealedSize(const File& f) {
  struct stat st;
  if (::fstat(f.fd(), &st) != 0) return SysError("fstat", errno);
  if (!S_ISREG(st.st_mode)) return Error(ErrorCode::kProtocol, "the host sent a descriptor that is not a memory file");
  const int seals = ::fcntl(f.fd(), F_GET_SEALS);
  if (seals < 0) {
    return Error(ErrorCode::kProtocol, std::string("the host sent a descriptor without seals: ") + ErrnoText(errno));
  }
  const auto s = static_cast<unsigned>(seals);
  if ((s & kRequiredSeals) != kRequiredSeals || (s & kForbiddenSeals) != 0) {
    return Error(ErrorCode::kProtocol,
                 "the host sent a segment not sealed against resizing (seals 0x" + std::to_string(s) + ")");
  }
  return static_cast<uint64_t>(st.st_size);
}

/// A read-only descriptor of the same memory, for observers: a new open file description, so its holder can
/// neither write nor (sealed) resize.
inline Result<File> ReopenReadOnly(const File& f) {
  const std::string path = "/proc/self/fd/" + std::to_string(f.fd());
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return SysError("open " + path, errno);
  return File(fd);
}

/// Map `size` bytes of `f`, shared; read-write unless `writable` is false.
inline Result<void*> Map(const File& f, uint64_t size, bool writable = true) {
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = ::mmap(nullptr, static_cast<size_t>(size), prot, MAP_SHARED, f.fd(), 0);
  if (p == MAP_FAILED) return SysError("mmap", errno);
  return p;
}

inline void Unmap(void* p, uint64_t size) noexcept {
  if (p != nullptr) ::munmap(p, static_cast<size_t>(size));
}

namespace internal {
inline uint64_t ReadU64File(const std::string& path, bool* ok) {
  std::ifstream in(path);
  std::string v;
  *ok = static_cast<bool>(in >> v) && !v.empty() && v != "max";
  if (!*ok) return 0;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  *ok = end != nullptr && *end == '\0';
  return *ok ? n : 0;
}
}  // namespace internal

/// Memory a new segment can still take, in bytes: the kernel's MemAvailable, lowered to what the process's
/// cgroup (v2) still allows. ~0 when neither can be read. The pages of a segment are reserved at creation, so
/// a segment larger than this would push the machine into reclaim or the cgroup into its OOM killer.
inline uint64_t MemoryAvailable() {
  uint64_t avail = ~uint64_t{0};
  {
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    uint64_t kib = 0;
    std::string unit;
    while (meminfo >> key >> kib) {
      std::getline(meminfo, unit);
      if (key == "MemAvailable:") {
        avail = kib * 1024;
        break;
      }
    }
    std::ifstream cg("/proc/self/cgroup");
    std::string line;
    while (std::getline(cg, line)) {
      if (line.rfind("0::", 0) != 0) continue;  // the cgroup v2 line
      const std::string dir = "/sys/fs/cgroup" + line.substr(3);
      bool has_max = false, has_cur = false;
      const uint64_t max = internal::ReadU64File(dir + "/memory.max", &has_max);
      const uint64_t cur = internal::ReadU64File(dir + "/memory.current", &has_cur);
      if (has_max && has_cur) avail = std::min(avail, max > cur ? max - cur : 0);
    }
  }
  return avail;
}

}  // namespace platform
}  // namespace shm

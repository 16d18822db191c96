// Linux segment file: a file in /dev/shm (tmpfs), mapped MAP_SHARED, and open-file-description (OFD) byte
// locks on it. OFD locks belong to the open file description, conflict even between two descriptions in one
// process, and are released by the kernel when the last descriptor closes — including when the process dies,
// before its parent reaps it. No PID is involved, so PID reuse cannot fool a liveness check.
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "shm/error.h"

namespace shm {
namespace platform {

/// Directory of segment files. A segment named N lives at kSegmentDir + N.
constexpr const char* kSegmentDir = "/dev/shm/";
/// Longest name: NAME_MAX (255) of the file system.
constexpr size_t kMaxNameLength = 255;

/// Byte offsets locked (OFD write locks, length 1) to prove liveness; see SPECIFICATION.md §Liveness.
constexpr off_t kHostLockByte = 0;
constexpr off_t kGuestLockByte = 1;

inline std::string SegmentPath(std::string_view name) { return std::string(kSegmentDir) + std::string(name); }

inline Error SysError(const std::string& what, int err) {
  const ErrorCode code = (err == EACCES || err == EPERM) ? ErrorCode::kPermissionDenied : ErrorCode::kSystem;
  return Error(code, what + ": " + std::strerror(err), wire::WireError::kNone, err);
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

/// Open `path` read-write, creating it (empty, with `mode`) if absent. Never follows a symlink.
inline Result<File> OpenOrCreate(const std::string& path, uint32_t mode) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, static_cast<mode_t>(mode));
  if (fd < 0) return SysError("open " + path, errno);
  return File(fd);
}

/// Open an existing `path` read-write. kNotFound if it does not exist.
inline Result<File> OpenExisting(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return Error(ErrorCode::kNotFound, "no segment file " + path);
    return SysError("open " + path, err);
  }
  return File(fd);
}

/// Set the permission bits exactly (the umask applied at creation may have narrowed them).
inline Result<void> SetMode(const File& f, uint32_t mode) {
  if (::fchmod(f.fd(), static_cast<mode_t>(mode)) != 0) return SysError("fchmod", errno);
  return Ok();
}

inline Result<uint64_t> FileSize(const File& f) {
  struct stat st;
  if (::fstat(f.fd(), &st) != 0) return SysError("fstat", errno);
  return static_cast<uint64_t>(st.st_size);
}

/// Whether `f` is still the file that `path` names (false if it was unlinked or replaced).
inline Result<bool> IsCurrentFile(const File& f, const std::string& path) {
  struct stat a, b;
  if (::fstat(f.fd(), &a) != 0) return SysError("fstat", errno);
  if (::stat(path.c_str(), &b) != 0) {
    if (errno == ENOENT) return false;
    return SysError("stat " + path, errno);
  }
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/// Grow the file to `size` and reserve its blocks, so that touching any mapped page can never raise SIGBUS
/// for lack of space in tmpfs.
inline Result<void> Resize(const File& f, uint64_t size) {
  if (::ftruncate(f.fd(), static_cast<off_t>(size)) != 0) return SysError("ftruncate", errno);
  int rc = ::posix_fallocate(f.fd(), 0, static_cast<off_t>(size));
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) return SysError("posix_fallocate", rc);
  return Ok();
}

/// Bytes free in the segment directory's file system.
inline uint64_t SegmentSpaceAvailable() noexcept {
  struct statvfs sv;
  if (::statvfs(kSegmentDir, &sv) != 0) return ~uint64_t{0};
  return static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
}

/// Read exactly n bytes at offset (without mapping, so a short file cannot raise SIGBUS).
/// Returns the number of bytes read, which is < n only at end of file.
inline Result<size_t> ReadAt(const File& f, void* buf, size_t n, uint64_t offset) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(f.fd(), static_cast<char*>(buf) + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return SysError("pread", errno);
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

/// Map `size` bytes of `f` read-write, shared.
inline Result<void*> Map(const File& f, uint64_t size) {
  void* p = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, f.fd(), 0);
  if (p == MAP_FAILED) return SysError("mmap", errno);
  return p;
}

inline void Unmap(void* p, uint64_t size) noexcept {
  if (p != nullptr) ::munmap(p, static_cast<size_t>(size));
}

/// Remove the name. Processes that have it mapped keep their mapping.
inline void Unlink(const std::string& path) noexcept { ::unlink(path.c_str()); }

inline struct flock LockRequest(short type, off_t byte) {
  struct flock l;
  std::memset(&l, 0, sizeof l);
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = byte;
  l.l_len = 1;
  l.l_pid = 0;  // must be 0 for OFD locks
  return l;
}

/// Try to take the write lock on `byte` without blocking. true: taken (held until Unlock or close);
/// false: another open file description holds it.
inline Result<bool> TryLockByte(const File& f, off_t byte) {
  struct flock l = LockRequest(F_WRLCK, byte);
  if (::fcntl(f.fd(), F_OFD_SETLK, &l) == 0) return true;
  int err = errno;
  if (err == EAGAIN || err == EACCES) return false;
  return SysError("fcntl(F_OFD_SETLK)", err);
}

/// Whether another open file description holds a lock on `byte` (its holder is alive). Does not take it.
inline Result<bool> ByteLockedByOther(const File& f, off_t byte) {
  struct flock l = LockRequest(F_WRLCK, byte);
  if (::fcntl(f.fd(), F_OFD_GETLK, &l) != 0) return SysError("fcntl(F_OFD_GETLK)", errno);
  return l.l_type != F_UNLCK;
}

inline void UnlockByte(const File& f, off_t byte) noexcept {
  struct flock l = LockRequest(F_UNLCK, byte);
  (void)::fcntl(f.fd(), F_OFD_SETLK, &l);
}

}  // namespace platform
}  // namespace shm

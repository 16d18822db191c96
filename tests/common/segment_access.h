// SPDX-License-Identifier: Apache-2.0
// Test-only access to a live segment's memory from outside the library's attach procedure.
//
// A segment has no name in the file system: a host creates it as a memfd labelled "shm/<name>", and a guest
// holds the descriptor it received. A process with ptrace rights over one of them (the same uid, or root, as
// in these tests) can open that descriptor anew through /proc/<pid>/fd. The tests use this to play a hostile
// or broken peer (rewrite fields no valid transition would), or to observe slot states, without a second
// guest seat. It grants nothing the kernel did not already grant: such a process could read the memory
// through /proc/<pid>/mem as well.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace shm_test {

/// A descriptor of segment `name`'s memory as process `pid` holds it, opened with `flags` (O_RDONLY or
/// O_RDWR; O_CLOEXEC is added). -1 if that process holds no such descriptor.
inline int OpenSegmentOf(pid_t pid, const std::string& name, int flags) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  const std::string want = "/memfd:shm/" + name + " (deleted)";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    const std::string link = dir + "/" + e->d_name;
    char target[512];
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (want != target) continue;
    found = ::open(link.c_str(), flags | O_CLOEXEC);
    if (found >= 0) break;
  }
  ::closedir(d);
  return found;
}

/// A mapping of a live segment's whole memory, through OpenSegmentOf. Move-less; unmaps on destruction.
class SegmentMapping {
 public:
  SegmentMapping(pid_t pid, const std::string& name, bool writable) {
    const int fd = OpenSegmentOf(pid, name, writable ? O_RDWR : O_RDONLY);
    if (fd < 0) return;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                       MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        base_ = static_cast<uint8_t*>(p);
        size_ = static_cast<size_t>(st.st_size);
      }
    }
    ::close(fd);
  }
  SegmentMapping(const SegmentMapping&) = delete;
  SegmentMapping& operator=(const SegmentMapping&) = delete;
  ~SegmentMapping() {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  bool ok() const { return base_ != nullptr; }
  uint8_t* base() const { return base_; }
  size_t size() const { return size_; }

 private:
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
};

/// Whether segment `name`'s memory still exists in process `pid` (as a descriptor).
inline bool HoldsSegment(pid_t pid, const std::string& name) {
  const int fd = OpenSegmentOf(pid, name, O_RDONLY);
  if (fd < 0) return false;
  ::close(fd);
  return true;
}

/// Whether a socket is bound to segment `name`'s rendezvous address (a host holds the name).
inline bool NameHeld(const std::string& name) {
  std::FILE* f = std::fopen("/proc/net/unix", "r");
  if (f == nullptr) return false;
  char line[1024];
  const std::string want = "@shm/" + name;
  bool held = false;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string l(line);
    while (!l.empty() && (l.back() == '\n' || l.back() == ' ')) l.pop_back();
    if (l.size() >= want.size() && l.compare(l.size() - want.size(), want.size(), want) == 0 &&
        (l.size() == want.size() || l[l.size() - want.size() - 1] == ' ')) {
      held = true;
      break;
    }
  }
  std::fclose(f);
  return held;
}

}  // namespace shm_test

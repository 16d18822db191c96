// SPDX-License-Identifier: Apache-2.0
// Shared helpers of the multi-process tests: unique segment names, spawning the peer executable, waiting
// for its lines and its exit with deadlines, CPU-time readings, and a fixture with a host in this process and
// a serving guest process.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "../common/segment_access.h"
#include "peer_protocol.h"
#include "process.h"
#include "shm/shm.h"

#ifndef SHM_TEST_PEER
#error "SHM_TEST_PEER must name the shm_test_peer executable"
#endif

namespace shm_test {

/// Deadline for anything that must happen: generous, because sanitizer builds on a loaded 2-core machine are
/// slow. A test waits this long only when it is failing.
constexpr auto kLong = seconds(60);

/// A segment name that no other test uses, in this or any other process: the pid and a counter. The file is
/// removed on construction (a crashed earlier process may have had this pid) and on destruction.
class SegmentName {
 public:
  explicit SegmentName(const std::string& tag) {
    static std::atomic<int> counter{0};
    name_ = "shm-mp-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  }
  SegmentName(const SegmentName&) = delete;
  SegmentName& operator=(const SegmentName&) = delete;
  ~SegmentName() = default;
  const std::string& str() const { return name_; }

 private:
  std::string name_;
};

/// A second, writable mapping of the live segment `name` that process `pid` holds (this test process's own
/// host, or a guest process), for raw protocol steps a well-behaved peer never takes.
inline shm::Result<shm::detail::Segment> MapLiveSegment(pid_t pid, const std::string& name) {
  return shm::detail::Segment::FromDescriptor(shm::platform::File(OpenSegmentOf(pid, name, O_RDWR)), true);
}

/// Start shm_test_peer with `args`.
inline Process SpawnPeer(std::vector<std::string> args, Process::Options options = {}) {
  args.insert(args.begin(), SHM_TEST_PEER);
  return Process::Spawn(args, options);
}

/// Read the process's lines until one starts with `prefix`; fails with its output so far.
inline ::testing::AssertionResult GetLine(Process& p, const std::string& prefix, std::string* line = nullptr,
                                          Clock::duration timeout = kLong) {
  auto l = p.WaitForLine(prefix, timeout);
  if (!l) {
    return ::testing::AssertionFailure() << "pid " << p.pid() << " printed no line starting with '" << prefix
                                         << "'; its output:\n"
                                         << p.transcript();
  }
  if (line != nullptr) *line = *l;
  return ::testing::AssertionSuccess();
}

/// Wait for the process to exit with `code`; fails with how it ended and its output.
inline ::testing::AssertionResult ExitsWith(Process& p, int code, Clock::duration timeout = kLong) {
  auto st = p.Wait(timeout);
  if (st) {
    while (p.ReadLine(milliseconds(200))) {  // collect the rest of its output for the message
    }
  }
  if (!st) {
    return ::testing::AssertionFailure() << "pid " << p.pid() << " is still running at the deadline; its output:\n"
                                         << p.transcript();
  }
  if (!st->Is(code)) {
    return ::testing::AssertionFailure() << "pid " << p.pid() << " ended with " << st->ToString()
                                         << ", expected exit code " << code << "; its output:\n"
                                         << p.transcript();
  }
  return ::testing::AssertionSuccess();
}

inline std::string Str(shm::Bytes b) { return std::string(b.as_string_view()); }
inline std::string Str(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

/// "Timeout: ..." for failure messages about a Result.
template <typename T>
std::string Describe(const shm::Result<T>& r) {
  return r ? std::string("ok") : r.error().ToString();
}

inline shm::HostConfig MakeHostConfig(const std::string& name, uint32_t host_slots = 4, uint32_t guest_slots = 2,
                                      uint32_t payload = 4096) {
  shm::HostConfig c;
  c.name = name;
  c.host_slots = host_slots;
  c.guest_slots = guest_slots;
  c.payload_size = payload;
  c.guest_payload_size = payload;  // the tests size both kinds of slot alike
  return c;
}

/// CPU time consumed by this whole process so far (every thread), in ns.
inline int64_t ProcessCpuNs() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

/// CPU time of another process's live threads, in ns: the sum of /proc/<pid>/task/*/schedstat (nanosecond
/// resolution). Falls back to /proc/<pid>/stat (one clock tick, usually 10 ms) where schedstat is missing.
inline std::optional<int64_t> OtherProcessCpuNs(pid_t pid) {
  const std::string proc = "/proc/" + std::to_string(pid);
  if (DIR* d = ::opendir((proc + "/task").c_str())) {
    int64_t sum = 0;
    bool any = false;
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f(proc + "/task/" + e->d_name + "/schedstat");
      long long ns = 0;
      if (f >> ns) {
        sum += ns;
        any = true;
      }
    }
    ::closedir(d);
    if (any) return sum;
  }
  std::ifstream f(proc + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t paren = all.rfind(')');  // the command name may contain spaces: fields follow the last ')'
  if (paren == std::string::npos) return std::nullopt;
  std::istringstream in(all.substr(paren + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {  // field 3 is the state; 14 utime, 15 stime
    if (i == 14) utime = std::stoll(field);
    if (i == 15) stime = std::stoll(field);
  }
  const long tick = sysconf(_SC_CLK_TCK);
  if (tick <= 0) return std::nullopt;
  return (utime + stime) * (1000000000LL / tick);
}

/// Whether [p, p+n) lies inside this process's mapping of segment <name> (a zero-copy buffer is in place).
inline bool InSegmentMapping(const std::string& name, const void* p, size_t n) {
  std::ifstream maps("/proc/self/maps");
  const std::string path = "/memfd:shm/" + name + " (deleted)";
  std::string line;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    if (line.find(path) == std::string::npos) continue;
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &lo, &hi) != 2) continue;
    if (addr >= lo && addr + n <= hi) return true;
  }
  return false;
}

/// The offset of `p` within this process's mapping of segment `name` (which maps the whole memory from offset
/// 0); UINT64_MAX if `p` is not in it.
inline uint64_t SegmentOffset(const std::string& name, const void* p) {
  std::ifstream maps("/proc/self/maps");
  const std::string path = "/memfd:shm/" + name + " (deleted)";
  std::string line;
  const auto addr = reinterpret_cast<uintptr_t>(p);
  while (std::getline(maps, line)) {
    if (line.find(path) == std::string::npos) continue;
    uintptr_t lo = 0, hi = 0, file_offset = 0;
    char perms[8] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %7s %lx", &lo, &hi, perms, &file_offset) != 4) continue;
    if (addr >= lo && addr < hi) return file_offset + (addr - lo);
  }
  return UINT64_MAX;
}

/// Leaves a host slot held by the guest's blocked handler (request type kTypeBlock with payload `id`): a
/// zero-copy call on it timed out after the guest took it. Returns the slot's index (UINT32_MAX after a
/// failure); the guest has printed "ENTERED <index> <id>" and waits for a line on its stdin. `lost`, if given,
/// receives the ZeroCopySlot that lost its slot.
inline uint32_t AbandonASlot(shm::DirectHost& host, Process& guest, const std::string& id,
                             shm::ZeroCopySlot* lost = nullptr) {
  auto z = host.GetZeroCopySlot(kLong);
  EXPECT_TRUE(z) << Describe(z);
  if (!z) return UINT32_MAX;
  const uint32_t index = z->index();
  // A timeout before the guest took the request gives the slot back (still valid): try again with a longer
  // timeout. A timeout while the guest serves it loses the slot: that is the state wanted here.
  for (auto timeout = milliseconds(20); z->valid(); timeout *= 2) {
    if (timeout > kLong) {
      ADD_FAILURE() << "the guest never took the request";
      return UINT32_MAX;
    }
    std::memcpy(z->RequestBuffer().data(), id.data(), id.size());
    auto r = z->Send(static_cast<int32_t>(id.size()), Type(kTypeBlock), timeout);
    EXPECT_FALSE(r) << "a blocked handler cannot answer";
    if (r) return UINT32_MAX;
    EXPECT_EQ(r.error().code(), shm::ErrorCode::kTimeout) << r.error().ToString();
    // Still holding the slot means the guest never took the request, so it cannot have entered its handler.
    if (z->valid()) {
      auto entered = guest.ReadLine(milliseconds(0));
      if (entered && entered->rfind("ENTERED", 0) == 0) {
        ADD_FAILURE() << "the call timed out while the guest served it (" << *entered
                      << "), yet the caller kept the slot: a late answer could reach its next call";
        return UINT32_MAX;
      }
    }
  }
  std::string line;
  EXPECT_TRUE(GetLine(guest, "ENTERED", &line));
  EXPECT_EQ(line, "ENTERED " + std::to_string(index) + " " + id);
  if (lost != nullptr) *lost = std::move(*z);
  return index;
}

/// A fresh guest of segment `name` answers `message` through `host`; then the host sends shutdown and the guest
/// exits cleanly: the segment serves again after whatever came before. Wrap in ASSERT_NO_FATAL_FAILURE.
inline void FreshGuestServesThenShutsDown(shm::DirectHost& host, const std::string& name, const std::string& message) {
  Process guest = SpawnPeer({"guest", "--name", name});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "SERVING"));
  std::vector<uint8_t> out;
  auto s = host.Send(message, shm::MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(s) << Describe(s);
  EXPECT_EQ(Str(out), message);
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

/// State of slot `index` read straight from a segment file opened as `fd` (still readable after the host
/// removes the name): what the peer sees, whatever this process believes.
inline uint32_t SlotStateIn(int fd, uint32_t index) {
  uint32_t ctl = 0;
  const off_t at = shm::wire::kSegmentHeaderSize + off_t{shm::wire::kSlotHeaderSize} * index;
  EXPECT_EQ(::pread(fd, &ctl, sizeof ctl, at), static_cast<ssize_t>(sizeof ctl));
  return shm::wire::CtlState(ctl);
}
constexpr uint32_t StateValue(shm::wire::SlotState s) { return static_cast<uint32_t>(s); }

/// A host in this process and a guest process serving it (peer `guest --mode serve`).
class HostAndGuest : public ::testing::Test {
 protected:
  /// Init the host with `config` (its name is replaced by this test's) and start the guest. Use with
  /// ASSERT_NO_FATAL_FAILURE.
  void Begin(shm::HostConfig config) {
    config.name = name_.str();
    host_ = std::make_unique<shm::DirectHost>();
    auto r = host_->Init(config);
    ASSERT_TRUE(r) << r.error().ToString();
    ASSERT_NO_FATAL_FAILURE(StartGuest());
  }

  void StartGuest() {
    guest_ = SpawnPeer({"guest", "--name", name_.str()});
    ASSERT_TRUE(guest_.started()) << guest_.error();
    ASSERT_TRUE(GetLine(guest_, "SERVING"));
  }

  void TearDown() override {
    if (host_) host_->Shutdown();
    // End of stdin releases a handler still blocked in kTypeBlock (after a failure); a guest that does not
    // exit on its own is killed by guest_'s destructor.
    guest_.CloseStdin();
    if (guest_.started()) (void)guest_.Wait(seconds(30));
  }

  shm::Result<shm::MsgType> Call(const std::string& request, shm::MsgType type, std::vector<uint8_t>& out,
                                 shm::CallOptions options = {}) {
    if (options.timeout == shm::kUseDefault) options.timeout = kLong;
    return host_->Send(request, type, out, options);
  }

  SegmentName name_{"hg"};
  std::unique_ptr<shm::DirectHost> host_;
  Process guest_;
};

}  // namespace shm_test

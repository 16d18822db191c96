// SPDX-License-Identifier: Apache-2.0
// The peer process of the reliability tests: a real separate process that the tests fork+exec and kill.
//
//   reliability_peer guest <name> [--reconnect]     attach, serve the echo protocol; type kHang blocks
//   reliability_peer host <name>                     create the segment, serve guest calls (kHang blocks);
//                                                    SIGTERM shuts it down cleanly
//   reliability_peer attach <name>                   try to attach once; report the outcome; serve if attached
//   reliability_peer observe <name>                  map the segment as an observer; report the outcome and
//                                                    whether the read-only mapping can be made writable
//   reliability_peer flipper <name> --seed S         keep overwriting sizes and types in every slot header
//   reliability_peer flipped-guest <name> <calls> --seed S   serve and call while a flipper runs; check bounds
//   reliability_peer resize-guest <name>             serve and make guest calls; meanwhile try to resize the
//                                                    segment through its own descriptor; report the errnos
//   reliability_peer resize-host <name>              the same as a host, once a guest attached (SIGTERM ends it)
//   reliability_peer squat <name> [--no-listen]      bind the segment's rendezvous address and hold it
//   reliability_peer big-host <name>                 a host of a 1 GiB segment: "init-start" just before Init
//
// Progress goes to fd 3 as lines ("ready", "entered <slot> <id>", "stats ...", "resize ..."). Exit codes:
// 0 clean, 10 the host died (Wait() said kHostGone), 30 + ErrorCode for a failed Connect or Init, 40 a bound
// was violated, 41 the traffic a resize mode waits for did not come, 2 bad usage. Every mode ends by itself
// after --lifetime seconds (default 300) so nothing outlives a test.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "reliability/testkit.h"
#include "shm/shm.h"

namespace {

using shm::Bytes;
using shm::MsgType;
constexpr auto kHang = static_cast<MsgType>(129);  // a request the handler never finishes

[[noreturn]] void BlockForever() {
  for (;;) ::pause();
}

shm::Reply Echo(const shm::Message& m, shm::MutableBytes out) {
  if (m.type == kHang) {
    testkit::Notify("entered " + std::to_string(m.slot) + " " +
                    std::to_string(m.data.size() >= 8 ? testkit::Get64(m.data.data()) : 0));
    BlockForever();
  }
  if (out.size() < testkit::kEchoAnswerSize ||
      !testkit::WriteEchoAnswer(m.data.data(), m.data.size(), out.data(), static_cast<uint64_t>(::getpid()))) {
    return shm::Reply::Failure();
  }
  return shm::Reply{static_cast<int32_t>(testkit::kEchoAnswerSize), MsgType::NORMAL};
}

int Guest(const std::string& name, bool reconnect) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(20);
  c.reconnect = reconnect;
  shm::DirectGuest g;
  if (auto r = g.Connect(c); !r) {
    testkit::Notify("connect " + r.error().ToString());
    return 30 + static_cast<int>(r.error().code());
  }
  if (auto r = g.Start(Echo); !r) return 3;
  testkit::Notify("ready " + std::to_string(::getpid()));
  auto w = g.Wait();
  testkit::Notify(std::string("exit ") + (w ? "ok" : w.error().ToString()));
  if (!w) return w.error().code() == shm::ErrorCode::kHostGone ? 10 : 11;
  return 0;
}

// The host modes' start: SIGTERM blocked in *term (it ends the host cleanly, the tests' way to stop a host they
// did not crash; blocked before any thread starts so that only sigwait receives it), then Init of 4 host and
// 2 guest slots of 4096 bytes. 0, or the exit code that reports the Init error.
int InitHost(shm::DirectHost& h, const std::string& name, sigset_t* term) {
  sigemptyset(term);
  sigaddset(term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, term, nullptr);
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 4;
  c.guest_slots = 2;
  c.payload_size = 4096;
  if (auto r = h.Init(c); !r) {
    testkit::Notify("init " + r.error().ToString());
    return 30 + static_cast<int>(r.error().code());
  }
  return 0;
}

int Host(const std::string& name) {
  sigset_t term;
  shm::DirectHost h;
  if (int rc = InitHost(h, name, &term); rc != 0) return rc;
  if (auto r = h.Start(Echo); !r) return 3;
  testkit::Notify("ready " + std::to_string(::getpid()));
  int sig = 0;
  sigwait(&term, &sig);  // or SIGKILL from a test, or SIGALRM at the end of --lifetime
  h.Shutdown();
  return 0;
}

int Attach(const std::string& name) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(2);
  shm::DirectGuest g;
  auto r = g.Connect(c);
  testkit::Notify(std::string("connect ") + (r ? "ok" : shm::ToString(r.error().code())));
  if (!r) return 30 + static_cast<int>(r.error().code());
  if (auto s = g.Start(Echo); !s) return 3;
  testkit::Notify("ready");
  return g.Wait() ? 0 : 11;
}

// Overwrites the fields a reader must read once: req_size/req_type (read by the server) and
// resp_size/resp_type/resp_error (read by the caller), in every slot, with values chosen to hurt.
int Flipper(const std::string& name, uint64_t seed) {
  // A third process with ptrace rights over the host (root, or its uid) opens the host's own memfd anew: the
  // observer view only tells it the host's pid.
  testkit::SegmentView probe(name);
  if (!probe.ok()) return 4;
  int fd = shm_test::OpenSegmentOf(static_cast<pid_t>(probe.host_pid()), name, O_RDWR);
  if (fd < 0) return 4;
  shm::wire::SegmentHeader h;
  if (::pread(fd, &h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) return 4;
  const size_t size = h.total_size.load();
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return 4;
  const uint32_t n = h.host_slots.load() + h.guest_slots.load();
  const int32_t cap = static_cast<int32_t>(h.host_payload.load());
  const int32_t sizes[] = {INT_MIN, INT_MAX, cap, cap + 1, -cap, -cap - 1, 0, -1, 1, 2 * cap, -2 * cap, 64};
  const uint32_t types[] = {0, 1, 2, 3, 10, 11, 127, 128, 200, 0xFFFFFFFFu, 126};
  testkit::Rng rng(seed);
  auto* slots = reinterpret_cast<shm::wire::SlotHeader*>(static_cast<uint8_t*>(p) + shm::wire::kSegmentHeaderSize);
  for (uint64_t round = 0;; ++round) {
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t r = rng.Next();
      const int32_t s = (r & 1) ? sizes[(r >> 8) % (sizeof sizes / sizeof *sizes)] : static_cast<int32_t>(r >> 32);
      const uint32_t t = types[(r >> 16) % (sizeof types / sizeof *types)];
      slots[i].req_size.store(static_cast<uint32_t>(s), std::memory_order_relaxed);
      slots[i].req_type.store(t, std::memory_order_relaxed);
      slots[i].resp_size.store(0u - static_cast<uint32_t>(s), std::memory_order_relaxed);
      slots[i].resp_type.store(types[(r >> 24) % (sizeof types / sizeof *types)], std::memory_order_relaxed);
      slots[i].resp_error.store(static_cast<uint32_t>(r >> 40) & 0xF, std::memory_order_relaxed);
    }
    if (round == 1000) testkit::Notify("ready");
  }
}

// Serves and calls while a flipper rewrites sizes and types. Every request the handler sees must lie inside its
// area (its slot's request buffer, or its header for a small one) and every answer must fit the response buffer; every
// call must end in time.
int FlippedGuest(const std::string& name, long calls, uint64_t seed) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(20);
  shm::DirectGuest g;
  if (auto r = g.Connect(c); !r) return 30 + static_cast<int>(r.error().code());
  std::atomic<long> violations{0}, served{0};
  auto handler = [&](const shm::Message& m, shm::MutableBytes out) {
    // The guest serves host slots, whose buffers are as large as the one it was given.
    const shm::wire::Geometry geo{g.host_slots(), g.guest_slots(), static_cast<uint32_t>(out.size()),
                                  g.guest_payload_capacity()};
    if (!testkit::RequestInItsArea(m.data.data(), m.data.size(), m.slot, out.data(), out.size(), geo)) ++violations;
    served.fetch_add(1, std::memory_order_relaxed);
    const uint64_t sum = testkit::Checksum(m.data.data(), m.data.size());  // touches every byte it was given
    const int32_t n = static_cast<int32_t>(std::min<size_t>(out.size(), 8 + (sum & 0xFF)));
    std::memset(out.data(), static_cast<int>(sum & 0xFF), static_cast<size_t>(n));
    return shm::Reply{(sum & 0x100) ? -n : n, MsgType::NORMAL};
  };
  if (auto r = g.Start(handler); !r) return 3;
  testkit::Notify("ready");
  testkit::Rng rng(seed);
  const uint32_t cap = g.guest_payload_capacity();
  long ok = 0, typed = 0, late = 0;
  std::vector<uint8_t> req(cap), resp;
  for (long i = 0; i < calls; ++i) {
    const uint32_t size = rng.Below(cap + 1);
    rng.Fill(req.data(), size);
    shm::CallOptions o;
    o.timeout = std::chrono::milliseconds(200);
    o.end_aligned = rng.Below(2) == 1;
    const int64_t t0 = shm::platform::MonotonicNs();
    auto r =
        g.SendGuestCall(shm::Bytes(req.data(), size), rng.Below(2) ? MsgType::NORMAL : MsgType::APP_START, resp, o);
    if (shm::platform::MonotonicNs() - t0 > 200000000 + 2000000000LL) ++late;  // deadline plus generous slack
    if (r) {
      ++ok;
      if (resp.size() > cap) ++violations;
    } else {
      ++typed;
      const auto code = r.error().code();
      if (code == shm::ErrorCode::kShuttingDown || code == shm::ErrorCode::kHostGone) break;
    }
  }
  testkit::Notify("stats ok=" + std::to_string(ok) + " typed_errors=" + std::to_string(typed) +
                  " late=" + std::to_string(late) + " served=" + std::to_string(served.load()) +
                  " violations=" + std::to_string(violations.load()));
  (void)g.Wait(std::chrono::seconds(60));
  return (violations.load() != 0 || late != 0) ? 40 : 0;
}

// ---- Observers: read-only, and does it stay read-only ----------------------------------------------------

std::string ErrnoName(int e) {
  switch (e) {
    case 0: return "ok";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case EBUSY: return "EBUSY";
    case EBADF: return "EBADF";
    case ENOENT: return "ENOENT";
    case EADDRINUSE: return "EADDRINUSE";
    default: return "errno-" + std::to_string(e);  // one word: the lines are parsed as "key value" pairs
  }
}

// The descriptor number of segment `name`'s memory in this process, or -1.
int OwnSegmentFd(const std::string& name) {
  const std::string want = "/memfd:shm/" + name + " (deleted)";
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    char target[512];
    const std::string link = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (want == target) {
      found = std::atoi(e->d_name);
      break;
    }
  }
  ::closedir(d);
  return found;
}

int Observe(const std::string& name) {
  auto seg = shm::detail::Observe(name, shm::platform::DeadlineAfter(2000000000));
  if (!seg) {
    testkit::Notify(std::string("observe ") + shm::ToString(seg.error().code()));
    return 30 + static_cast<int>(seg.error().code());
  }
  // An observer must not be able to turn what it was given into write access: neither its mapping nor a new
  // open of its descriptor through /proc.
  void* base = &seg->header();
  const int mp = ::mprotect(base, shm::wire::kPage, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
  std::string reopen = "no-descriptor";
  const int own = OwnSegmentFd(name);
  if (own >= 0) {
    const int fd = ::open(("/proc/self/fd/" + std::to_string(own)).c_str(), O_RDWR | O_CLOEXEC);
    reopen = fd >= 0 ? "GRANTED" : ErrnoName(errno);
    if (fd >= 0) ::close(fd);
  }
  testkit::Notify(std::string("observe ok magic ") +
                  (seg->header().magic.load(std::memory_order_acquire) == shm::wire::kMagic ? "valid" : "WRONG") +
                  " mprotect-rw " + (mp == 0 ? "GRANTED" : ErrnoName(mp)) + " reopen-rw " + reopen);
  return 0;
}

// ---- Resizing the segment under the other side ------------------------------------------------------------

// Every way to change the size of the memory behind `fd`, and adding the seal that would stop the other
// side's writes. Returns "ftruncate-0 E ftruncate-half E ftruncate-double E fallocate-grow E seal-write E
// size S" with each attempt's errno name (or "ok" if it succeeded).
std::string TryResize(int fd) {
  auto attempt = [](int rc) { return ErrnoName(rc == 0 ? 0 : errno); };
  struct stat before {};
  if (::fstat(fd, &before) != 0) return "fstat " + ErrnoName(errno);
  const auto size = static_cast<uint64_t>(before.st_size);
  std::string r;
  r += "ftruncate-0 " + attempt(::ftruncate(fd, 0));
  r += " ftruncate-half " + attempt(::ftruncate(fd, static_cast<off_t>(size / 2)));
  r += " ftruncate-double " + attempt(::ftruncate(fd, static_cast<off_t>(size * 2)));
  r += " fallocate-grow " + attempt(::fallocate(fd, 0, static_cast<off_t>(size), shm::wire::kPage));
  r += " seal-write " + attempt(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
  struct stat st {};
  const bool same = ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == size;
  r += " size " + (same ? "unchanged " + std::to_string(size) : "CHANGED to " + std::to_string(st.st_size));
  return r;
}

/// Waits until `pred` holds, at most `timeout_ms`.
template <typename Pred>
bool WaitUntil(Pred pred, int timeout_ms) {
  const int64_t deadline = shm::platform::MonotonicNs() + int64_t{timeout_ms} * 1000000;
  while (!pred()) {
    if (shm::platform::MonotonicNs() >= deadline) return false;
    ::usleep(1000);  // polling a counter other threads advance; bounded by the deadline
  }
  return true;
}

constexpr long kTraffic = 100;  // calls each way before and after the resize attempts

// One side of a resize attack, with traffic both ways: `call` makes this side's echo calls on a thread while
// `served` counts the calls it serves. Once kTraffic of each went through, every resize of this process's
// descriptor of the segment is tried; then the traffic must go on. Reports one "resize ..." line. 0 or 41.
template <typename Call>
int ResizeUnderTraffic(const std::string& name, uint64_t seed, const std::atomic<long>& served, Call call,
                       bool host_side) {
  const std::string mine = host_side ? "host-calls" : "guest-calls";
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, bad{0};
  std::thread caller([&] {
    testkit::Rng rng(seed);
    std::vector<uint8_t> resp;
    for (uint64_t id = 1; !stop.load(); ++id) {
      auto req = testkit::MakeEchoRequest(id, 8 + rng.Below(1000), rng);
      auto r = call(Bytes(req), resp);
      (r && testkit::CheckEchoAnswer(req, resp) == testkit::EchoCheck::kOk ? ok : bad).fetch_add(1);
    }
  });
  auto finish = [&](int code) {
    stop.store(true);
    caller.join();
    return code;
  };
  if (!WaitUntil([&] { return served.load() >= kTraffic && ok.load() >= kTraffic; }, 60000)) {
    testkit::Notify(host_side ? "stuck before: host calls ok " + std::to_string(ok.load()) + " guest calls served " +
                                    std::to_string(served.load())
                              : "stuck before: served " + std::to_string(served.load()) + " guest calls ok " +
                                    std::to_string(ok.load()));
    return finish(41);
  }
  const int fd = shm_test::OpenSegmentOf(::getpid(), name, O_RDWR);
  if (fd < 0) {
    testkit::Notify("resize no-descriptor");
    return finish(41);
  }
  const long served0 = served.load(), ok0 = ok.load();
  const std::string result = TryResize(fd);
  ::close(fd);
  const bool after =
      WaitUntil([&] { return served.load() >= served0 + kTraffic && ok.load() >= ok0 + kTraffic; }, 60000);
  finish(0);
  const std::string calls_after = mine + "-after " + std::to_string(ok.load() - ok0);
  const std::string served_after = "served-after " + std::to_string(served.load() - served0);
  testkit::Notify("resize " + result + " " +
                  (host_side ? calls_after + " " + served_after : served_after + " " + calls_after) + " " +
                  (host_side ? "host" : "guest") + "-call-failures " + std::to_string(bad.load()));
  return after ? 0 : 41;
}

// Serve echo on `side` (a DirectHost's guest calls or a DirectGuest's host calls), counting into `served`,
// and say "ready <pid>".
template <typename Side>
bool StartCountingEcho(Side& side, std::atomic<long>& served) {
  if (!side.Start([&served](const shm::Message& m, shm::MutableBytes out) {
        served.fetch_add(1);
        return Echo(m, out);
      })) {
    return false;
  }
  testkit::Notify("ready " + std::to_string(::getpid()));
  return true;
}

int ResizeGuest(const std::string& name) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(20);
  shm::DirectGuest g;
  if (auto r = g.Connect(c); !r) {
    testkit::Notify("connect " + r.error().ToString());
    return 30 + static_cast<int>(r.error().code());
  }
  std::atomic<long> served{0};
  if (!StartCountingEcho(g, served)) return 3;
  // Guest calls all along, so that the host's guest-call worker serves while the segment is attacked.
  if (int rc = ResizeUnderTraffic(
          name, 7, served,
          [&](Bytes req, std::vector<uint8_t>& resp) {
            return g.SendGuestCall(req, MsgType::NORMAL, resp, {std::chrono::seconds(20)});
          },
          false);
      rc != 0) {
    return rc;
  }
  auto w = g.Wait();
  return w ? 0 : 11;
}

int ResizeHost(const std::string& name) {
  sigset_t term;
  shm::DirectHost h;
  if (int rc = InitHost(h, name, &term); rc != 0) return rc;
  std::atomic<long> served{0};
  if (!StartCountingEcho(h, served)) return 3;
  if (!WaitUntil([&] { return h.GuestAttached(); }, 60000)) {
    testkit::Notify("stuck no guest");
    return 41;
  }
  if (int rc = ResizeUnderTraffic(
          name, 9, served,
          [&](Bytes req, std::vector<uint8_t>& resp) {
            return h.Send(req, MsgType::NORMAL, resp, {std::chrono::seconds(20)});
          },
          true);
      rc != 0) {
    return rc;
  }
  int sig = 0;
  sigwait(&term, &sig);
  h.Shutdown();
  return 0;
}

// ---- Holding a name without being a host --------------------------------------------------------------------

// Binds "\0shm/<name>" as SPECIFICATION.md §1 spells it, without the library, and holds it until killed.
int Squat(const std::string& name, bool listen) {
  const int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return 5;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = std::string(1, '\0') + "shm/" + name;
  if (path.size() > sizeof addr.sun_path) return 2;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (::bind(s, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    testkit::Notify("squat bind " + ErrnoName(errno));
    return 5;
  }
  if (listen && ::listen(s, 16) != 0) {
    testkit::Notify("squat listen " + ErrnoName(errno));
    return 5;
  }
  testkit::Notify("ready " + std::to_string(::getpid()) + " uid " + std::to_string(::geteuid()));
  BlockForever();
}

// A host whose Init takes long (1 GiB of slots to reserve and initialise), to race a second host against.
int BigHost(const std::string& name) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 8;
  c.guest_slots = 0;
  c.payload_size = 64u << 20;  // 8 slots x (request + response) x 64 MiB = 1 GiB
  shm::DirectHost h;
  testkit::Notify("init-start " + std::to_string(::getpid()));
  if (auto r = h.Init(c); !r) {
    testkit::Notify("init " + r.error().ToString());
    return 30 + static_cast<int>(r.error().code());
  }
  testkit::Notify("ready " + std::to_string(::getpid()));
  int sig = 0;
  sigwait(&term, &sig);
  h.Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s guest|host|attach|observe|flipper|flipped-guest|resize-guest|resize-host|squat|big-host "
                 "<name> [args]\n",
                 argv[0]);
    return 2;
  }
  shm::SetLogSink(nullptr);  // handler-failure warnings are expected here; keep test output readable
  const std::string mode = argv[1], name = argv[2];
  bool reconnect = false, listen = true;
  long calls = 1000;
  unsigned lifetime = 300;
  uint64_t seed = 1;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reconnect")
      reconnect = true;
    else if (a == "--no-listen")
      listen = false;
    else if (a == "--lifetime" && i + 1 < argc)
      lifetime = static_cast<unsigned>(std::stoul(argv[++i]));
    else if (a == "--seed" && i + 1 < argc)
      seed = std::stoull(argv[++i]);
    else
      calls = std::stol(a);
  }
  ::alarm(lifetime);  // SIGALRM ends a peer that a test forgot
  if (mode == "guest") return Guest(name, reconnect);
  if (mode == "host") return Host(name);
  if (mode == "attach") return Attach(name);
  if (mode == "flipper") return Flipper(name, seed);
  if (mode == "flipped-guest") return FlippedGuest(name, calls, seed);
  if (mode == "observe") return Observe(name);
  if (mode == "resize-guest") return ResizeGuest(name);
  if (mode == "resize-host") return ResizeHost(name);
  if (mode == "squat") return Squat(name, listen);
  if (mode == "big-host") return BigHost(name);
  return 2;
}

// The peer process of the reliability tests: a real separate process that the tests fork+exec and kill.
//
//   reliability_peer guest <name> [--reconnect]     attach, serve the echo protocol; type kHang blocks
//   reliability_peer host <name>                     create the segment, serve guest calls (kHang blocks);
//                                                    SIGTERM shuts it down cleanly
//   reliability_peer attach <name>                   try to attach once; report the outcome; serve if attached
//   reliability_peer flipper <name> --seed S         keep overwriting sizes and types in every slot header
//   reliability_peer flipped-guest <name> <calls> --seed S   serve and call while a flipper runs; check bounds
//
// Progress goes to fd 3 as lines ("ready", "entered <slot> <id>", "stats ..."). Exit codes: 0 clean,
// 10 the host died (Wait() said kHostGone), 30 + ErrorCode for a failed Connect, 40 a bound was violated,
// 2 bad usage. Every mode ends by itself after --lifetime seconds (default 300) so nothing outlives a test.
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
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

int Host(const std::string& name) {
  // SIGTERM ends the host cleanly (the tests' way to stop a host they did not crash); blocked before any
  // thread starts so that only sigwait below receives it.
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 4;
  c.guest_slots = 2;
  c.payload_size = 4096;
  shm::DirectHost h;
  if (auto r = h.Init(c); !r) {
    testkit::Notify("init " + r.error().ToString());
    return 30 + static_cast<int>(r.error().code());
  }
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
  testkit::SegmentView probe(name);
  int fd = ::open(("/dev/shm/" + name).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0 || !probe.ok()) return 4;
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
// slot's request buffer and every answer must fit the response buffer; every call must end in time.
int FlippedGuest(const std::string& name, long calls, uint64_t seed) {
  shm::GuestConfig c;
  c.name = name;
  c.connect_timeout = std::chrono::seconds(20);
  shm::DirectGuest g;
  if (auto r = g.Connect(c); !r) return 30 + static_cast<int>(r.error().code());
  std::atomic<long> violations{0}, served{0};
  auto handler = [&](const shm::Message& m, shm::MutableBytes out) {
    const uint8_t* req_begin = out.data() - out.size();  // the request buffer precedes the response buffer
    if (m.data.size() > out.size() || m.data.data() < req_begin || m.data.end() > out.data()) ++violations;
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
    const int64_t t0 = testkit::NowNs();
    auto r = g.SendGuestCall(shm::Bytes(req.data(), size), rng.Below(2) ? MsgType::NORMAL : MsgType::APP_START,
                             resp, o);
    if (testkit::NowNs() - t0 > 200000000 + 2000000000LL) ++late;  // deadline plus generous slack
    if (r) {
      ++ok;
      if (resp.size() > cap) ++violations;
    } else {
      ++typed;
      const auto code = r.error().code();
      if (code == shm::ErrorCode::kShuttingDown || code == shm::ErrorCode::kHostGone) break;
    }
  }
  testkit::Notify("stats ok=" + std::to_string(ok) + " typed_errors=" + std::to_string(typed) + " late=" +
                  std::to_string(late) + " served=" + std::to_string(served.load()) + " violations=" +
                  std::to_string(violations.load()));
  (void)g.Wait(std::chrono::seconds(60));
  return (violations.load() != 0 || late != 0) ? 40 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s guest|host|attach|flipper|flipped-guest <name> [args]\n", argv[0]);
    return 2;
  }
  shm::SetLogSink(nullptr);  // handler-failure warnings are expected here; keep test output readable
  const std::string mode = argv[1], name = argv[2];
  bool reconnect = false;
  long calls = 1000;
  unsigned lifetime = 300;
  uint64_t seed = 1;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reconnect") reconnect = true;
    else if (a == "--lifetime" && i + 1 < argc) lifetime = static_cast<unsigned>(std::stoul(argv[++i]));
    else if (a == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
    else calls = std::stol(a);
  }
  ::alarm(lifetime);  // SIGALRM ends a peer that a test forgot
  if (mode == "guest") return Guest(name, reconnect);
  if (mode == "host") return Host(name);
  if (mode == "attach") return Attach(name);
  if (mode == "flipper") return Flipper(name, seed);
  if (mode == "flipped-guest") return FlippedGuest(name, calls, seed);
  return 2;
}

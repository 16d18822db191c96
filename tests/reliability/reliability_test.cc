// SPDX-License-Identifier: Apache-2.0
// Peer death, hostile peers, permissions and hygiene, with real peer processes (reliability_peer) that the
// tests fork+exec and SIGKILL. Each test prints "RELIABILITY|<fault>|<observed outcome>" lines;
// scripts/reliability_table.py joins them with the test's pass/fail into RELIABILITY.md's table.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "reliability/testkit.h"
#include "shm/shm.h"

namespace {

using namespace std::chrono_literals;
using shm::ErrorCode;
using shm::MsgType;
using testkit::Child;

constexpr auto kHang = static_cast<MsgType>(129);  // the peer's handler never returns from this type
const std::string kPeer = SHM_RELIABILITY_PEER;

void Record(const std::string& fault, const std::string& outcome) {
  std::printf("RELIABILITY|%s|%s\n", fault.c_str(), outcome.c_str());
  std::fflush(stdout);
}

std::string Ms(double ms) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f ms", ms);
  return b;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

uint64_t Seed() {
  const char* s = std::getenv("SHM_SEED");
  const uint64_t seed =
      s ? std::strtoull(s, nullptr, 0) : static_cast<uint64_t>(shm::platform::MonotonicNs()) ^ ::getpid();
  std::printf("seed %" PRIu64 " (replay with SHM_SEED=%" PRIu64 ")\n", seed, seed);
  return seed;
}

shm::HostConfig HostCfg(const std::string& name) {
  shm::HostConfig c;
  c.name = name;
  c.host_slots = 4;
  c.guest_slots = 2;
  c.payload_size = 4096;
  return c;
}

/// Spawn the peer in `mode` and wait for its "ready" line.
::testing::AssertionResult SpawnPeer(Child& c, const std::string& mode, const std::string& name,
                                     std::vector<std::string> extra = {}, const testkit::SpawnOptions& o = {},
                                     const std::string& peer = kPeer) {
  std::vector<std::string> argv{peer, mode, name};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!c.Spawn(argv, o)) return ::testing::AssertionFailure() << "fork failed: " << std::strerror(errno);
  std::string line = c.WaitFor("ready", 30000);
  if (line.empty()) {
    return ::testing::AssertionFailure() << "peer " << mode << " did not become ready (last line: '" << c.last_line()
                                         << "')";
  }
  return ::testing::AssertionSuccess();
}

/// One echo call; the answer must carry this call's id and the checksum of what it sent.
::testing::AssertionResult EchoOnce(shm::DirectHost& host, uint64_t id, uint64_t* server_pid = nullptr) {
  testkit::Rng rng(id);
  auto req = testkit::MakeEchoRequest(id, 100, rng);
  std::vector<uint8_t> resp;
  shm::CallOptions o;
  o.timeout = 20s;
  auto r = host.Send(req, MsgType::NORMAL, resp, o);
  if (!r) return ::testing::AssertionFailure() << r.error().ToString();
  if (testkit::CheckEchoAnswer(req, resp) != testkit::EchoCheck::kOk) {
    return ::testing::AssertionFailure() << "wrong answer";
  }
  if (server_pid) *server_pid = testkit::Get64(resp.data() + 16);
  return ::testing::AssertionSuccess();
}

/// A host call of type kHang on `slot`, on its own thread; records how and when it ended.
struct PendingCall {
  std::thread thread;
  std::atomic<int64_t> end_ns{0};
  ErrorCode code = ErrorCode::kInvalidArgs;
  bool ok = false;
  void Start(shm::DirectHost& host, uint32_t slot, std::chrono::seconds timeout) {
    thread = std::thread([this, &host, slot, timeout] {
      testkit::Rng rng(slot);
      auto req = testkit::MakeEchoRequest(1000 + slot, 64, rng);
      std::vector<uint8_t> resp;
      shm::CallOptions o;
      o.timeout = timeout;
      auto r = host.SendToSlot(slot, req, kHang, resp, o);
      ok = r.ok();
      if (!r) code = r.error().code();
      end_ns.store(shm::platform::MonotonicNs());
    });
  }
  void Join() {
    if (thread.joinable()) thread.join();
  }
  ~PendingCall() { Join(); }
};

// ---- 1. The guest dies inside a handler -------------------------------------------------------------------

TEST(GuestDeath, KilledInsideHandlerEndsCallWithPeerDead) {
  const std::string name = testkit::UniqueName("kill-in-handler");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  testkit::SegmentView view(name);
  ASSERT_TRUE(view.ok()) << view.error();
  std::vector<double> latencies;
  for (int trial = 0; trial < 5; ++trial) {
    Child guest;
    ASSERT_TRUE(SpawnPeer(guest, "guest", name));
    // The guest (restarted after the first trial) attaches to the same segment and serves.
    ASSERT_TRUE(EchoOnce(host, 1 + static_cast<uint64_t>(trial)));
    PendingCall call;
    const uint32_t slot = static_cast<uint32_t>(trial) % host.host_slots();
    call.Start(host, slot, 30s);
    const bool entered = !guest.WaitFor("entered", 30000).empty();
    const int64_t killed = shm::platform::MonotonicNs();
    guest.Kill();
    call.Join();
    ASSERT_TRUE(entered);
    EXPECT_FALSE(call.ok);
    EXPECT_EQ(call.code, ErrorCode::kPeerDead) << shm::ToString(call.code);
    latencies.push_back(static_cast<double>(call.end_ns.load() - killed) / 1e6);
    host.ReleaseParkedSlots();  // EchoOnce's slot, parked for this thread's next Send
    EXPECT_EQ(view.Busy(), "") << "the dead guest's slot must be FREE when the call returns";
    EXPECT_NE(testkit::ExitCode(guest.Reap(10000)), -1);
  }
  // The last restart serves too.
  Child guest;
  ASSERT_TRUE(SpawnPeer(guest, "guest", name));
  EXPECT_TRUE(EchoOnce(host, 99));
  const double med = Median(latencies), worst = *std::max_element(latencies.begin(), latencies.end());
  Record("guest SIGKILLed inside a handler (5 trials, call deadline 30 s)",
         "host call ended PeerDead " + Ms(med) + " after the kill (median; max " + Ms(worst) +
             "); slot FREE on return; a restarted guest attached to the same segment and served");
  EXPECT_LT(med, 200.0);
  EXPECT_LT(worst, 3000.0);
}

TEST(GuestDeath, KillsUnderLoadLoseNothing) {
  const uint64_t seed = Seed();
  testkit::Rng main_rng(seed);
  const std::string name = testkit::UniqueName("kill-under-load");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  testkit::SegmentView view(name);
  ASSERT_TRUE(view.ok()) << view.error();
  auto guest = std::make_unique<Child>();
  ASSERT_TRUE(SpawnPeer(*guest, "guest", name));

  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, wrong_id{0}, corrupt{0}, peer_dead{0}, restarted{0}, other{0};
  std::mutex mu;
  std::map<std::string, long> others;
  std::vector<std::thread> callers;
  for (uint64_t t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      testkit::Rng rng(seed * 31 + t);
      std::vector<uint8_t> resp;
      for (uint64_t n = 0; !stop.load(); ++n) {
        const uint64_t id = (t << 48) | n;
        auto req = testkit::MakeEchoRequest(id, 8 + rng.Below(4000), rng);
        shm::CallOptions o;
        o.timeout = 20s;
        o.end_aligned = rng.Below(2) == 1;
        auto r = host.Send(req, rng.Below(2) ? MsgType::NORMAL : MsgType::APP_START, resp, o);
        if (r) {
          switch (testkit::CheckEchoAnswer(req, resp)) {
            case testkit::EchoCheck::kOk: ++ok; break;
            case testkit::EchoCheck::kWrongId: ++wrong_id; break;
            default: ++corrupt; break;
          }
        } else if (r.error().code() == ErrorCode::kPeerDead) {
          ++peer_dead;
        } else if (r.error().code() == ErrorCode::kRemote &&
                   r.error().remote() == shm::wire::WireError::kPeerRestarted) {
          ++restarted;
        } else {
          ++other;
          std::lock_guard<std::mutex> l(mu);
          ++others[r.error().ToString()];
        }
      }
    });
  }
  auto wait_progress = [&](long more) {
    const long target = ok.load() + more;
    const int64_t deadline = shm::platform::MonotonicNs() + 60'000'000'000;
    while (ok.load() < target && shm::platform::MonotonicNs() < deadline) std::this_thread::sleep_for(1ms);
    return ok.load() >= target;
  };
  bool progressed = wait_progress(300);
  int kills = 0;
  for (; kills < 3 && progressed; ++kills) {
    guest->Kill();  // at a random point of the traffic
    // A supervisor restarts the guest once it is dead (its parent was told), not yet reaped: the successor
    // attaches anyway. (While the killed process is still tearing down, it still holds the guest seat.)
    if (!testkit::WaitDeadUnreaped(guest->pid(), 10000)) break;
    auto next = std::make_unique<Child>();
    if (!SpawnPeer(*next, "guest", name)) break;
    guest->Reap(10000);
    guest = std::move(next);
    progressed = wait_progress(200 + main_rng.Below(500));
  }
  stop = true;
  for (auto& t : callers) t.join();
  EXPECT_TRUE(progressed);
  EXPECT_EQ(kills, 3);
  EXPECT_EQ(wrong_id.load(), 0) << "an answer reached the wrong call";
  EXPECT_EQ(corrupt.load(), 0);
  for (auto& [what, n] : others) ADD_FAILURE() << n << " calls ended with " << what;
  host.ReleaseParkedSlots();  // the callers' parked slots: only leaked ones may remain
  const std::string busy = view.WaitAllFree(5000);
  EXPECT_EQ(busy, "");
  EXPECT_TRUE(EchoOnce(host, 7));
  Record("guest SIGKILLed 3 times at random points under load (4 callers)",
         std::to_string(ok.load()) + " calls answered correctly, " + std::to_string(peer_dead.load()) +
             " ended PeerDead, " + std::to_string(restarted.load()) + " answered PeerRestarted by the successor, " +
             std::to_string(other.load()) + " other errors; " + std::to_string(wrong_id.load()) + " misdelivered, " +
             std::to_string(corrupt.load()) +
             " corrupt; slots FREE after: " + (busy.empty() ? "all" : "NO (" + busy + ")"));
}

// ---- 3. A dead process that its parent has not reaped ------------------------------------------------------

// The leader of a multi-threaded process shows 'Z' as soon as it exits, while its other threads may still be
// tearing down (and holding the files). A child is dead-but-unreaped once waitid(WNOWAIT) reports it.
bool WaitZombie(pid_t pid) { return testkit::WaitDeadUnreaped(pid, 10000) && testkit::ProcState(pid) == 'Z'; }

TEST(GuestDeath, UnreapedGuestIsDead) {
  const std::string name = testkit::UniqueName("zombie-guest");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  Child guest;
  ASSERT_TRUE(SpawnPeer(guest, "guest", name));
  PendingCall call;
  call.Start(host, 1, 30s);
  const bool entered = !guest.WaitFor("entered", 30000).empty();
  guest.Kill();
  const bool zombie = WaitZombie(guest.pid());
  // The kernel has closed the dead guest's connection; GuestAttached() reports what the host's doorman thread
  // saw of it, which it notices when it next runs. Give it that time (bounded), the child still unreaped.
  const int64_t dead = shm::platform::MonotonicNs();
  while (host.GuestAttached() && shm::platform::MonotonicNs() - dead < 10'000'000'000)
    std::this_thread::sleep_for(100us);
  const bool attached = host.GuestAttached();
  const double noticed_ms = static_cast<double>(shm::platform::MonotonicNs() - dead) / 1e6;
  const char state = testkit::ProcState(guest.pid());
  call.Join();
  EXPECT_TRUE(entered);
  ASSERT_TRUE(zombie) << "the killed child should stay a zombie until reaped";
  EXPECT_FALSE(attached);
  EXPECT_EQ(state, 'Z');
  EXPECT_EQ(call.code, ErrorCode::kPeerDead);
  EXPECT_EQ(testkit::ProcState(guest.pid()), 'Z');
  Record("guest SIGKILLed and left unreaped (zombie)",
         std::string("while /proc state was Z: GuestAttached()=") + (attached ? "true" : "false") + " " +
             Ms(noticed_ms) + " after it was dead, pending call ended " + shm::ToString(call.code));
  guest.Reap(10000);
}

TEST(HostDeath, UnreapedHostIsDead) {
  const std::string name = testkit::UniqueName("zombie-host");
  Child host;
  ASSERT_TRUE(SpawnPeer(host, "host", name));
  shm::DirectGuest guest;
  ASSERT_TRUE(guest.Connect({name}));
  host.Kill();
  ASSERT_TRUE(WaitZombie(host.pid()));
  const bool alive = guest.HostAlive();
  shm::DirectHost next;
  auto init = next.Init(HostCfg(name));
  EXPECT_FALSE(alive);
  EXPECT_TRUE(init) << init.error().ToString();
  Record("host SIGKILLed and left unreaped (zombie)",
         std::string("while /proc state was Z: HostAlive()=") + (alive ? "true" : "false") +
             ", a new host Init under the name: " + (init ? "ok" : init.error().ToString()));
  host.Reap(10000);
}

// ---- 2. The host dies -------------------------------------------------------------------------------------

TEST(HostDeath, KilledHostEndsGuestWorkersAndPendingCall) {
  std::vector<double> call_ms, wait_ms;
  for (int trial = 0; trial < 3; ++trial) {
    const std::string name = testkit::UniqueName("kill-host");
    Child host;
    ASSERT_TRUE(SpawnPeer(host, "host", name));
    shm::DirectGuest guest;
    ASSERT_TRUE(guest.Connect({name}));
    ASSERT_TRUE(guest.Start([](const shm::Message&, shm::MutableBytes) { return shm::Reply{}; }));
    std::atomic<int64_t> call_end{0};
    ErrorCode call_code = ErrorCode::kInvalidArgs;
    std::thread caller([&] {
      std::vector<uint8_t> resp;
      shm::CallOptions o;
      o.timeout = 30s;
      auto r = guest.SendGuestCall("hang", kHang, resp, o);
      if (!r) call_code = r.error().code();
      call_end = shm::platform::MonotonicNs();
    });
    const bool entered = !host.WaitFor("entered", 30000).empty();
    const int64_t killed = shm::platform::MonotonicNs();
    host.Kill();
    auto w = guest.Wait(30s);
    const int64_t wait_end = shm::platform::MonotonicNs();
    caller.join();
    ASSERT_TRUE(entered);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().code(), ErrorCode::kHostGone) << w.error().ToString();
    EXPECT_EQ(call_code, ErrorCode::kHostGone) << shm::ToString(call_code);
    call_ms.push_back(static_cast<double>(call_end.load() - killed) / 1e6);
    wait_ms.push_back(static_cast<double>(wait_end - killed) / 1e6);
    // Later calls of the orphaned guest fail typed, at once.
    std::vector<uint8_t> resp;
    auto late = guest.SendGuestCall("x", MsgType::NORMAL, resp, {5s});
    EXPECT_FALSE(late);
    guest.Close();
    // A new host takes the name at once (first attempt), and a new guest serves it.
    shm::DirectHost next;
    auto init = next.Init(HostCfg(name));
    ASSERT_TRUE(init) << init.error().ToString();
    Child g2;
    ASSERT_TRUE(SpawnPeer(g2, "guest", name));
    EXPECT_TRUE(EchoOnce(next, 5));
    host.Reap(10000);
  }
  Record("host SIGKILLed while a guest call is served and guest workers idle (3 trials)",
         "pending guest call ended HostGone " + Ms(Median(call_ms)) + " after the kill (median; max " +
             Ms(*std::max_element(call_ms.begin(), call_ms.end())) + "); Wait() returned HostGone after " +
             Ms(Median(wait_ms)) + " (median; max " + Ms(*std::max_element(wait_ms.begin(), wait_ms.end())) +
             "); a new host Init under the same name succeeded at the first attempt and a new guest served it");
  EXPECT_LT(Median(call_ms), 200.0);
  EXPECT_LT(Median(wait_ms), 200.0);
  EXPECT_LT(*std::max_element(call_ms.begin(), call_ms.end()), 3000.0);
  EXPECT_LT(*std::max_element(wait_ms.begin(), wait_ms.end()), 3000.0);
}

TEST(HostDeath, ReconnectingGuestFollowsNewHost) {
  const std::string name = testkit::UniqueName("reconnect");
  Child old_host;
  ASSERT_TRUE(SpawnPeer(old_host, "host", name));
  Child guest;
  ASSERT_TRUE(SpawnPeer(guest, "guest", name, {"--reconnect"}));
  old_host.Kill();
  old_host.Reap(10000);
  // The guest notices the death within its liveness slice; the new host comes up right away.
  shm::DirectHost next;
  auto init = next.Init(HostCfg(name));
  ASSERT_TRUE(init) << init.error().ToString();
  const int64_t t0 = shm::platform::MonotonicNs();
  uint64_t server = 0;
  EXPECT_TRUE(EchoOnce(next, 11, &server));
  const double first_ms = static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e6;
  EXPECT_EQ(server, static_cast<uint64_t>(guest.pid())) << "the same guest process must serve the new host";
  EXPECT_TRUE(EchoOnce(next, 12));
  Record("host SIGKILLed with a guest started with GuestConfig::reconnect",
         std::string(server == static_cast<uint64_t>(guest.pid()) ? "the same guest process (pid checked)"
                                                                  : "ANOTHER process") +
             " served the new host's calls without a restart; the first was answered " + Ms(first_ms) +
             " after the new host's Init");
}

// ---- 5. Read-once: sizes and types change under the reader ---------------------------------------------------

TEST(ReadOnce, FlippedSizesAndTypesNeverReadOutOfBounds) {
  const uint64_t seed = Seed();
  const std::string name = testkit::UniqueName("read-once");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  std::atomic<long> violations{0}, served{0};
  ASSERT_TRUE(host.Start([&](const shm::Message& m, shm::MutableBytes out) {
    // The host serves guest slots, whose buffers are as large as the one it was given.
    const shm::wire::Geometry g{host.host_slots(), host.guest_slots(), host.payload_capacity(),
                                static_cast<uint32_t>(out.size())};
    if (!testkit::RequestInItsArea(m.data.data(), m.data.size(), m.slot, out.data(), out.size(), g)) ++violations;
    ++served;
    const uint64_t sum = testkit::Checksum(m.data.data(), m.data.size());
    const int32_t n = static_cast<int32_t>(std::min<size_t>(out.size(), 8 + (sum & 0xFF)));
    std::memset(out.data(), 1, static_cast<size_t>(n));
    return shm::Reply{(sum & 0x100) ? -n : n, MsgType::NORMAL};
  }));
  Child guest, flipper;
  ASSERT_TRUE(SpawnPeer(guest, "flipped-guest", name, {"4000", "--seed", std::to_string(seed + 100)}));
  ASSERT_TRUE(SpawnPeer(flipper, "flipper", name, {"--seed", std::to_string(seed + 200)}));
  const uint32_t cap = host.payload_capacity();
  std::mutex mu;
  std::map<std::string, long> outcomes;
  std::atomic<long> late{0}, too_big{0};
  std::vector<std::thread> callers;
  for (uint64_t t = 0; t < 2; ++t) {
    callers.emplace_back([&, t] {
      testkit::Rng rng(seed + t);
      std::vector<uint8_t> req(cap), resp;
      std::map<std::string, long> mine;
      for (int i = 0; i < 2000; ++i) {
        const uint32_t size = rng.Below(cap + 1);
        shm::CallOptions o;
        o.timeout = 200ms;
        o.end_aligned = rng.Below(2) == 1;
        const int64_t t0 = shm::platform::MonotonicNs();
        auto r = host.Send(shm::Bytes(req.data(), size), rng.Below(2) ? MsgType::NORMAL : MsgType::FLATBUFFER, resp, o);
        if (shm::platform::MonotonicNs() - t0 > 2'200'000'000) ++late;
        if (r && resp.size() > cap) ++too_big;
        ++mine[r ? "ok"
                 : (r.error().code() == ErrorCode::kRemote
                        ? std::string("Remote/") + shm::wire::ToString(r.error().remote())
                        : shm::ToString(r.error().code()))];
      }
      std::lock_guard<std::mutex> l(mu);
      for (auto& [k, v] : mine) outcomes[k] += v;
    });
  }
  for (auto& t : callers) t.join();
  const std::string stats = guest.WaitFor("stats", 300000);
  flipper.Kill();
  (void)host.SendShutdown();
  const int guest_exit = testkit::ExitCode(guest.Reap(60000));
  flipper.Reap(10000);
  std::string summary;
  long rejected = 0;
  for (auto& [k, v] : outcomes) {
    summary += k + "=" + std::to_string(v) + " ";
    if (k != "ok") rejected += v;
  }
  EXPECT_EQ(violations.load(), 0) << "the host's handler saw a request outside its buffer";
  EXPECT_EQ(too_big.load(), 0);
  EXPECT_EQ(late.load(), 0) << "a call ran past its deadline";
  EXPECT_GT(rejected, 0) << "the flipper never hit the reader's window; the test proved nothing";
  EXPECT_NE(stats, "");
  EXPECT_EQ(guest_exit, 0) << "the guest saw a bound violated or a late call: " << stats;
  Record("a third process rewrites req/resp sizes and types in every slot while host and guest call and serve",
         "host calls: " + summary +
             "(every call ended with an answer or a typed error, none past its deadline); "
             "host handler saw " +
             std::to_string(violations.load()) + " out-of-bounds requests in " + std::to_string(served.load()) +
             " served; guest calls: " + stats.substr(std::min<size_t>(stats.size(), 6)));
}

// ---- 7. Permissions -------------------------------------------------------------------------------------------

constexpr int kNobody = 65534;

/// A copy of the peer that another user can execute (the build tree may not be reachable for it).
class PeerCopy {
 public:
  PeerCopy() {
    namespace fs = std::filesystem;
    dir_ = fs::temp_directory_path() / testkit::UniqueName("peer");
    fs::create_directories(dir_);
    fs::permissions(dir_, fs::perms(0755));
    path_ = (dir_ / "reliability_peer").string();
    fs::copy_file(kPeer, path_);
    fs::permissions(path_, fs::perms(0755));
  }
  ~PeerCopy() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::filesystem::path dir_;
  std::string path_;
};

/// Run the peer in `mode` ("attach" as a guest, "observe" as an observer) as `who`; returns its outcome line
/// ("connect ok", "connect PermissionDenied", "observe ok ...", ...) and, through `exit_code`, how it ended.
/// An attached guest serves until its host shuts down: pass `keep` to get it back still running.
std::string TryAs(const PeerCopy& peer, const std::string& mode, const std::string& name,
                  const testkit::SpawnOptions& who, int* exit_code = nullptr, Child* keep = nullptr) {
  Child local;
  Child& c = keep != nullptr ? *keep : local;
  if (!c.Spawn({peer.path(), mode, name}, who)) return std::string("start failed: ") + std::strerror(errno);
  const std::string line = c.WaitFor(mode == "attach" ? "connect" : "observe", 30000);
  if (keep == nullptr) {
    const int code = testkit::ExitCode(c.Reap(30000));
    if (exit_code != nullptr) *exit_code = code;
  }
  return line.empty() ? "(no line; last: '" + c.last_line() + "')" : line;
}

/// Run the peer as a guest of `host` (segment `name`) as `who`: it must attach, serve call `id` itself, and exit
/// 0 once the host shuts down. Returns its outcome line.
std::string AttachServeAndShutDown(const PeerCopy& peer, shm::DirectHost& host, const std::string& name,
                                   const testkit::SpawnOptions& who, uint64_t id) {
  Child member;
  const std::string line = TryAs(peer, "attach", name, who, nullptr, &member);
  EXPECT_EQ(line, "connect ok");
  EXPECT_FALSE(member.WaitFor("ready", 30000).empty());
  uint64_t server = 0;
  EXPECT_TRUE(EchoOnce(host, id, &server));
  EXPECT_EQ(server, static_cast<uint64_t>(member.pid()));
  host.Shutdown();
  EXPECT_EQ(testkit::ExitCode(member.Reap(30000)), 0);
  return line;
}

TEST(Permissions, SegmentIs0600ByDefault) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another uid (nobody, 65534)";
  PeerCopy peer;
  // Another uid in the host's own group (the host runs as root: group 0). Only the group bits tell it apart
  // from the host's user.
  const testkit::SpawnOptions same_group{kNobody, static_cast<int>(::getegid())};
  const std::string name = testkit::UniqueName("mode");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  const std::string guest_line = TryAs(peer, "attach", name, same_group);
  const std::string observer_line = TryAs(peer, "observe", name, same_group);
  EXPECT_EQ(guest_line, "connect PermissionDenied");
  EXPECT_EQ(observer_line, "observe PermissionDenied");

  // HostConfig::mode = 0660 with the default group (the host's effective group): the same process attaches.
  auto c = HostCfg(name + "-g");
  c.mode = 0660;
  shm::DirectHost shared;
  ASSERT_TRUE(shared.Init(c));
  const std::string shared_line = AttachServeAndShutDown(peer, shared, c.name, same_group, 4);
  Record("default admission mode (HostConfig::mode 0600): a process of another uid (nobody) in the host's group",
         "default mode: guest '" + guest_line + "', observer '" + observer_line +
             "'; with HostConfig::mode = 0660 (group: the host's effective group): '" + shared_line +
             "' and it served a call");
}

TEST(Permissions, OtherUserCannotAttachAndGroupModeShares) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another uid (nobody, 65534)";
  PeerCopy peer;
  const testkit::SpawnOptions nobody{kNobody, kNobody};

  // Default mode 0600: the other user is refused with a typed error.
  const std::string name = testkit::UniqueName("perm");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  int denied_exit = -1;
  const std::string denied_line = TryAs(peer, "attach", name, nobody, &denied_exit);
  EXPECT_EQ(denied_line, "connect PermissionDenied");
  EXPECT_EQ(denied_exit, 30 + static_cast<int>(ErrorCode::kPermissionDenied));

  // Mode 0660 but a group the other user is not in (the default: the host's own group): still refused.
  auto c = HostCfg(name + "-g");
  c.mode = 0660;
  shm::DirectHost outsider_host;
  ASSERT_TRUE(outsider_host.Init(c));
  const std::string outsider_line = TryAs(peer, "attach", c.name, nobody);
  EXPECT_EQ(outsider_line, "connect PermissionDenied");

  // Mode 0660 and HostConfig::group = the other user's group: it attaches and serves.
  auto m = HostCfg(name + "-m");
  m.mode = 0660;
  m.group = kNobody;
  shm::DirectHost group_host;
  ASSERT_TRUE(group_host.Init(m));
  const std::string member_line = AttachServeAndShutDown(peer, group_host, m.name, nobody, 3);
  Record("a guest running as another uid (nobody) attaches",
         "mode 0600: '" + denied_line + "'; mode 0660, group not the guest's: '" + outsider_line +
             "'; mode 0660, HostConfig::group = the guest's group: '" + member_line + "' and it served a call");
}

TEST(Permissions, GroupReadModeAdmitsObserversNotGuests) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another uid (nobody, 65534)";
  PeerCopy peer;
  const testkit::SpawnOptions member{kNobody, kNobody}, other{kNobody, kNobody - 1};
  const std::string name = testkit::UniqueName("perm-ro");
  auto c = HostCfg(name);
  c.mode = 0640;
  c.group = kNobody;
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(c));
  Child guest;  // the host's own guest, attached all along: an observer must not disturb it
  ASSERT_TRUE(SpawnPeer(guest, "guest", name));
  const std::string observer_line = TryAs(peer, "observe", name, member);
  const std::string guest_line = TryAs(peer, "attach", name, member);
  const std::string other_line = TryAs(peer, "observe", name, other);
  EXPECT_EQ(observer_line.rfind("observe ok magic valid", 0), 0u) << observer_line;
  // The observer's mapping is read-only, and so is every way back to the memory from what it was given.
  EXPECT_NE(observer_line.find("mprotect-rw EACCES"), std::string::npos) << observer_line;
  EXPECT_NE(observer_line.find("reopen-rw EACCES"), std::string::npos) << observer_line;
  EXPECT_EQ(guest_line, "connect PermissionDenied");
  EXPECT_EQ(other_line, "observe PermissionDenied");
  uint64_t server = 0;
  EXPECT_TRUE(EchoOnce(host, 5, &server));
  EXPECT_EQ(server, static_cast<uint64_t>(guest.pid())) << "the host's guest keeps the seat";
  Record("mode 0640 with HostConfig::group = nobody's group: processes of uid nobody ask",
         "group member as observer: '" + observer_line + "'; group member as guest: '" + guest_line +
             "'; not in the group, as observer: '" + other_line + "'; the attached guest kept serving");
}

// ---- 8. Hygiene -----------------------------------------------------------------------------------------------

std::vector<std::string> ShmFilesStartingWith(const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string f = e.path().filename().string();
    if (f.compare(0, prefix.size(), prefix) == 0) out.push_back(f);
  }
  return out;
}

/// What a host under `name` left behind once it is gone: "" if nothing, else what.
std::string LeftBehind(const std::string& name) {
  std::string left;
  if (shm_test::NameHeld(name)) left += "the name is still bound; ";
  const auto files = ShmFilesStartingWith(name);
  if (!files.empty()) left += std::to_string(files.size()) + " files in /dev/shm; ";
  if (shm_test::HoldsSegment(::getpid(), name)) left += "this process still holds the memory; ";
  return left;
}

TEST(Hygiene, CleanShutdownLeavesNothing) {
  const std::string name = testkit::UniqueName("clean");
  {
    shm::DirectHost host;
    ASSERT_TRUE(host.Init(HostCfg(name)));
    EXPECT_TRUE(shm_test::NameHeld(name));
    Child guest;
    ASSERT_TRUE(SpawnPeer(guest, "guest", name));
    EXPECT_TRUE(EchoOnce(host, 1));
    host.Shutdown();
    EXPECT_EQ(testkit::ExitCode(guest.Reap(30000)), 0);
  }
  const std::string left = LeftBehind(name);
  EXPECT_EQ(left, "");
  shm::DirectHost next;
  auto init = next.Init(HostCfg(name));
  EXPECT_TRUE(init) << init.error().ToString();
  Record(
      "host and guest shut down cleanly",
      "left behind: " + (left.empty() ? std::string("nothing (name unbound, no /dev/shm file, no descriptor)") : left) +
          "; the next host's Init: " + (init ? "ok at the first attempt" : init.error().ToString()));
}

TEST(Hygiene, KilledHostLeavesNothing) {
  const std::string name = testkit::UniqueName("crash");
  Child crashed;
  ASSERT_TRUE(SpawnPeer(crashed, "host", name));
  Child guest;
  ASSERT_TRUE(SpawnPeer(guest, "guest", name));
  crashed.Kill();
  crashed.Reap(10000);
  // The kernel closed the dead host's sockets and descriptors: nothing of it remains to be cleaned up. Its
  // guest still maps the old memory until it sees the host gone; that keeps nothing the next host needs.
  const std::string left = LeftBehind(name);
  EXPECT_EQ(left, "");
  EXPECT_EQ(testkit::ExitCode(guest.Reap(30000)), 10) << "the guest should see its host gone";
  std::string init_result;
  {
    shm::DirectHost host;
    auto init = host.Init(HostCfg(name));
    ASSERT_TRUE(init) << init.error().ToString();
    init_result = "ok at the first attempt";
    Child g2;
    ASSERT_TRUE(SpawnPeer(g2, "guest", name));
    EXPECT_TRUE(EchoOnce(host, 2));
  }
  const std::string left_after = LeftBehind(name);
  EXPECT_EQ(left_after, "");
  Record("host SIGKILLed, then a new host under the same name runs and shuts down",
         "left behind by the killed host: " +
             (left.empty() ? std::string("nothing (name unbound, no /dev/shm file)") : left) +
             "; the next host's Init: " + init_result +
             ", and a new guest served it; left after its clean "
             "shutdown: " +
             (left_after.empty() ? std::string("nothing") : left_after));
}

TEST(Hygiene, FdAndMappingCountsStableAcrossConnectClose) {
  const std::string name = testkit::UniqueName("fds");
  Child host;
  ASSERT_TRUE(SpawnPeer(host, "host", name));
  auto cycle = [&] {
    shm::DirectGuest g;
    auto r = g.Connect({name});
    g.Close();
    return r.ok();
  };
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cycle());
  const int fds0 = testkit::CountFds(), maps0 = testkit::CountMaps();
  int failures = 0;
  for (int i = 0; i < 1000; ++i) failures += cycle() ? 0 : 1;
  const int fds1 = testkit::CountFds(), maps1 = testkit::CountMaps();
  host.Kill(SIGTERM);  // a clean shutdown: the host frees the name
  EXPECT_EQ(testkit::ExitCode(host.Reap(30000)), 0);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(fds1, fds0);
  // A sanitizer runtime's allocator may map a few new regions over 1000 cycles; a leaked segment mapping
  // would add one per cycle.
  EXPECT_LE(maps1 - maps0, 10);
  EXPECT_FALSE(shm_test::NameHeld(name));
  Record("1000 guest Connect/Close cycles in one process",
         "open fds " + std::to_string(fds0) + " -> " + std::to_string(fds1) + ", mappings " + std::to_string(maps0) +
             " -> " + std::to_string(maps1) + ", " + std::to_string(failures) + " failed connects");
}

TEST(Hygiene, FdAndMappingCountsStableAcrossHostInitShutdown) {
  const std::string name = testkit::UniqueName("host-cycles");
  auto cycle = [&] {
    shm::DirectHost h;
    auto r = h.Init(HostCfg(name));
    h.Shutdown();
    return r.ok();
  };
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cycle());
  const int fds0 = testkit::CountFds(), maps0 = testkit::CountMaps();
  int failures = 0;
  for (int i = 0; i < 1000; ++i) failures += cycle() ? 0 : 1;
  const int fds1 = testkit::CountFds(), maps1 = testkit::CountMaps();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(fds1, fds0);
  // Every Init starts the doorman's thread; a sanitizer runtime maps new regions for its own bookkeeping as
  // threads come and go (TSan: a few dozen over 1000 cycles). A leaked segment mapping or thread stack would
  // add one per cycle: 1000.
  EXPECT_LT(maps1 - maps0, 100);
  const std::string left = LeftBehind(name);
  EXPECT_EQ(left, "");
  Record("1000 host Init/Shutdown cycles in one process",
         "open fds " + std::to_string(fds0) + " -> " + std::to_string(fds1) + ", mappings " + std::to_string(maps0) +
             " -> " + std::to_string(maps1) + ", left behind: " + (left.empty() ? std::string("nothing") : left));
}

// ---- 9. Resizing the memory under the other side ----------------------------------------------------------------

/// The value of `key` in a "key value key value ..." line ("" if absent).
std::string Field(const std::string& line, const std::string& key) {
  const std::string k = " " + key + " ";
  const size_t p = line.find(k);
  if (p == std::string::npos) return "";
  const size_t b = p + k.size(), e = line.find(' ', b);
  return line.substr(b, e == std::string::npos ? std::string::npos : e - b);
}

/// Checks the "resize ..." line of a resize mode: every attempt refused with EPERM, the size unchanged.
void ExpectEveryResizeRefused(const std::string& line) {
  for (const char* attempt : {"ftruncate-0", "ftruncate-half", "ftruncate-double", "fallocate-grow", "seal-write"}) {
    EXPECT_EQ(Field(line, attempt), "EPERM") << attempt << " in: " << line;
  }
  EXPECT_EQ(Field(line, "size"), "unchanged") << line;
}

std::string ResizeSummary(const std::string& line) {
  return "ftruncate to 0: " + Field(line, "ftruncate-0") + ", to half: " + Field(line, "ftruncate-half") +
         ", to double: " + Field(line, "ftruncate-double") +
         "; fallocate past the end: " + Field(line, "fallocate-grow") +
         "; F_ADD_SEALS F_SEAL_WRITE: " + Field(line, "seal-write") + "; size " + Field(line, "size");
}

/// Echo calls on `threads` threads until stopped; counts answers and failures.
struct Traffic {
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0}, failed{0};
  std::vector<std::thread> threads;
  std::mutex mu;
  std::string first_failure;
  template <typename Call>
  void Start(int n, Call call) {
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([this, t, call] {
        testkit::Rng rng(static_cast<uint64_t>(t) + 77);
        std::vector<uint8_t> resp;
        for (uint64_t i = 0; !stop.load(); ++i) {
          auto req = testkit::MakeEchoRequest((uint64_t(t) << 40) | i, 8 + rng.Below(2000), rng);
          auto r = call(req, resp);
          if (r && testkit::CheckEchoAnswer(req, resp) == testkit::EchoCheck::kOk) {
            ++ok;
            continue;
          }
          ++failed;
          std::lock_guard<std::mutex> l(mu);
          if (first_failure.empty()) first_failure = r ? "a wrong answer" : r.error().ToString();
        }
      });
    }
  }
  void Stop() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }
  ~Traffic() { Stop(); }
};

shm::Reply EchoHandler(const shm::Message& m, shm::MutableBytes out) {
  if (out.size() < testkit::kEchoAnswerSize ||
      !testkit::WriteEchoAnswer(m.data.data(), m.data.size(), out.data(), static_cast<uint64_t>(::getpid()))) {
    return shm::Reply::Failure();
  }
  return shm::Reply{static_cast<int32_t>(testkit::kEchoAnswerSize), MsgType::NORMAL};
}

uint64_t SizeOfSegment(pid_t pid, const std::string& name) {
  const int fd = shm_test::OpenSegmentOf(pid, name, O_RDONLY);
  if (fd < 0) return 0;
  struct stat st {};
  const uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  ::close(fd);
  return size;
}

TEST(Resize, GuestCannotResizeTheSegmentUnderTheHost) {
  const std::string name = testkit::UniqueName("guest-resize");
  shm::DirectHost host;
  const auto cfg = HostCfg(name);
  ASSERT_TRUE(host.Init(cfg));
  std::atomic<long> guest_calls{0};
  ASSERT_TRUE(host.Start([&](const shm::Message& m, shm::MutableBytes out) {
    ++guest_calls;
    return EchoHandler(m, out);
  }));
  const uint64_t size = SizeOfSegment(::getpid(), name);
  Child guest;
  ASSERT_TRUE(SpawnPeer(guest, "resize-guest", name));
  Traffic host_calls;  // host calls in flight while the guest attacks, and after
  host_calls.Start(2, [&](const std::vector<uint8_t>& req, std::vector<uint8_t>& resp) {
    shm::CallOptions o;
    o.timeout = 20s;
    return host.Send(req, MsgType::NORMAL, resp, o);
  });
  const std::string line = guest.WaitFor("resize", 180000);
  const long ok_at_attack = host_calls.ok.load();
  // The host keeps serving: more host calls are answered after the attempts.
  const int64_t deadline = shm::platform::MonotonicNs() + 60'000'000'000;
  while (host_calls.ok.load() < ok_at_attack + 100 && shm::platform::MonotonicNs() < deadline)
    std::this_thread::sleep_for(1ms);
  host_calls.Stop();
  ASSERT_NE(line, "") << "the guest reported nothing (last line: '" << guest.last_line() << "')";
  ExpectEveryResizeRefused(line);
  EXPECT_EQ(host_calls.failed.load(), 0) << host_calls.first_failure;
  EXPECT_GE(host_calls.ok.load(), ok_at_attack + 100);
  EXPECT_EQ(Field(line, "guest-call-failures"), "0") << line;
  EXPECT_EQ(SizeOfSegment(::getpid(), name), size);
  EXPECT_TRUE(EchoOnce(host, 8));
  host.Shutdown();
  EXPECT_EQ(testkit::ExitCode(guest.Reap(30000)), 0);
  Record(
      "an attached guest tries to resize the segment through its own descriptor while calls run both ways "
      "(host guest-call worker running, host calls in flight)",
      ResizeSummary(line) + " (" + std::to_string(size) + " bytes); afterwards the host answered " +
          Field(line, "guest-calls-after") + " more guest calls and the guest " +
          std::to_string(host_calls.ok.load() - ok_at_attack) + " more host calls, " +
          std::to_string(host_calls.failed.load()) + " host calls and " + Field(line, "guest-call-failures") +
          " guest calls failed in all");
}

TEST(Resize, HostCannotResizeTheSegmentUnderTheGuest) {
  const std::string name = testkit::UniqueName("host-resize");
  Child host;
  ASSERT_TRUE(SpawnPeer(host, "resize-host", name));
  shm::DirectGuest guest;
  shm::GuestConfig gc;
  gc.name = name;
  gc.connect_timeout = 30s;
  ASSERT_TRUE(guest.Connect(gc));
  std::atomic<long> served{0};
  ASSERT_TRUE(guest.Start([&](const shm::Message& m, shm::MutableBytes out) {
    ++served;
    return EchoHandler(m, out);
  }));
  const uint64_t size = SizeOfSegment(host.pid(), name);
  Traffic guest_calls;
  guest_calls.Start(1, [&](const std::vector<uint8_t>& req, std::vector<uint8_t>& resp) {
    shm::CallOptions o;
    o.timeout = 20s;
    return guest.SendGuestCall(req, MsgType::NORMAL, resp, o);
  });
  const std::string line = host.WaitFor("resize", 180000);
  const long served_at_attack = served.load();
  const int64_t deadline = shm::platform::MonotonicNs() + 60'000'000'000;
  while (guest_calls.ok.load() < 100 && shm::platform::MonotonicNs() < deadline) std::this_thread::sleep_for(1ms);
  const long ok_at_attack = guest_calls.ok.load();
  while (guest_calls.ok.load() < ok_at_attack + 100 && shm::platform::MonotonicNs() < deadline)
    std::this_thread::sleep_for(1ms);
  guest_calls.Stop();
  ASSERT_NE(line, "") << "the host reported nothing (last line: '" << host.last_line() << "')";
  ExpectEveryResizeRefused(line);
  EXPECT_EQ(Field(line, "host-call-failures"), "0") << line;
  EXPECT_EQ(guest_calls.failed.load(), 0) << guest_calls.first_failure;
  EXPECT_GE(guest_calls.ok.load(), ok_at_attack + 100);
  EXPECT_TRUE(guest.HostAlive());
  EXPECT_EQ(SizeOfSegment(host.pid(), name), size);
  host.Kill(SIGTERM);  // a clean shutdown ends the guest's workers without an error
  auto w = guest.Wait(30s);
  EXPECT_TRUE(w) << w.error().ToString();
  EXPECT_EQ(testkit::ExitCode(host.Reap(30000)), 0);
  Record("the host tries to resize its own segment while an attached guest serves and calls",
         ResizeSummary(line) + " (" + std::to_string(size) + " bytes); afterwards the guest answered " +
             Field(line, "host-calls-after") + " more host calls (" + std::to_string(served_at_attack) +
             " before) and the host " + std::to_string(guest_calls.ok.load() - ok_at_attack) + " more guest calls; " +
             Field(line, "host-call-failures") + " host calls and " + std::to_string(guest_calls.failed.load()) +
             " guest calls failed in all");
}

// ---- 10. Holding the name ---------------------------------------------------------------------------------------

TEST(Squatting, NameHeldByAnotherUserIsNeverAdopted) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another uid (nobody, 65534)";
  PeerCopy peer;
  const testkit::SpawnOptions nobody{kNobody, kNobody};
  struct Outcome {
    std::string init, connect;
    ErrorCode init_code = ErrorCode::kInvalidArgs, connect_code = ErrorCode::kInvalidArgs;
    double connect_ms = 0;
    pid_t squatter = -1;
  };
  auto squat = [&](bool listen, shm::Duration connect_timeout) {
    Outcome o;
    const std::string name = testkit::UniqueName(listen ? "squat" : "squat-bound");
    Child squatter;
    std::vector<std::string> extra;
    if (!listen) extra.push_back("--no-listen");
    EXPECT_TRUE(SpawnPeer(squatter, "squat", name, extra, nobody, peer.path()));
    o.squatter = squatter.pid();
    EXPECT_TRUE(shm_test::NameHeld(name));
    shm::DirectHost host;
    auto init = host.Init(HostCfg(name));
    if (init) {
      o.init = "Init succeeded";
    } else {
      o.init_code = init.error().code();
      o.init = init.error().message();
    }
    shm::GuestConfig gc;
    gc.name = name;
    gc.connect_timeout = connect_timeout;
    shm::DirectGuest guest;
    const int64_t t0 = shm::platform::MonotonicNs();
    auto r = guest.Connect(gc);
    o.connect_ms = static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e6;
    if (r) {
      o.connect = "Connect succeeded";
    } else {
      o.connect_code = r.error().code();
      o.connect = r.error().message();
    }
    return o;
  };
  // A squatter that listens: the host names it (pid and uid); a guest refuses it at once (final error).
  const Outcome l = squat(true, 10s);
  EXPECT_EQ(l.init_code, ErrorCode::kHostAlreadyRunning) << l.init;
  EXPECT_NE(l.init.find("pid " + std::to_string(l.squatter)), std::string::npos) << l.init;
  EXPECT_NE(l.init.find("uid " + std::to_string(kNobody)), std::string::npos) << l.init;
  EXPECT_EQ(l.connect_code, ErrorCode::kPermissionDenied) << l.connect;
  EXPECT_LT(l.connect_ms, 5000.0) << "a squatted name is a final error, not a retry until the timeout";
  // A squatter that binds without listening: the host still refuses to start; a guest finds no host.
  const Outcome b = squat(false, 200ms);
  EXPECT_EQ(b.init_code, ErrorCode::kHostAlreadyRunning) << b.init;
  EXPECT_EQ(b.connect_code, ErrorCode::kNotFound) << b.connect;
  Record("a process of another uid (nobody) binds the segment's rendezvous address first and listens on it",
         "root host's Init: " + std::string(shm::ToString(l.init_code)) + " '" + l.init + "'; root guest's Connect: " +
             shm::ToString(l.connect_code) + " after " + Ms(l.connect_ms) + " '" + l.connect + "'");
  Record("a process of another uid (nobody) binds the segment's rendezvous address and does not listen",
         "root host's Init: " + std::string(shm::ToString(b.init_code)) + " '" + b.init +
             "'; root guest's Connect: " + shm::ToString(b.connect_code) + " (nothing answers there)");
}

TEST(Squatting, HolderIsNamedWhileItIsStillInitialising) {
  // A first host whose Init takes long (1 GiB to reserve); a second host tries Init again and again from the
  // moment the first starts until it is ready, and once more after. Every refusal must name the holder's pid.
  const pid_t self = ::getpid();
  int rounds = 0, rounds_first_won = 0, refusals_during_init = 0, refusals_after = 0, second_won = 0;
  int named_holder = 0;
  std::map<std::string, int> unnamed;  // refusals that do not name a pid, by message (the name cut out)
  std::string sample;
  auto note_unnamed = [&](const std::string& when, const std::string& what, const std::string& name) {
    std::string m = what;
    for (size_t p; (p = m.find(name)) != std::string::npos;) m.replace(p, name.size(), "<name>");
    ++unnamed[when + ": " + m];
  };
  // The second host may still win a round (it then checks the first's refusal instead), if the first lets
  // go of the name at once: its Init failed.
  for (; rounds < 30 && rounds_first_won < 3; ++rounds) {
    const std::string name = testkit::UniqueName("race");
    Child first;
    ASSERT_TRUE(first.Spawn({kPeer, "big-host", name}));
    ASSERT_NE(first.WaitFor("init-start", 30000), "") << first.last_line();
    const std::string holder = "pid " + std::to_string(first.pid());
    std::string first_result;
    bool ready = false;
    const int64_t deadline = shm::platform::MonotonicNs() + 120'000'000'000;
    // From the moment the first has bound the name (the first step of its Init, before it even listens):
    // everything after is the first host initialising.
    while (!shm_test::NameHeld(name) && shm::platform::MonotonicNs() < deadline) std::this_thread::yield();
    while (!ready && first_result.empty() && shm::platform::MonotonicNs() < deadline) {
      shm::DirectHost second;
      auto r = second.Init(HostCfg(name));
      if (r) {
        // The second got there first. It holds the name until the first has given up (had it let go, the
        // first could rightly find nobody there); the first's refusal is checked below.
        ++second_won;
        first_result = first.WaitFor("init ", 60000);
        if (first_result.empty()) first_result = "no line (last: '" + first.last_line() + "')";
        break;
      } else {
        ++refusals_during_init;
        if (r.error().code() != ErrorCode::kHostAlreadyRunning ||
            r.error().message().find("pid ") == std::string::npos) {
          note_unnamed("while the first initialised", r.error().ToString(), name);
        } else {
          named_holder += r.error().message().find(holder) != std::string::npos;
          if (sample.empty()) sample = r.error().message();
        }
      }
      const std::string line = first.ReadLine(1);
      if (line.rfind("ready", 0) == 0)
        ready = true;
      else if (line.rfind("init ", 0) == 0)
        first_result = line;
    }
    if (!ready) {
      // The second host took the name first (and let it go): the first must have been told who held it.
      EXPECT_NE(first_result, "") << "the first host neither became ready nor failed";
      if (first_result.find("HostAlreadyRunning") == std::string::npos ||
          first_result.find("pid " + std::to_string(self)) == std::string::npos) {
        note_unnamed("the first host", first_result, name);
      }
      continue;
    }
    ++rounds_first_won;
    shm::DirectHost late;
    auto r = late.Init(HostCfg(name));
    ++refusals_after;
    if (r || r.error().message().find(holder) == std::string::npos) {
      note_unnamed("just after the first was ready", r ? std::string("Init succeeded") : r.error().ToString(), name);
    }
    first.Kill(SIGTERM);
    EXPECT_EQ(testkit::ExitCode(first.Reap(60000)), 0);
  }
  EXPECT_EQ(rounds_first_won, 3) << "the first host won the race for the name in fewer than 3 of " << rounds
                                 << " rounds";
  EXPECT_GT(refusals_during_init, 0) << "no second Init ran while the first was initialising";
  int unnamed_total = 0;
  std::string unnamed_list;
  for (const auto& [what, n] : unnamed) {
    ADD_FAILURE() << n << " refusals did not name the holder's pid: " << what;
    unnamed_total += n;
    unnamed_list += " " + std::to_string(n) + " x '" + what + "';";
  }
  Record("a second host races Init against a first that is still initialising (1 GiB segment)",
         std::to_string(refusals_during_init) + " refusals while the first initialised (" +
             std::to_string(named_holder) + " named its pid, e.g. '" + sample + "'), " +
             std::to_string(refusals_after) + " just after it was ready, over " + std::to_string(rounds) + " rounds (" +
             std::to_string(second_won) + " won by the second host); refusals without a pid: " +
             std::to_string(unnamed_total) + (unnamed_list.empty() ? "" : " (" + unnamed_list + ")"));
}

}  // namespace

// Peer death, hostile peers, permissions and hygiene, with real peer processes (reliability_peer) that the
// tests fork+exec and SIGKILL. Each test prints "RELIABILITY|<fault>|<observed outcome>" lines;
// scripts/reliability_table.py joins them with the test's pass/fail into RELIABILITY.md's table.
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
using testkit::NowNs;

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
  const uint64_t seed = s ? std::strtoull(s, nullptr, 0) : static_cast<uint64_t>(NowNs()) ^ ::getpid();
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
    return ::testing::AssertionFailure() << "peer " << mode << " did not become ready (last line: '"
                                         << c.last_line() << "')";
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
      end_ns.store(NowNs());
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
  ASSERT_TRUE(view.ok());
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
    const int64_t killed = NowNs();
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
    const int64_t deadline = NowNs() + 60'000'000'000;
    while (ok.load() < target && NowNs() < deadline) std::this_thread::sleep_for(1ms);
    return ok.load() >= target;
  };
  bool progressed = wait_progress(300);
  int kills = 0;
  for (; kills < 3 && progressed; ++kills) {
    guest->Kill();  // at a random point of the traffic
    // A supervisor restarts the guest once it is dead (its parent was told), not yet reaped: the successor
    // attaches anyway. (While the killed process is still tearing down, it still holds the guest lock.)
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
             std::to_string(other.load()) + " other errors; " + std::to_string(wrong_id.load()) +
             " misdelivered, " + std::to_string(corrupt.load()) + " corrupt; slots FREE after: " +
             (busy.empty() ? "all" : "NO (" + busy + ")"));
}

// ---- 3. A dead process that its parent has not reaped ------------------------------------------------------

// The leader of a multi-threaded process shows 'Z' as soon as it exits, while its other threads may still be
// tearing down (and holding the files). A child is dead-but-unreaped once waitid(WNOWAIT) reports it.
bool WaitZombie(pid_t pid) {
  return testkit::WaitDeadUnreaped(pid, 10000) && testkit::ProcState(pid) == 'Z';
}

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
  const bool attached = host.GuestAttached();
  call.Join();
  EXPECT_TRUE(entered);
  ASSERT_TRUE(zombie) << "the killed child should stay a zombie until reaped";
  EXPECT_FALSE(attached);
  EXPECT_EQ(call.code, ErrorCode::kPeerDead);
  EXPECT_EQ(testkit::ProcState(guest.pid()), 'Z');
  Record("guest SIGKILLed and left unreaped (zombie)",
         std::string("while /proc state was Z: GuestAttached()=") + (attached ? "true" : "false") +
             ", pending call ended " + shm::ToString(call.code));
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
      call_end = NowNs();
    });
    const bool entered = !host.WaitFor("entered", 30000).empty();
    const int64_t killed = NowNs();
    host.Kill();
    auto w = guest.Wait(30s);
    const int64_t wait_end = NowNs();
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
  const int64_t t0 = NowNs();
  uint64_t server = 0;
  EXPECT_TRUE(EchoOnce(next, 11, &server));
  const double first_ms = static_cast<double>(NowNs() - t0) / 1e6;
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
    const uint8_t* req_begin = out.data() - out.size();  // the request buffer precedes the response buffer
    if (m.data.size() > out.size() || m.data.data() < req_begin || m.data.end() > out.data()) ++violations;
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
        const int64_t t0 = NowNs();
        auto r = host.Send(shm::Bytes(req.data(), size), rng.Below(2) ? MsgType::NORMAL : MsgType::FLATBUFFER,
                           resp, o);
        if (NowNs() - t0 > 2'200'000'000) ++late;
        if (r && resp.size() > cap) ++too_big;
        ++mine[r ? "ok" : (r.error().code() == ErrorCode::kRemote
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
         "host calls: " + summary + "(every call ended with an answer or a typed error, none past its deadline); "
         "host handler saw " + std::to_string(violations.load()) + " out-of-bounds requests in " +
             std::to_string(served.load()) + " served; guest calls: " +
             stats.substr(std::min<size_t>(stats.size(), 6)));
}

// ---- 7. Permissions -------------------------------------------------------------------------------------------

uint32_t ModeOf(const std::string& name) {
  struct stat st;
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0 ? (st.st_mode & 07777) : 0xFFFFFFFFu;
}

TEST(Permissions, SegmentIs0600ByDefault) {
  const std::string name = testkit::UniqueName("mode");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  EXPECT_EQ(ModeOf(name), 0600u);
  shm::DirectHost shared;
  auto c = HostCfg(name + "-g");
  c.mode = 0660;
  ASSERT_TRUE(shared.Init(c));
  EXPECT_EQ(ModeOf(name + "-g"), 0660u);
  char b[96];
  std::snprintf(b, sizeof b, "default mode %o; with HostConfig::mode = 0660: %o", ModeOf(name), ModeOf(name + "-g"));
  Record("segment file permissions (the liveness locks live on the same file)", b);
}

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

TEST(Permissions, OtherUserCannotAttachAndGroupModeShares) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a peer as another uid (nobody, 65534)";
  PeerCopy peer;
  const testkit::SpawnOptions nobody{kNobody, kNobody};

  // Default mode 0600: the other user is refused with a typed error.
  const std::string name = testkit::UniqueName("perm");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(HostCfg(name)));
  Child denied;
  ASSERT_TRUE(denied.Spawn({peer.path(), "attach", name}, nobody));
  const std::string denied_line = denied.WaitFor("connect", 30000);
  const int denied_exit = testkit::ExitCode(denied.Reap(30000));
  EXPECT_EQ(denied_line, "connect PermissionDenied");
  EXPECT_EQ(denied_exit, 30 + static_cast<int>(ErrorCode::kPermissionDenied));

  // Mode 0660 but a group the other user is not in: still refused.
  auto c = HostCfg(name + "-g");
  c.mode = 0660;
  shm::DirectHost group_host;
  ASSERT_TRUE(group_host.Init(c));
  Child outsider;
  ASSERT_TRUE(outsider.Spawn({peer.path(), "attach", c.name}, nobody));
  const std::string outsider_line = outsider.WaitFor("connect", 30000);
  outsider.Reap(30000);
  EXPECT_EQ(outsider_line, "connect PermissionDenied");

  // Mode 0660 and the file's group is the other user's: it attaches and serves.
  ASSERT_EQ(::chown(("/dev/shm/" + c.name).c_str(), static_cast<uid_t>(-1), kNobody), 0) << std::strerror(errno);
  Child member;
  ASSERT_TRUE(member.Spawn({peer.path(), "attach", c.name}, nobody));
  const std::string member_line = member.WaitFor("connect", 30000);
  EXPECT_EQ(member_line, "connect ok");
  EXPECT_FALSE(member.WaitFor("ready", 30000).empty());
  uint64_t server = 0;
  EXPECT_TRUE(EchoOnce(group_host, 3, &server));
  EXPECT_EQ(server, static_cast<uint64_t>(member.pid()));
  group_host.Shutdown();
  EXPECT_EQ(testkit::ExitCode(member.Reap(30000)), 0);
  Record("a guest running as another uid (nobody) attaches",
         "mode 0600: '" + denied_line + "'; mode 0660, file group not the guest's: '" + outsider_line +
             "'; mode 0660, file group = the guest's group: '" + member_line + "' and it served a call");
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

TEST(Hygiene, CleanShutdownLeavesNothing) {
  const std::string name = testkit::UniqueName("clean");
  {
    shm::DirectHost host;
    ASSERT_TRUE(host.Init(HostCfg(name)));
    Child guest;
    ASSERT_TRUE(SpawnPeer(guest, "guest", name));
    EXPECT_TRUE(EchoOnce(host, 1));
    host.Shutdown();
    EXPECT_EQ(testkit::ExitCode(guest.Reap(30000)), 0);
  }
  const auto left = ShmFilesStartingWith(name);
  EXPECT_TRUE(left.empty());
  Record("host and guest shut down cleanly", std::to_string(left.size()) + " files left in /dev/shm under the name");
}

TEST(Hygiene, NextHostCleansUpAfterCrash) {
  const std::string name = testkit::UniqueName("crash");
  Child crashed;
  ASSERT_TRUE(SpawnPeer(crashed, "host", name));
  crashed.Kill();
  crashed.Reap(10000);
  const bool stray = testkit::FileExists("/dev/shm/" + name);
  EXPECT_TRUE(stray) << "a SIGKILLed host cannot remove its file";
  {
    shm::DirectHost host;
    ASSERT_TRUE(host.Init(HostCfg(name)));
    Child guest;
    ASSERT_TRUE(SpawnPeer(guest, "guest", name));
    EXPECT_TRUE(EchoOnce(host, 2));
  }
  const auto left = ShmFilesStartingWith(name);
  EXPECT_TRUE(left.empty());
  Record("host SIGKILLed, then a new host under the same name runs and shuts down",
         std::string("stray file after the crash: ") + (stray ? "yes" : "no") +
             "; the new host took the name at once; files left after its clean shutdown: " +
             std::to_string(left.size()));
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
  host.Kill(SIGTERM);  // a clean shutdown: the host removes its file
  EXPECT_EQ(testkit::ExitCode(host.Reap(30000)), 0);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(fds1, fds0);
  // A sanitizer runtime's allocator may map a few new regions over 1000 cycles; a leaked segment mapping
  // would add one per cycle.
  EXPECT_LE(maps1 - maps0, 10);
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
  // A sanitizer runtime's allocator may map a few new regions over 1000 cycles; a leaked segment mapping
  // would add one per cycle.
  EXPECT_LE(maps1 - maps0, 10);
  EXPECT_FALSE(testkit::FileExists("/dev/shm/" + name));
  Record("1000 host Init/Shutdown cycles in one process",
         "open fds " + std::to_string(fds0) + " -> " + std::to_string(fds1) + ", mappings " + std::to_string(maps0) +
             " -> " + std::to_string(maps1) + ", file left: " +
             (testkit::FileExists("/dev/shm/" + name) ? "yes" : "no"));
}

}  // namespace

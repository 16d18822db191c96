// SPDX-License-Identifier: Apache-2.0
// The Windows binding (SPECIFICATION.md §W) between real processes: the test process and shm_win_peer,
// started with CreateProcessW. Peer death is TerminateProcess. Every wait has a generous deadline and waits
// for an event (a line, an exit, a call's end); the only timing bound is the 200 ms detection of a dead peer.
#include <gtest/gtest.h>
#include <shm/shm.h>
#include <windows.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../../tools/common/child_process.h"
#include "win_peer_protocol.h"

namespace {

using namespace std::chrono_literals;
constexpr int64_t kSecond = 1000000000;
constexpr int64_t kDeathBoundNs = 200000000;  // a dead peer is detected within 200 ms

std::string UniqueName(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "shm-win-" + tag + "-" + std::to_string(GetCurrentProcessId()) + "-" + std::to_string(counter.fetch_add(1));
}

/// shm_win_peer running one command, its stdout read line by line.
class Peer {
 public:
  explicit Peer(std::vector<std::string> args) {
    args.insert(args.begin(), SHM_WIN_PEER);
    shm_tools::SpawnOptions o;
    o.pipe_stdin = true;
    o.pipe_stdout = true;
    rc_ = child_.Start(args, o);
  }
  bool started() const { return rc_ == 0; }
  /// The next line starting with `prefix`, within `timeout_ns`; nullopt otherwise. Every line read is kept.
  std::optional<std::string> WaitFor(const std::string& prefix, int64_t timeout_ns = 60 * kSecond) {
    const int64_t deadline = shm::platform::DeadlineAfter(timeout_ns);
    for (;;) {
      auto line = shm_tools::ReadLine(child_.stdout_handle(), &buffer_, deadline);
      if (!line) return std::nullopt;
      transcript_ += *line + "\n";
      if (line->rfind(prefix, 0) == 0) return line;
    }
  }
  /// Wait for the exit (at most `timeout_ns`); its exit code, or -1.
  int Exit(int64_t timeout_ns = 60 * kSecond) {
    if (!child_.Wait(shm::platform::DeadlineAfter(timeout_ns))) return -1;
    return shm_tools::ExitCode(child_.status());
  }
  void Kill() { child_.Kill(); }
  void KillNoWait() { TerminateProcess(child_.process(), 9); }
  void CloseStdin() { child_.CloseStdin(); }
  bool Running() { return !child_.Exited(); }
  const std::string& transcript() const { return transcript_; }

 private:
  shm_tools::ChildProcess child_;
  int rc_ = -1;
  std::string buffer_;
  std::string transcript_;
};

shm::HostConfig SmallHost(const std::string& name) {
  shm::HostConfig cfg;
  cfg.name = name;
  cfg.host_slots = 2;
  cfg.guest_slots = 2;
  cfg.payload_size = 64 * 1024;
  cfg.guest_payload_size = 4096;
  return cfg;
}

bool LockExists(const std::string& name) {
  const std::wstring w = L"Local\\shm-" + std::wstring(name.begin(), name.end());
  HANDLE h = OpenEventW(SYNCHRONIZE, FALSE, w.c_str());
  if (h == nullptr) return false;
  CloseHandle(h);
  return true;
}

bool PipeExists(const std::string& name) {
  const std::wstring w = L"\\\\.\\pipe\\shm-" + std::wstring(name.begin(), name.end());
  HANDLE h = CreateFileW(w.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING, 0, nullptr);
  if (h != INVALID_HANDLE_VALUE) {
    CloseHandle(h);
    return true;
  }
  return GetLastError() != ERROR_FILE_NOT_FOUND;
}

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x = x * 1664525u + 1013904223u;
    b = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

// ---- The wake-up events (§W5) -------------------------------------------------------------------------------

TEST(WindowsWake, EverySleeperOnOneWordIsWoken) {
  const std::string name = UniqueName("wake");
  auto mem = shm::platform::CreateSharedMemory(name, 4096);
  ASSERT_TRUE(mem) << mem.error().ToString();
  auto base = shm::platform::Map(*mem, 4096);
  ASSERT_TRUE(base) << base.error().ToString();
  auto* word = reinterpret_cast<std::atomic<uint32_t>*>(static_cast<uint8_t*>(*base) + 128);
  word->store(0x0B, std::memory_order_seq_cst);  // a doorbell value with its waiting bit set
  constexpr int kSleepers = 4;
  std::atomic<int> entered{0};
  std::atomic<int> timed_out{0};
  std::vector<std::thread> sleepers;
  for (int i = 0; i < kSleepers; ++i) {
    sleepers.emplace_back([&] {
      entered.fetch_add(1);
      while (word->load(std::memory_order_seq_cst) == 0x0B) {
        if (shm::platform::FutexWait(word, 0x0B, 60 * kSecond) == shm::platform::WaitResult::kTimeout) {
          timed_out.fetch_add(1);
        }
      }
    });
  }
  while (entered.load() < kSleepers) std::this_thread::yield();
  // Each sleeper has created the event before it re-reads the word: wait until the event exists.
  const std::wstring ev = L"Local\\shm-" + std::wstring(name.begin(), name.end()) + L"-";
  const int64_t t0 = shm::platform::MonotonicNs();
  const uint32_t old = word->exchange(0x0C, std::memory_order_seq_cst);
  shm::platform::FutexWakeAll(word, old);
  for (auto& t : sleepers) t.join();
  const int64_t took = shm::platform::MonotonicNs() - t0;
  std::printf("all %d sleepers returned %.3f ms after one wake\n", kSleepers, static_cast<double>(took) / 1e6);
  EXPECT_EQ(timed_out.load(), 0);
  EXPECT_LT(took, 30 * kSecond) << "a sleeper waited for its timeout: a wake-up was lost";
  shm::platform::Unmap(*base, 4096);
}

TEST(WindowsWake, AWakeBeforeTheWaitIsNotLost) {
  const std::string name = UniqueName("early");
  auto mem = shm::platform::CreateSharedMemory(name, 4096);
  ASSERT_TRUE(mem) << mem.error().ToString();
  auto base = shm::platform::Map(*mem, 4096);
  ASSERT_TRUE(base) << base.error().ToString();
  auto* word = reinterpret_cast<std::atomic<uint32_t>*>(static_cast<uint8_t*>(*base) + 256);
  word->store(0x110, std::memory_order_seq_cst);
  // A word that has already left the value: the wait returns at once, whatever the notifier did.
  word->store(0x200, std::memory_order_seq_cst);
  const int64_t t0 = shm::platform::MonotonicNs();
  EXPECT_EQ(shm::platform::FutexWait(word, 0x110, 30 * kSecond), shm::platform::WaitResult::kChanged);
  EXPECT_LT(shm::platform::MonotonicNs() - t0, 10 * kSecond);
  shm::platform::Unmap(*base, 4096);
}

// ---- Two processes ------------------------------------------------------------------------------------------

TEST(WindowsProcesses, EchoRoundTripsWithEveryPlacement) {
  const std::string name = UniqueName("echo");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(SmallHost(name)));
  Peer guest({"guest", name});
  ASSERT_TRUE(guest.started());
  ASSERT_TRUE(guest.WaitFor("ATTACHED")) << guest.transcript();
  std::vector<uint8_t> answer;
  const size_t sizes[] = {0, 1, 63, 64, 65, 4096, 65535, 65536};
  int calls = 0;
  const int64_t t0 = shm::platform::MonotonicNs();
  for (int round = 0; round < 200; ++round) {
    for (size_t n : sizes) {
      const auto req = Pattern(n, static_cast<uint32_t>(round * 16 + n));
      shm::CallOptions o;
      o.end_aligned = (round & 1) != 0;
      o.timeout = std::chrono::seconds(30);
      auto t = host.Send(shm::Bytes(req.data(), req.size()), shm::MsgType::NORMAL, answer, o);
      ASSERT_TRUE(t) << t.error().ToString();
      ASSERT_EQ(answer, req) << "size " << n;
      ++calls;
    }
  }
  std::printf("%d echo calls in %.1f ms\n", calls, static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e6);
  auto t = host.Send("x", static_cast<shm::MsgType>(shm_win::kFail), answer);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), shm::ErrorCode::kRemote);
  EXPECT_EQ(t.error().remote(), shm::wire::WireError::kHandlerFailed);
  host.Shutdown();
  EXPECT_TRUE(guest.WaitFor("WAIT_DONE ok")) << guest.transcript();
  EXPECT_EQ(guest.Exit(), 0) << guest.transcript();
}

TEST(WindowsProcesses, GuestCallsReachTheHost) {
  const std::string name = UniqueName("gcall");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(SmallHost(name)));
  auto started = host.Start([](const shm::Message& m, shm::MutableBytes out) {
    if (static_cast<uint32_t>(m.type) == shm_win::kFail) return shm::Reply::Failure();
    const std::string reply = "host:" + std::string(m.data.as_string_view());
    std::memcpy(out.data(), reply.data(), reply.size());
    return shm::Reply{static_cast<int32_t>(reply.size()), shm::MsgType::NORMAL};
  });
  ASSERT_TRUE(started);
  Peer guest({"guest-call", name, "500"});
  ASSERT_TRUE(guest.started());
  EXPECT_TRUE(guest.WaitFor("CALLS OK")) << guest.transcript();
  EXPECT_EQ(guest.Exit(), 0) << guest.transcript();
}

TEST(WindowsProcesses, SecondHostIsRefusedNamingTheFirst) {
  const std::string name = UniqueName("second");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(SmallHost(name)));
  Peer rival({"host", name});
  ASSERT_TRUE(rival.started());
  auto line = rival.WaitFor("INIT ");
  ASSERT_TRUE(line) << rival.transcript();
  EXPECT_EQ(line->rfind("INIT ERR " + std::to_string(static_cast<uint32_t>(shm::ErrorCode::kHostAlreadyRunning)), 0),
            0u)
      << *line;
  EXPECT_NE(line->find("pid " + std::to_string(GetCurrentProcessId())), std::string::npos) << *line;
  EXPECT_EQ(rival.Exit(), 1);
  // And the other way round: a host in another process holds the name.
  host.Shutdown();
  Peer first({"host", name});
  ASSERT_TRUE(first.WaitFor("INIT OK")) << first.transcript();
  shm::DirectHost second;
  auto r = second.Init(SmallHost(name));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), shm::ErrorCode::kHostAlreadyRunning) << r.error().ToString();
  first.CloseStdin();
  EXPECT_EQ(first.Exit(), 0);
}

TEST(WindowsNames, NothingIsLeftAfterACleanShutdown) {
  const std::string name = UniqueName("clean");
  {
    shm::DirectHost host;
    ASSERT_TRUE(host.Init(SmallHost(name)));
    EXPECT_TRUE(LockExists(name));
    EXPECT_TRUE(PipeExists(name));
    Peer guest({"guest", name});
    ASSERT_TRUE(guest.WaitFor("ATTACHED")) << guest.transcript();
    std::vector<uint8_t> answer;
    ASSERT_TRUE(host.Send("ping", shm::MsgType::NORMAL, answer));
    host.Shutdown();
    EXPECT_EQ(guest.Exit(), 0) << guest.transcript();
  }
  EXPECT_FALSE(LockExists(name));
  EXPECT_FALSE(PipeExists(name));
  shm::DirectHost again;
  auto r = again.Init(SmallHost(name));
  EXPECT_TRUE(r) << r.error().ToString();
}

TEST(WindowsNames, ASectionGoesWithItsLastHandle) {
  const std::string name = UniqueName("section");
  uint64_t instance = 0;
  {
    auto mem = shm::platform::CreateSharedMemory(name, 8192);
    ASSERT_TRUE(mem) << mem.error().ToString();
    instance = mem->instance();
    EXPECT_NE(instance, 0u);
    auto again = shm::platform::CreateSharedMemory(name, 8192);
    ASSERT_TRUE(again);
    EXPECT_NE(again->instance(), instance) << "every host gets a fresh instance number";
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(instance));
  const std::string section = "Local\\shm-" + name + "-" + hex;
  HANDLE h = OpenFileMappingA(FILE_MAP_READ, FALSE, section.c_str());
  EXPECT_EQ(h, nullptr);
  EXPECT_EQ(GetLastError(), static_cast<DWORD>(ERROR_FILE_NOT_FOUND));
  if (h != nullptr) CloseHandle(h);
}

// ---- Peer death (TerminateProcess) --------------------------------------------------------------------------

TEST(WindowsPeerDeath, AKilledGuestFailsItsCallWithin200msAndANewGuestServesAtOnce) {
  const std::string name = UniqueName("gdeath");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(SmallHost(name)));
  for (int round = 0; round < 3; ++round) {
    Peer guest({"guest", name});
    ASSERT_TRUE(guest.WaitFor("ATTACHED")) << guest.transcript();
    std::atomic<int64_t> ended{0};
    std::optional<shm::Error> error;
    std::thread caller([&] {
      std::vector<uint8_t> answer;
      shm::CallOptions o;
      o.timeout = std::chrono::seconds(60);
      auto t = host.Send("hang", static_cast<shm::MsgType>(shm_win::kHang), answer, o);
      ended.store(shm::platform::MonotonicNs());
      if (!t) error = t.error();
    });
    ASSERT_TRUE(guest.WaitFor("SERVING")) << guest.transcript();
    const int64_t killed = shm::platform::MonotonicNs();
    guest.KillNoWait();
    caller.join();
    const int64_t took = ended.load() - killed;
    std::printf("round %d: the call failed %.2f ms after TerminateProcess\n", round, static_cast<double>(took) / 1e6);
    ASSERT_TRUE(error.has_value()) << "the call succeeded";
    EXPECT_EQ(error->code(), shm::ErrorCode::kPeerDead) << error->ToString();
    EXPECT_LT(took, kDeathBoundNs);
    guest.Exit();
    // A new guest takes the seat at once and serves.
    Peer next({"guest", name});
    ASSERT_TRUE(next.WaitFor("ATTACHED")) << next.transcript();
    std::vector<uint8_t> answer;
    shm::CallOptions o;
    o.timeout = std::chrono::seconds(30);
    auto t = host.Send("again", shm::MsgType::NORMAL, answer, o);
    ASSERT_TRUE(t) << t.error().ToString();
    EXPECT_EQ(std::string(answer.begin(), answer.end()), "again");
    next.Kill();
  }
}

TEST(WindowsPeerDeath, AKilledHostIsSeenByItsGuestWithin200ms) {
  const std::string name = UniqueName("hdeath");
  for (int round = 0; round < 3; ++round) {
    Peer host({"host", name});
    ASSERT_TRUE(host.WaitFor("INIT OK")) << host.transcript();
    shm::DirectGuest guest;
    shm::GuestConfig cfg;
    cfg.name = name;
    cfg.connect_timeout = std::chrono::seconds(60);
    ASSERT_TRUE(guest.Connect(cfg));
    ASSERT_TRUE(guest.Start([](const shm::Message&, shm::MutableBytes) {
      return shm::Reply{0, shm::MsgType::NORMAL};
    }));
    std::vector<uint8_t> answer;
    ASSERT_TRUE(guest.SendGuestCall("up", shm::MsgType::GUEST_CALL, answer));
    const int64_t killed = shm::platform::MonotonicNs();
    host.KillNoWait();
    auto r = guest.Wait(std::chrono::seconds(60));
    const int64_t took = shm::platform::MonotonicNs() - killed;
    std::printf("round %d: the guest saw its host gone %.2f ms after TerminateProcess\n", round,
                static_cast<double>(took) / 1e6);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), shm::ErrorCode::kHostGone) << r.error().ToString();
    EXPECT_LT(took, kDeathBoundNs);
    guest.Close();
    host.Exit();
  }
}

TEST(WindowsPeerDeath, ANewHostStartsAtOnceWhileAnOrphanedGuestStillMapsTheOldSegment) {
  const std::string name = UniqueName("orphan");
  Peer old_host({"host", name});
  ASSERT_TRUE(old_host.WaitFor("INIT OK")) << old_host.transcript();
  Peer orphan({"guest-idle", name});
  ASSERT_TRUE(orphan.WaitFor("ATTACHED")) << orphan.transcript();
  old_host.Kill();
  // The orphan still holds its pipe end and the dead host's section: neither may block the new host.
  const int64_t t0 = shm::platform::MonotonicNs();
  shm::DirectHost host;
  auto r = host.Init(SmallHost(name));
  ASSERT_TRUE(r) << r.error().ToString();
  std::printf("a new host started %.2f ms after the old one was killed, its orphaned guest still attached\n",
              static_cast<double>(shm::platform::MonotonicNs() - t0) / 1e6);
  EXPECT_TRUE(orphan.Running());
  Peer guest({"guest", name});
  ASSERT_TRUE(guest.WaitFor("ATTACHED")) << guest.transcript();
  std::vector<uint8_t> answer;
  shm::CallOptions o;
  o.timeout = std::chrono::seconds(30);
  auto t = host.Send("fresh", shm::MsgType::NORMAL, answer, o);
  ASSERT_TRUE(t) << t.error().ToString();
  EXPECT_EQ(std::string(answer.begin(), answer.end()), "fresh");
  orphan.CloseStdin();
  EXPECT_EQ(orphan.Exit(), 0) << orphan.transcript();
  host.Shutdown();
  EXPECT_EQ(guest.Exit(), 0) << guest.transcript();
}

TEST(WindowsPeerDeath, NothingOfAKilledHostBlocksTheNext) {
  const std::string name = UniqueName("killed");
  Peer old_host({"host", name});
  ASSERT_TRUE(old_host.WaitFor("INIT OK")) << old_host.transcript();
  old_host.Kill();
  EXPECT_FALSE(LockExists(name));
  EXPECT_FALSE(PipeExists(name));
  shm::DirectHost host;
  auto r = host.Init(SmallHost(name));
  EXPECT_TRUE(r) << r.error().ToString();
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
// One live host per name (a second host in another process, simultaneous hosts, takeover after a killed
// host) and shutdown (guests exit; Shutdown and the destructor never hang on a slot a late guest holds).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <thread>

#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;

TEST(OneHostPerName, HostInAnotherProcessIsRefusedAndToldThisPid) {
  SegmentName name("holder");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str())));
  Process rival = SpawnPeer({"host", "--name", name.str()});
  ASSERT_TRUE(rival.started()) << rival.error();
  std::string line;
  ASSERT_TRUE(GetLine(rival, "INIT", &line));
  EXPECT_EQ(line.rfind("INIT ERR HostAlreadyRunning", 0), 0u) << line;
  EXPECT_NE(line.find("pid " + std::to_string(::getpid())), std::string::npos) << line;
  EXPECT_TRUE(ExitsWith(rival, ExitCodeFor(ErrorCode::kHostAlreadyRunning)));
}

TEST(OneHostPerName, HostInThisProcessIsRefusedWhileAnotherProcessHolds) {
  SegmentName name("holder2");
  Process holder = SpawnPeer({"host", "--name", name.str()});
  ASSERT_TRUE(holder.started()) << holder.error();
  std::string line;
  ASSERT_TRUE(GetLine(holder, "INIT", &line));
  ASSERT_EQ(line, "INIT OK " + std::to_string(holder.pid()));

  shm::DirectHost host;
  auto r = host.Init(MakeHostConfig(name.str()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kHostAlreadyRunning) << r.error().ToString();
  EXPECT_NE(r.error().message().find("pid " + std::to_string(holder.pid())), std::string::npos) << r.error().ToString();

  // Once the holder shuts down, the name is free again.
  holder.Signal(SIGTERM);
  ASSERT_TRUE(ExitsWith(holder, kExitOk));
  auto again = host.Init(MakeHostConfig(name.str()));
  EXPECT_TRUE(again) << Describe(again);
}

TEST(OneHostPerName, SecondHostInSameProcessIsRefused) {
  SegmentName name("same");
  shm::DirectHost a, b;
  ASSERT_TRUE(a.Init(MakeHostConfig(name.str())));
  auto r = b.Init(MakeHostConfig(name.str()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kHostAlreadyRunning) << r.error().ToString();
  EXPECT_NE(r.error().message().find("pid " + std::to_string(::getpid())), std::string::npos) << r.error().ToString();
}

// 50 rounds of 2-4 host processes released at the same instant on a fresh name: exactly one wins each round.
TEST(OneHostPerName, SimultaneousHostsExactlyOneWins) {
  constexpr int kRounds = 50;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    SegmentName name("race");
    const int n = 2 + round % 3;
    // The barrier: every host reads the same pipe as stdin and calls Init at its end of file, which all of
    // them see at once when this process closes the write end.
    int barrier[2];
    ASSERT_EQ(::pipe2(barrier, O_CLOEXEC), 0);
    std::vector<Process> hosts;
    for (int i = 0; i < n; ++i) {
      Process::Options o;
      o.stdin_fd = barrier[0];
      hosts.push_back(SpawnPeer({"host", "--name", name.str(), "--barrier", "1"}, o));
      ASSERT_TRUE(hosts.back().started()) << hosts.back().error();
    }
    ::close(barrier[0]);
    for (auto& h : hosts) ASSERT_TRUE(GetLine(h, "WAITING"));
    ::close(barrier[1]);  // release them all
    int winners = 0;
    for (auto& h : hosts) {
      std::string line;
      ASSERT_TRUE(GetLine(h, "INIT", &line));
      if (line.rfind("INIT OK", 0) == 0) {
        ++winners;
      } else {
        EXPECT_EQ(line.rfind("INIT ERR HostAlreadyRunning", 0), 0u) << line;
      }
    }
    EXPECT_EQ(winners, 1);
    for (auto& h : hosts) {
      h.Signal(SIGTERM);
      auto st = h.Wait(kLong);
      ASSERT_TRUE(st) << "host pid " << h.pid() << " did not exit";
      EXPECT_TRUE(st->Is(kExitOk) || st->Is(ExitCodeFor(ErrorCode::kHostAlreadyRunning))) << st->ToString();
    }
    if (HasFailure()) return;
  }
}

TEST(OneHostPerName, NameOfKilledHostIsFreeAtOnce) {
  SegmentName name("takeover");
  Process old_host = SpawnPeer({"host", "--name", name.str()});
  ASSERT_TRUE(old_host.started()) << old_host.error();
  ASSERT_TRUE(GetLine(old_host, "INIT OK"));
  old_host.Kill();  // SIGKILL: no shutdown
  // The kernel frees the name with the dead host's sockets: nothing is left that could block the next host.
  const auto deadline = Clock::now() + kLong;
  while (NameHeld(name.str()) && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_FALSE(NameHeld(name.str())) << "the killed host's name is still bound";

  shm::DirectHost host;
  auto r = host.Init(MakeHostConfig(name.str()));
  ASSERT_TRUE(r) << Describe(r);
  ASSERT_NO_FATAL_FAILURE(FreshGuestServesThenShutsDown(host, name.str(), "after takeover"));
}

// ---- Shutdown ------------------------------------------------------------------------------------------------

using Shutdown = HostAndGuest;

TEST_F(Shutdown, SendShutdownEndsTheGuestsWait) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("")));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("before shutdown", MsgType::NORMAL, out));
  ASSERT_TRUE(host_->SendShutdown());
  std::string line;
  ASSERT_TRUE(GetLine(guest_, "WAIT_DONE", &line));
  EXPECT_EQ(line, "WAIT_DONE Ok");
  EXPECT_TRUE(ExitsWith(guest_, kExitOk));
  // The host refuses further calls.
  auto r = Call("after shutdown", MsgType::NORMAL, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kShuttingDown) << r.error().ToString();
}

TEST(ShutdownWithPeerHost, GuestWaitReportsHostGoneWhenTheHostIsKilled) {
  SegmentName name("gone");
  Process host = SpawnPeer({"host", "--name", name.str()});
  ASSERT_TRUE(host.started()) << host.error();
  ASSERT_TRUE(GetLine(host, "INIT OK"));
  Process guest = SpawnPeer({"guest", "--name", name.str()});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "SERVING"));
  host.Kill();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "WAIT_DONE", &line));
  EXPECT_EQ(line, "WAIT_DONE HostGone");
  EXPECT_TRUE(ExitsWith(guest, ExitCodeFor(ErrorCode::kHostGone)));
}

TEST_F(Shutdown, ShutdownIsPromptWhileATimedOutCallHoldsASlot) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  ASSERT_NE(AbandonASlot(*host_, guest_, "held"), UINT32_MAX);
  const auto start = Clock::now();
  host_->Shutdown();
  EXPECT_LT(Clock::now() - start, seconds(5));
  // The guest finishes its late handler, finds the host shut down, and exits cleanly.
  ASSERT_TRUE(guest_.WriteLine("GO"));
  EXPECT_TRUE(ExitsWith(guest_, kExitOk));
}

TEST_F(Shutdown, DestructorIsPromptWhileATimedOutCallHoldsASlot) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  ASSERT_NE(AbandonASlot(*host_, guest_, "held"), UINT32_MAX);
  const auto start = Clock::now();
  host_.reset();
  EXPECT_LT(Clock::now() - start, seconds(5));
  ASSERT_TRUE(guest_.WriteLine("GO"));
  EXPECT_TRUE(ExitsWith(guest_, kExitOk));
}

TEST_F(Shutdown, CallInFlightEndsWithClosed) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  shm::Result<MsgType> in_flight = shm::Error(ErrorCode::kInvalidArgs, "not run");
  std::thread caller([&] {
    std::vector<uint8_t> out;
    in_flight = host_->Send("stuck", Type(kTypeBlock), out, {kLong, false});
  });
  // Once the guest is inside its handler, the call is being served and will not be answered.
  const bool entered = static_cast<bool>(GetLine(guest_, "ENTERED"));
  const auto start = Clock::now();
  host_->Shutdown();
  caller.join();
  const auto took = Clock::now() - start;
  ASSERT_TRUE(entered) << guest_.transcript();
  EXPECT_LT(took, seconds(5));
  ASSERT_FALSE(in_flight);
  EXPECT_EQ(in_flight.error().code(), ErrorCode::kClosed) << in_flight.error().ToString();
  ASSERT_TRUE(guest_.WriteLine("GO"));
  EXPECT_TRUE(ExitsWith(guest_, kExitOk));
}

}  // namespace
}  // namespace shm_test

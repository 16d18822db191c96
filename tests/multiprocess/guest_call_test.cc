// SPDX-License-Identifier: Apache-2.0
// Guest calls from a guest process: served by the host's worker (which sleeps when idle) or from the host's
// own loop, each exactly once with two processors; copying calls and a held zero-copy guest slot.
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;

// The host's side of guest calls: answers "host:<request>" in the request's placement, and counts how often
// each request was served.
class HostHandler {
 public:
  shm::Handler handler() {
    return [this](const shm::Message& m, shm::MutableBytes out) { return Serve(m, out); };
  }
  int total() const { return total_.load(); }
  std::map<std::string, int> seen() const {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  shm::Reply Serve(const shm::Message& m, shm::MutableBytes out) {
    const std::string req(m.data.as_string_view());
    total_.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++seen_[req];
    }
    switch (static_cast<uint32_t>(m.type)) {
      case kTypeThrow: throw std::runtime_error("the test asked the host's handler to throw");
      case kTypeReplySize: return shm::Reply{static_cast<int32_t>(std::stol(req)), MsgType::NORMAL};
      case kTypeReplyType: return shm::Reply{0, static_cast<MsgType>(std::stoul(req))};
      default: break;
    }
    const std::string answer = "host:" + req;
    if (answer.size() > out.size()) throw std::length_error("answer does not fit");
    uint8_t* dst = m.end_aligned ? out.data() + out.size() - answer.size() : out.data();
    std::memcpy(dst, answer.data(), answer.size());
    const int32_t n = static_cast<int32_t>(answer.size());
    return shm::Reply{m.end_aligned ? -n : n, m.type};
  }

  mutable std::mutex mu_;
  std::map<std::string, int> seen_;
  std::atomic<int> total_{0};
};

TEST(GuestCalls, ServedByTheHostsWorker) {
  SegmentName name("gcworker");
  HostHandler h;  // outlives the host and its worker thread
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 2)));
  ASSERT_TRUE(host.Start(h.handler()));
  auto again = host.Start(h.handler());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kInvalidArgs) << again.error().ToString();

  Process guest =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "basic", "--count", "100", "--rounds", "20"});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "OK"));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  EXPECT_EQ(h.total(), 120);
  // The guest's copying calls parked their slot; closing the guest freed it.
  const int fd = OpenSegmentOf(::getpid(), name.str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  for (uint32_t i = 1; i <= 2; ++i) EXPECT_EQ(SlotStateIn(fd, i), StateValue(shm::wire::SlotState::kFree)) << i;
  ::close(fd);
  host.Stop();
  host.Stop();  // idempotent
}

// The guest-call worker sleeps on the doorbell when idle: over an idle window this whole process (whose only
// busy thread would be that worker) uses a small fraction of one CPU.
TEST(GuestCalls, HostsWorkerSleepsWhenIdle) {
  SegmentName name("gcidle");
  HostHandler h;  // outlives the host and its worker thread
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 2)));
  ASSERT_TRUE(host.Start(h.handler()));
  Process first =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "basic", "--count", "5", "--rounds", "1"});
  ASSERT_TRUE(first.started()) << first.error();
  ASSERT_TRUE(ExitsWith(first, kExitOk));

  // A measurement window, not a wait for a condition.
  const int64_t cpu0 = ProcessCpuNs();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(milliseconds(1500));
  const int64_t cpu = ProcessCpuNs() - cpu0;
  const int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  std::printf("idle host with a guest-call worker: %.2f ms CPU in %.0f ms\n", static_cast<double>(cpu) / 1e6,
              static_cast<double>(wall) / 1e6);
  EXPECT_LT(cpu, wall / 20) << "the idle guest-call worker burns CPU";

  // And it wakes for the next call.
  Process second =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "basic", "--count", "5", "--rounds", "1"});
  ASSERT_TRUE(second.started()) << second.error();
  EXPECT_TRUE(ExitsWith(second, kExitOk));
  EXPECT_EQ(h.total(), 12);
}

// The guest's workers sleep on their slots' futexes when idle: the guest process uses little CPU.
TEST(GuestCalls, GuestsWorkersSleepWhenIdle) {
  SegmentName name("gwidle");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 4, 0)));
  Process guest = SpawnPeer({"guest", "--name", name.str()});
  ASSERT_TRUE(guest.started()) << guest.error();
  ASSERT_TRUE(GetLine(guest, "SERVING"));
  std::vector<uint8_t> out;
  for (uint32_t i = 0; i < 4; ++i) ASSERT_TRUE(host.SendToSlot(i, "wake", MsgType::NORMAL, out, {kLong, false}));

  auto cpu0 = OtherProcessCpuNs(guest.pid());
  ASSERT_TRUE(cpu0);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(milliseconds(1500));  // a measurement window
  auto cpu1 = OtherProcessCpuNs(guest.pid());
  ASSERT_TRUE(cpu1);
  const int64_t wall = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
  std::printf("idle guest with 4 workers: %.2f ms CPU in %.0f ms\n", static_cast<double>(*cpu1 - *cpu0) / 1e6,
              static_cast<double>(wall) / 1e6);
  EXPECT_LT(*cpu1 - *cpu0, wall / 20) << "idle guest workers burn CPU";
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

TEST(GuestCalls, ServedFromTheHostsOwnLoop) {
  SegmentName name("gcloop");
  HostHandler h;  // outlives the host and its worker thread
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 2)));
  // Nothing pending yet: the wait ends at its timeout with false.
  auto idle = host.WaitForGuestCalls(milliseconds(20));
  ASSERT_TRUE(idle) << Describe(idle);
  EXPECT_FALSE(*idle);

  Process guest =
      SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "basic", "--count", "100", "--rounds", "20"});
  ASSERT_TRUE(guest.started()) << guest.error();
  size_t served = 0;
  const auto deadline = Clock::now() + kLong;
  while (!guest.Exited() && Clock::now() < deadline) {
    auto w = host.WaitForGuestCalls(milliseconds(100));
    ASSERT_TRUE(w) << Describe(w);
    if (!*w) continue;
    auto n = host.ProcessGuestCalls(h.handler());
    ASSERT_TRUE(n) << Describe(n);
    served += *n;
  }
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  EXPECT_EQ(served, 120u);
  EXPECT_EQ(h.total(), 120);
}

// Two threads of this process serve guest calls from four guest threads: every call is served exactly once.
TEST(GuestCalls, EachCallIsProcessedOnceWithTwoProcessors) {
  SegmentName name("gconce");
  HostHandler h;
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 4)));
  std::atomic<bool> stop{false};
  std::atomic<size_t> served{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> processors;
  for (int p = 0; p < 2; ++p) {
    processors.emplace_back([&] {
      const shm::Handler handler = h.handler();
      while (!stop.load()) {
        auto w = host.WaitForGuestCalls(milliseconds(50));
        if (!w) {
          errors.fetch_add(1);
          return;
        }
        auto n = host.ProcessGuestCalls(handler);
        if (!n)
          errors.fetch_add(1);
        else
          served.fetch_add(*n);
      }
    });
  }
  constexpr int kThreads = 4, kPerThread = 300;
  Process guest = SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "ids", "--threads",
                             std::to_string(kThreads), "--count", std::to_string(kPerThread)});
  const bool ok = guest.started() && ExitsWith(guest, kExitOk);
  stop.store(true);
  for (auto& t : processors) t.join();
  ASSERT_TRUE(ok) << guest.error() << guest.transcript();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(served.load(), static_cast<size_t>(kThreads * kPerThread));
  const auto seen = h.seen();
  EXPECT_EQ(seen.size(), static_cast<size_t>(kThreads * kPerThread));
  for (const auto& [id, count] : seen) EXPECT_EQ(count, 1) << "request " << id << " was served " << count << " times";
}

}  // namespace
}  // namespace shm_test

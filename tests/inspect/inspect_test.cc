// SPDX-License-Identifier: Apache-2.0
// shm-inspect against live segments, every process real: this test process is the host, shm_test_peer the
// guest (or a second host), and shm-inspect is run as its own process and its --json output read. The slots
// are driven through every state (a slot held by a dead guest included), and the tool is shown to change
// nothing in the segment, never to take the guest seat, and not to hang on a host that does not answer.
#include <dirent.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

#ifndef SHM_INSPECT
#error "SHM_INSPECT must name the shm-inspect executable"
#endif

namespace shm_test {
namespace {

using shm::MsgType;

struct InspectRun {
  int code = -1;
  std::string out;
};

// Run shm-inspect with `args` to its end (it bounds its own waits; kLong is the test's guard).
InspectRun Inspect(std::vector<std::string> args) {
  args.insert(args.begin(), SHM_INSPECT);
  Process p = Process::Spawn(args);
  InspectRun r;
  if (!p.started()) {
    ADD_FAILURE() << p.error();
    return r;
  }
  p.CloseStdin();
  while (p.ReadLine(kLong)) {
  }
  r.out = p.transcript();
  auto st = p.Wait(kLong);
  EXPECT_TRUE(st) << "shm-inspect did not exit";
  if (st && st->exited) r.code = st->code;
  return r;
}

// The value that follows `"key":` in `json` from position `from` on (a number, true/false/null, or a string
// with its quotes); empty if the key is not there.
std::string Field(const std::string& json, const std::string& key, size_t from = 0) {
  const std::string k = "\"" + key + "\":";
  const size_t at = json.find(k, from);
  if (at == std::string::npos) return "";
  size_t b = at + k.size(), e = b;
  if (json[b] == '"') {
    e = json.find('"', b + 1) + 1;
  } else {
    while (e < json.size() && json[e] != ',' && json[e] != '}' && json[e] != ']') ++e;
  }
  return json.substr(b, e - b);
}

// The field `key` of slot `index`'s object.
std::string SlotField(const std::string& json, uint32_t index, const std::string& key) {
  const size_t at = json.find("{\"index\":" + std::to_string(index) + ",");
  if (at == std::string::npos) return "";
  return Field(json, key, at);
}

// Wait until slot `index` shows `state` to shm-inspect (condition-based; the deadline is only a guard).
InspectRun WaitForSlotState(const std::string& name, uint32_t index, const std::string& state) {
  const auto deadline = Clock::now() + kLong;
  InspectRun r;
  do {
    r = Inspect({name, "--json"});
    if (SlotField(r.out, index, "state") == "\"" + state + "\"") return r;
    std::this_thread::sleep_for(milliseconds(5));
  } while (Clock::now() < deadline);
  ADD_FAILURE() << "slot " << index << " never showed " << state << "; last output: " << r.out;
  return r;
}

std::vector<uint8_t> AllBytes(const std::string& name) {
  SegmentMapping m(::getpid(), name, false);
  return std::vector<uint8_t>(m.base(), m.base() + m.size());
}

using InspectLive = HostAndGuest;

TEST_F(InspectLive, ShowsEveryStateOfEverySlotAsTheProcessesDriveThem) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 4, 1)));
  const std::string name = name_.str();
  InspectRun r = Inspect({name, "--json"});
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(Field(r.out, "schema"), "\"shm-inspect/1\"");
  EXPECT_EQ(Field(r.out, "alive"), "true");
  EXPECT_EQ(Field(r.out, "pid"), std::to_string(::getpid())) << "the host's pid, from the kernel";
  EXPECT_EQ(Field(r.out, "version"), std::to_string(shm::wire::kVersion));
  EXPECT_EQ(Field(r.out, "host_slots"), "4");
  EXPECT_EQ(Field(r.out, "guest_slots"), "1");
  EXPECT_EQ(Field(r.out, "attached"), "true");
  EXPECT_EQ(Field(r.out, "session"), "1");
  for (uint32_t i = 0; i < 5; ++i) EXPECT_EQ(SlotField(r.out, i, "state"), "\"FREE\"") << i;
  EXPECT_EQ(SlotField(r.out, 4, "kind"), "\"guest\"");

  // RESPONSE: a copying call parks its slot for the thread's next call.
  std::vector<uint8_t> out;
  ASSERT_TRUE(host_->SendToSlot(0, "hi", MsgType::NORMAL, out, {kLong, false}));
  r = Inspect({name, "--json"});
  EXPECT_EQ(SlotField(r.out, 0, "state"), "\"RESPONSE\"");
  EXPECT_EQ(SlotField(r.out, 0, "holder_side"), "\"host\"");
  EXPECT_EQ(SlotField(r.out, 0, "seq"), "1");
  const size_t dirs = r.out.find("\"host_to_guest\"");
  EXPECT_EQ(Field(r.out, "calls", dirs), "1") << r.out;

  // CLAIMED: a zero-copy slot held by the host.
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  r = Inspect({name, "--json"});
  EXPECT_EQ(SlotField(r.out, z->index(), "state"), "\"CLAIMED\"");
  EXPECT_EQ(SlotField(r.out, z->index(), "holder"), "\"caller\"");

  // SERVING: the guest's handler holds a call of a host thread.
  std::thread caller([&] {
    std::vector<uint8_t> o;
    auto c = host_->SendToSlot(2, "block", Type(kTypeBlock), o, {kLong, false});
    EXPECT_TRUE(c) << Describe(c);
  });
  ASSERT_TRUE(GetLine(guest_, "ENTERED 2"));
  r = WaitForSlotState(name, 2, "SERVING");
  EXPECT_EQ(SlotField(r.out, 2, "holder_side"), "\"guest\"");
  EXPECT_EQ(SlotField(r.out, 2, "req_type"), std::to_string(kTypeBlock));

  // Idle: every thread that waits on a host slot sleeps (its W bit is set: the four guest workers, the host
  // caller of slot 2), so nothing but shm-inspect could write now, and it changes no byte of the memory.
  {
    SegmentMapping m(::getpid(), name, false);
    ASSERT_TRUE(m.ok());
    auto all_asleep = [&] {
      for (uint32_t i = 0; i < 4; ++i) {
        const auto* ctl = reinterpret_cast<const std::atomic<uint32_t>*>(m.base() + shm::wire::kSegmentHeaderSize +
                                                                         uint64_t{shm::wire::kSlotHeaderSize} * i);
        if ((ctl->load() & shm::wire::kWaiting) == 0) return false;
      }
      return true;
    };
    const auto until = Clock::now() + kLong;
    while (!all_asleep() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(2));
    ASSERT_TRUE(all_asleep()) << "a waiter never went to sleep";
  }
  const std::vector<uint8_t> before = AllBytes(name);
  r = Inspect({name});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("SERVING"), std::string::npos) << r.out;
  const std::vector<uint8_t> after = AllBytes(name);
  ASSERT_EQ(before.size(), after.size());
  size_t changed = before.size();
  for (size_t i = 0; i < before.size() && changed == before.size(); ++i) {
    if (before[i] != after[i]) changed = i;
  }
  EXPECT_EQ(changed, before.size()) << "the byte at offset " << changed << " changed";

  ASSERT_TRUE(guest_.WriteLine("go"));
  caller.join();
  z->Release();

  // ABANDONED, then held by a dead guest: a call times out while the guest serves it, and the guest dies.
  const uint32_t abandoned = AbandonASlot(*host_, guest_, "gone");
  ASSERT_NE(abandoned, UINT32_MAX);
  r = WaitForSlotState(name, abandoned, "ABANDONED");
  EXPECT_EQ(SlotField(r.out, abandoned, "holder"), "\"server\"");
  guest_.Kill();
  ASSERT_TRUE(guest_.Wait(kLong));
  const auto deadline = Clock::now() + kLong;
  do {
    r = Inspect({name, "--json"});
  } while (Field(r.out, "attached") != "false" && Clock::now() < deadline);
  EXPECT_EQ(Field(r.out, "attached"), "false") << "the host saw its guest's connection close";
  EXPECT_EQ(SlotField(r.out, abandoned, "state"), "\"ABANDONED\"") << "held by the dead guest";
  EXPECT_EQ(SlotField(r.out, abandoned, "holder_side"), "\"guest\"");
  r = Inspect({name});
  EXPECT_NE(r.out.find("server (guest) GONE"), std::string::npos) << r.out;

  // REQUEST: a call nobody serves yet (no guest attached).
  std::thread waiting([&] {
    std::vector<uint8_t> o;
    auto c = host_->SendToSlot(3, "later", MsgType::NORMAL, o, {kLong, false});
    EXPECT_TRUE(c) << Describe(c);
  });
  r = WaitForSlotState(name, 3, "REQUEST");
  EXPECT_EQ(SlotField(r.out, 3, "holder"), "\"queued\"");

  // The tool never took the guest seat: a new guest attaches at once, serves the request and frees what
  // the dead one left.
  ASSERT_NO_FATAL_FAILURE(StartGuest());
  waiting.join();
  r = WaitForSlotState(name, abandoned, "FREE");
  EXPECT_EQ(Field(r.out, "attached"), "true");
  EXPECT_EQ(Field(r.out, "session"), "2");
  EXPECT_EQ(SlotField(r.out, 3, "state"), "\"RESPONSE\"");

  // A host that is shutting down refuses observers too (SPECIFICATION.md §4.1 step 2): said, not waited for.
  ASSERT_TRUE(host_->SendShutdown());
  r = Inspect({name, "--json"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(Field(r.out, "answered"), "false") << r.out;
  EXPECT_NE(r.out.find("shutting down"), std::string::npos) << r.out;
}

TEST_F(InspectLive, CountersShowErrorsByKindPerDirection) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 1, 0)));
  std::vector<uint8_t> out;
  ASSERT_TRUE(Call("abc", MsgType::NORMAL, out));
  ASSERT_FALSE(Call("", Type(kTypeThrow), out));
  InspectRun r = Inspect({name_.str(), "--json"});
  const size_t dirs = r.out.find("\"host_to_guest\"");
  ASSERT_NE(dirs, std::string::npos) << r.out;
  EXPECT_EQ(Field(r.out, "calls", dirs), "1");
  EXPECT_EQ(Field(r.out, "bytes_out", dirs), "3");
  EXPECT_EQ(Field(r.out, "HandlerFailed", dirs), "1") << "the host's remote error";
  const size_t server = r.out.find("\"server\"", dirs);
  EXPECT_EQ(Field(r.out, "served", server), "2") << "the guest's own count";
  EXPECT_EQ(Field(r.out, "HandlerFailed", server), "1") << "the guest's error answer";
  r = Inspect({name_.str()});
  EXPECT_NE(r.out.find("HandlerFailed 1"), std::string::npos) << r.out;
}

// Guest slots: a guest call the host's handler holds (SERVING, held by the host), then one nobody serves
// (REQUEST), each made by a guest process.
TEST(InspectGuestSlots, ShowsAGuestCallServedByTheHostAndOneQueued) {
  SegmentName name("insp-gs");
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str(), 1, 1)));
  ASSERT_TRUE(host.Start([&](const shm::Message& m, shm::MutableBytes out) {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait_for(lock, kLong, [&] { return release; });
    std::memcpy(out.data(), m.data.data(), m.data.size());
    return shm::Reply{static_cast<int32_t>(m.data.size()), m.type};
  }));
  Process guest = SpawnPeer({"guest-call", "--name", name.str(), "--scenario", "one", "--payload", "held"});
  ASSERT_TRUE(guest.started()) << guest.error();
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, kLong, [&] { return entered; })) << "the guest call never reached the host";
  }
  InspectRun r = WaitForSlotState(name.str(), 1, "SERVING");
  EXPECT_EQ(SlotField(r.out, 1, "kind"), "\"guest\"");
  EXPECT_EQ(SlotField(r.out, 1, "holder"), "\"server\"");
  EXPECT_EQ(SlotField(r.out, 1, "holder_side"), "\"host\"");
  EXPECT_EQ(SlotField(r.out, 1, "req_size"), "4");
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  ASSERT_TRUE(GetLine(guest, "RESULT"));
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
  host.Stop();  // nobody serves guest calls any more
  Process queued = SpawnPeer(
      {"guest-call", "--name", name.str(), "--scenario", "one", "--payload", "waits", "--timeout-ms", "60000"});
  ASSERT_TRUE(queued.started()) << queued.error();
  r = WaitForSlotState(name.str(), 1, "REQUEST");
  EXPECT_EQ(SlotField(r.out, 1, "holder"), "\"queued\"");
  const size_t dirs = r.out.find("\"guest_to_host\"");
  EXPECT_EQ(Field(r.out, "calls", dirs), "0") << "the new guest's own counters start at zero";
  EXPECT_EQ(Field(r.out, "served", r.out.find("\"server\"", dirs)), "1") << "the host served one guest call";
  queued.Kill();
}

// A host that does not answer (stopped) is reported within the tool's own deadline, never waited for; a
// live name is never cleaned; a name whose host has gone leaves nothing to clean.
TEST(Inspect, StoppedHostIsReportedAndLiveNamesAreNeverCleaned) {
  SegmentName name("insp-stop");
  Process host = SpawnPeer({"host", "--name", name.str()});
  ASSERT_TRUE(host.started()) << host.error();
  std::string init;
  ASSERT_TRUE(GetLine(host, "INIT OK", &init));
  const std::string pid = init.substr(std::string("INIT OK ").size());
  InspectRun r = Inspect({"--list", "--json"});
  EXPECT_NE(r.out.find("\"name\":\"" + name.str() + "\",\"alive\":true,\"answered\":true"), std::string::npos) << r.out;
  host.Signal(SIGSTOP);
  // The signal stops the process asynchronously: wait until every thread of it is stopped ('T').
  auto all_stopped = [&] {
    DIR* d = ::opendir(("/proc/" + pid + "/task").c_str());
    if (d == nullptr) return false;
    bool stopped = true;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream f("/proc/" + pid + "/task/" + e->d_name + "/stat");
      std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      const size_t paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') stopped = false;
    }
    ::closedir(d);
    return stopped;
  };
  const auto until = Clock::now() + kLong;
  while (!all_stopped() && Clock::now() < until) std::this_thread::sleep_for(milliseconds(2));
  ASSERT_TRUE(all_stopped()) << "host pid " << pid << " did not stop";
  const auto t0 = Clock::now();
  r = Inspect({name.str(), "--timeout-ms", "300"});
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("NOT ANSWERING"), std::string::npos) << r.out;
  EXPECT_LT(Clock::now() - t0, kLong) << "bounded by its own deadline";
  r = Inspect({"--clean", name.str()});
  EXPECT_EQ(r.code, 1) << "a live host's name is never cleaned: " << r.out;
  host.Signal(SIGCONT);
  r = Inspect({name.str(), "--json"});
  EXPECT_EQ(r.code, 0) << r.out;
  host.Signal(SIGTERM);
  ASSERT_TRUE(ExitsWith(host, kExitOk));
  r = Inspect({name.str()});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("no live process holds this name"), std::string::npos) << r.out;
  r = Inspect({"--clean", name.str()});
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("nothing to clean"), std::string::npos) << r.out;
  r = Inspect({"--list"});
  EXPECT_EQ(r.out.find(name.str()), std::string::npos) << r.out;
}

TEST(Inspect, RefusesBadUsage) {
  EXPECT_EQ(Inspect({}).code, 2);
  EXPECT_EQ(Inspect({"a", "b"}).code, 2);
  EXPECT_EQ(Inspect({"bad/name"}).code, 2);
  EXPECT_EQ(Inspect({"--list", "--watch", "x"}).code, 2);
  EXPECT_EQ(Inspect({"x", "--timeout-ms", "0"}).code, 2);
  EXPECT_EQ(Inspect({"--bogus"}).code, 2);
  EXPECT_EQ(Inspect({"--help"}).code, 0);
}

}  // namespace
}  // namespace shm_test

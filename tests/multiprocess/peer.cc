// SPDX-License-Identifier: Apache-2.0
// shm_test_peer: the other process of the multi-process tests. The tests fork+exec it with a command and
// flags; it prints machine-readable lines on stdout and exits with a code that says how it ended
// (peer_protocol.h). Commands:
//
//   guest      --name N [--mode serve|attach-only|wrong-seq] [--connect-timeout-ms T]
//              Connect, then serve with the test handler until Wait() ends ("WAIT_DONE <how>"). The request
//              type picks the handler's behaviour (echo, throw, oversized or reserved reply, block until a
//              stdin line, ...: peer_protocol.h). attach-only connects without serving and closes at end of
//              stdin. wrong-seq is a broken guest: it takes the first request on host slot 0 and answers it
//              with a RESPONSE of the next seq ("WRONG_SEQ <seq>"), then closes at end of stdin.
//   guest-call --name N --scenario basic|ids|one|crafted [flags below]
//              Connect and call the host. basic: --count copying calls and --rounds zero-copy calls, checking
//              the host's "host:<request>" answers. ids: --threads x --count calls with unique ids. one: a
//              single call (--type, --size or --payload, --aligned, --timeout-ms, --wait-go) printing
//              "RESULT ...". crafted: a guest-slot request with the raw wire size --size (and --type),
//              printing the host's raw answer.
//   host       --name N [--barrier 1] [--host-slots K]
//              Init a host ("INIT OK <pid>" or "INIT ERR <code> <message>"); hold it until SIGTERM. With
//              --barrier, Init only once stdin reaches end of file (several hosts released at once).
//   pingpong   --name N --count C [--size S] [--max-seconds T]
//              Host with one slot; spawn a serving guest (this executable); make C echo calls (stopping after
//              T seconds); shut down; print "PINGPONG ..." with counts of sleeps and preemptions.
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../tools/common/child_process.h"
#include "../common/segment_access.h"
#include "large_messages.h"
#include "peer_protocol.h"
#include "shm/detail/segment.h"
#include "shm/detail/slot.h"
#include "shm/detail/wait.h"
#include "shm/shm.h"

namespace {

using shm::Bytes;
using shm::ErrorCode;
using shm::Message;
using shm::MsgType;
using shm::MutableBytes;
using shm::Reply;
using namespace shm_test;

// One whole line per write: lines from several handler threads never interleave (pipe writes up to
// PIPE_BUF bytes are atomic).
void Say(const std::string& line) {
  const std::string s = line + "\n";
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(1, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

int Fail(const std::string& what) {
  Say("FAIL " + what);
  return kExitCheckFailed;
}

int Failed(const char* stage, const shm::Error& e) {
  Say(std::string(stage) + " " + shm::ToString(e.code()) + " " + e.message());
  return ExitCodeFor(e.code());
}

class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 0; i + 1 < argc; i += 2) {
      std::string k = argv[i];
      if (k.size() > 2 && k[0] == '-' && k[1] == '-') values_[k.substr(2)] = argv[i + 1];
    }
    ok_ = argc % 2 == 0;
  }
  bool ok() const { return ok_; }
  std::string Get(const std::string& k, const std::string& def = "") const {
    auto it = values_.find(k);
    return it == values_.end() ? def : it->second;
  }
  long long Int(const std::string& k, long long def) const {
    auto it = values_.find(k);
    return it == values_.end() ? def : std::stoll(it->second);
  }

 private:
  std::map<std::string, std::string> values_;
  bool ok_ = false;
};

// Read one line from stdin (without the newline). false at end of file.
bool ReadStdinLine(std::string* line) {
  line->clear();
  char c;
  for (;;) {
    ssize_t n = ::read(0, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    line->push_back(c);
  }
}

void WaitForStdinEof() {
  std::string line;
  while (ReadStdinLine(&line)) {
  }
}

// ---- The guest's test handler (request types in peer_protocol.h) ---------------------------------------------

Reply Text(MutableBytes out, const std::string& s) {
  if (s.size() > out.size()) throw std::length_error("reply does not fit");
  std::memcpy(out.data(), s.data(), s.size());
  return Reply{static_cast<int32_t>(s.size()), MsgType::NORMAL};
}

// Same bytes, same placement, same type if it is a valid response type.
Reply Echo(const Message& m, MutableBytes out) {
  const size_t n = m.data.size();
  if (n > out.size()) {  // a large request (SPECIFICATION.md §8.5): a large echo, placement has no meaning then
    return Reply::Owned(std::vector<uint8_t>(m.data.data(), m.data.data() + n),
                        shm::IsUserResponseType(m.type) ? m.type : MsgType::NORMAL);
  }
  uint8_t* dst = m.end_aligned ? out.data() + (out.size() - n) : out.data();
  if (n != 0) std::memcpy(dst, m.data.data(), n);
  const int32_t size = static_cast<int32_t>(n);
  return Reply{m.end_aligned ? -size : size, shm::IsUserResponseType(m.type) ? m.type : MsgType::NORMAL};
}

struct ServeState {
  std::atomic<uint64_t> calls{0};
  std::mutex stdin_mu;
  std::mutex barrier_mu;
  std::condition_variable barrier_cv;
  std::map<std::string, int> barrier;
};

Reply Serve(ServeState& st, const Message& m, MutableBytes out) {
  const uint64_t call = st.calls.fetch_add(1) + 1;
  bool large = false;
  Reply r = ServeLarge(m, out, &large);
  if (large) return r;
  const std::string payload(m.data.as_string_view());
  switch (static_cast<uint32_t>(m.type)) {
    case kTypeSlot: return Text(out, std::to_string(m.slot));
    case kTypeThrow: throw std::runtime_error("the test asked this handler to throw");
    case kTypeReplySize: return Reply{static_cast<int32_t>(std::stol(payload)), MsgType::NORMAL};
    case kTypeReplyType: return Reply{0, static_cast<MsgType>(std::stoul(payload))};
    case kTypeFail: return Reply::Failure();
    case kTypeBlock: {
      std::lock_guard<std::mutex> lock(st.stdin_mu);
      Say("ENTERED " + std::to_string(m.slot) + " " + payload);
      std::string go;
      (void)ReadStdinLine(&go);
      Say("ANSWERING " + std::to_string(m.slot) + " " + payload);
      return Echo(m, out);
    }
    case kTypeCount: return Text(out, std::to_string(call));
    case kTypeBarrier: {
      const size_t space = payload.find(' ');
      if (space == std::string::npos) return Text(out, "bad barrier request");
      const std::string round = payload.substr(0, space);
      const int n = std::stoi(payload.substr(space + 1));
      std::unique_lock<std::mutex> lock(st.barrier_mu);
      ++st.barrier[round];
      st.barrier_cv.notify_all();
      const bool all_in =
          st.barrier_cv.wait_for(lock, std::chrono::seconds(60), [&] { return st.barrier[round] >= n; });
      return Text(out, all_in ? "ok" : "timeout");
    }
    default: return Echo(m, out);
  }
}

// A broken guest's answer, through a second mapping of the segment: take the first request on host slot 0
// and publish a RESPONSE of the next seq, one its caller never asked for.
int AnswerWithTheWrongSeq(const std::string& name) {
  auto seg = shm::detail::Segment::FromDescriptor(
      shm::platform::File(shm_test::OpenSegmentOf(::getpid(), name, O_RDWR)), true);
  if (!seg) return Failed("ATTACH_FAILED", seg.error());
  auto& h = *seg->Slot(0).header;
  shm::detail::SpinPolicy spin;
  uint32_t v = 0, seq = 0;
  const int64_t until = shm::platform::MonotonicNs() + 60000000000LL;
  for (;;) {
    const auto st = shm::detail::WaitFor(
        h.ctl, nullptr, until, spin, [](uint32_t w) { return shm::wire::CtlIs(w, shm::wire::SlotState::kRequest); },
        [](bool) { return false; }, &v);
    if (st != shm::detail::WaitStatus::kReady) return Fail("no request arrived on slot 0");
    if (shm::detail::TryTake(h, &seq)) break;
  }
  shm::detail::WriteErrorResponse(h, shm::wire::WireError::kNone);
  h.resp_type.store(static_cast<uint32_t>(MsgType::NORMAL), std::memory_order_relaxed);
  const uint32_t wrong = shm::wire::NextSeq(seq);
  if (!shm::detail::Transition(h, shm::wire::SlotState::kServing, seq, shm::wire::SlotState::kResponse, wrong)) {
    return Fail("the taken request moved");
  }
  Say("WRONG_SEQ " + std::to_string(wrong));
  return kExitOk;
}

// --max-message and --max-transfers: the guest's limits on large messages.
void ApplyTransferLimits(const Args& a, shm::GuestConfig* cfg) {
  cfg->transfers.max_message_size = static_cast<uint64_t>(a.Int("max-message", 1LL << 30));
  cfg->transfers.max_transfers = static_cast<uint32_t>(a.Int("max-transfers", 16));
}

int RunGuest(const Args& a) {
  const std::string mode = a.Get("mode", "serve");
  shm::GuestConfig cfg;
  cfg.name = a.Get("name");
  cfg.connect_timeout = std::chrono::milliseconds(a.Int("connect-timeout-ms", 60000));
  ApplyTransferLimits(a, &cfg);
  Say("CONNECTING");
  shm::DirectGuest guest;
  if (auto r = guest.Connect(cfg); !r) return Failed("CONNECT_FAILED", r.error());
  Say("CONNECTED pid=" + std::to_string(::getpid()) + " host_slots=" + std::to_string(guest.host_slots()) +
      " guest_slots=" + std::to_string(guest.guest_slots()));
  if (mode == "attach-only") {
    WaitForStdinEof();
    guest.Close();
    Say("CLOSED");
    return kExitOk;
  }
  if (mode == "wrong-seq") {
    if (int r = AnswerWithTheWrongSeq(cfg.name); r != kExitOk) return r;
    WaitForStdinEof();
    guest.Close();
    Say("CLOSED");
    return kExitOk;
  }
  if (mode != "serve") return kExitUsage;
  ServeState st;
  if (auto r = guest.Start([&st](const Message& m, MutableBytes out) { return Serve(st, m, out); }); !r) {
    return Failed("START_FAILED", r.error());
  }
  Say("SERVING");
  auto w = guest.Wait();
  Say(std::string("WAIT_DONE ") + (w ? "Ok" : shm::ToString(w.error().code())));
  guest.Close();
  return w ? kExitOk : ExitCodeFor(w.error().code());
}

// ---- Guest calls -----------------------------------------------------------------------------------------------

// Write `s` at the start (or the end) of a zero-copy slot's request buffer; returns the wire size.
int32_t Place(shm::ZeroCopySlot& slot, const std::string& s, bool end_aligned) {
  MutableBytes buf = slot.RequestBuffer();
  uint8_t* dst = end_aligned ? buf.data() + (buf.size() - s.size()) : buf.data();
  std::memcpy(dst, s.data(), s.size());
  const int32_t n = static_cast<int32_t>(s.size());
  return end_aligned ? -n : n;
}

int GuestCallsBasic(shm::DirectGuest& g, const Args& a) {
  const long long count = a.Int("count", 100), rounds = a.Int("rounds", 20);
  const shm::CallOptions opts{std::chrono::seconds(60), false};
  std::vector<uint8_t> resp;
  for (long long i = 0; i < count; ++i) {
    const std::string req = "gc-" + std::to_string(i);
    shm::CallOptions o = opts;
    o.end_aligned = i % 2 == 1;
    auto r = g.SendGuestCall(req, MsgType::GUEST_CALL, resp, o);
    if (!r) return Failed("CALL_FAILED", r.error());
    if (std::string(resp.begin(), resp.end()) != "host:" + req) {
      return Fail("call " + req + " answered '" + std::string(resp.begin(), resp.end()) + "'");
    }
  }
  // Zero copy: one held guest slot, written and read in place, sent again and again.
  auto slot = g.AcquireGuestSlot(std::chrono::seconds(60));
  if (!slot) return Failed("ACQUIRE_FAILED", slot.error());
  const uint32_t index = slot->index();
  for (long long i = 0; i < rounds; ++i) {
    const std::string req = "zc-" + std::to_string(i);
    const bool end_aligned = i % 2 == 1;
    auto r = slot->Send(Place(*slot, req, end_aligned), MsgType::GUEST_CALL, std::chrono::seconds(60));
    if (!r) return Failed("ZERO_COPY_FAILED", r.error());
    const std::string got(slot->Response().as_string_view());
    if (got != "host:" + req) return Fail("zero-copy " + req + " answered '" + got + "'");
    const int32_t expect = static_cast<int32_t>(got.size()) * (end_aligned ? -1 : 1);
    if (slot->ResponseSize() != expect) return Fail("zero-copy response size " + std::to_string(slot->ResponseSize()));
    if (slot->index() != index || !slot->valid()) return Fail("the held guest slot changed");
  }
  slot->Release();
  if (slot->valid()) return Fail("a released slot is still valid");
  Say("OK calls=" + std::to_string(count) + " zero_copy=" + std::to_string(rounds));
  return kExitOk;
}

int GuestCallsIds(shm::DirectGuest& g, const Args& a) {
  const int threads = static_cast<int>(a.Int("threads", 4));
  const long long count = a.Int("count", 100);
  std::atomic<int> failures{0};
  std::mutex mu;
  std::string first_failure;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<uint8_t> resp;
      for (long long i = 0; i < count; ++i) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto r = g.SendGuestCall(id, MsgType::GUEST_CALL, resp, {std::chrono::seconds(60), false});
        std::string why;
        if (!r)
          why = id + ": " + r.error().ToString();
        else if (std::string(resp.begin(), resp.end()) != "host:" + id)
          why = id + " answered wrongly";
        if (!why.empty()) {
          failures.fetch_add(1);
          std::lock_guard<std::mutex> lock(mu);
          if (first_failure.empty()) first_failure = why;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  if (failures.load() != 0) return Fail(std::to_string(failures.load()) + " calls failed; first: " + first_failure);
  Say("OK calls=" + std::to_string(threads * count));
  return kExitOk;
}

void PrintResult(const shm::Result<shm::MsgType>& r, const std::vector<uint8_t>& resp) {
  if (r) {
    Say("RESULT OK " + std::to_string(static_cast<uint32_t>(*r)) + " " + std::to_string(resp.size()));
  } else {
    Say(std::string("RESULT ERR ") + shm::ToString(r.error().code()) + " " + shm::wire::ToString(r.error().remote()));
  }
}

int GuestCallOne(shm::DirectGuest& g, const Args& a) {
  if (a.Int("wait-go", 0) != 0) {
    Say("READY");
    std::string go;
    if (!ReadStdinLine(&go)) return Fail("stdin closed before GO");
  }
  const std::string req = a.Get("payload", std::string(static_cast<size_t>(a.Int("size", 8)), 'x'));
  std::vector<uint8_t> resp;
  shm::CallOptions o{std::chrono::milliseconds(a.Int("timeout-ms", 60000)), a.Int("aligned", 0) != 0};
  Say("CALLING");
  auto r = g.SendGuestCall(req, static_cast<MsgType>(a.Int("type", 0)), resp, o);
  PrintResult(r, resp);
  return kExitOk;
}

// A request the library would refuse to send: publish it on a guest slot through a second mapping of the
// segment, as a buggy or hostile guest would, and print the host's raw answer.
int GuestCallCrafted(shm::DirectGuest& g, const Args& a) {
  // This guest's own descriptor of the segment, opened anew: a second writable mapping beside the library's.
  auto seg = shm::detail::Segment::FromDescriptor(
      shm::platform::File(shm_test::OpenSegmentOf(::getpid(), a.Get("name"), O_RDWR)), true);
  if (!seg) return Failed("ATTACH_FAILED", seg.error());
  const shm::detail::SlotView s = seg->Slot(g.host_slots());  // the first guest slot
  auto& h = *s.header;
  uint32_t seq = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!shm::detail::TryClaim(h, &seq)) {
    if (std::chrono::steady_clock::now() > deadline) return Fail("the first guest slot never became free");
    std::this_thread::yield();
  }
  h.req_type.store(static_cast<uint32_t>(a.Int("type", 0)), std::memory_order_relaxed);
  h.req_size.store(static_cast<uint32_t>(static_cast<int32_t>(a.Int("size", 0))), std::memory_order_relaxed);
  uint32_t tx = 0;
  if (!shm::detail::Publish(h, seq, &tx)) return Fail("could not publish");
  // Ring the doorbell as the library does, so a sleeping host processor wakes.
  auto& bell = seg->header().doorbell;
  uint32_t old = bell.load(std::memory_order_relaxed);
  while (!bell.compare_exchange_weak(old, (old + shm::wire::kDoorbellIncrement) & ~shm::wire::kDoorbellWaiting,
                                     std::memory_order_seq_cst, std::memory_order_relaxed)) {
  }
  if (old & shm::wire::kDoorbellWaiting) shm::platform::FutexWakeAll(&bell, old);
  shm::detail::SpinPolicy spin;
  uint32_t v = 0;
  const int64_t until = shm::platform::MonotonicNs() + 60000000000LL;
  auto st = shm::detail::WaitFor(
      h.ctl, nullptr, until, spin, [](uint32_t w) { return shm::wire::CtlIs(w, shm::wire::SlotState::kResponse); },
      [](bool) { return false; }, &v);
  if (st != shm::detail::WaitStatus::kReady) return Fail("no answer to the crafted request");
  const uint32_t type = h.resp_type.load(std::memory_order_relaxed);
  const uint32_t err = h.resp_error.load(std::memory_order_relaxed);
  shm::detail::Release(h, tx);
  Say("RAW " + std::to_string(type) + " " + shm::wire::ToString(static_cast<shm::wire::WireError>(err)));
  return kExitOk;
}

// Large guest calls (--sizes a,b,...): for each size, the three kinds of large_messages.h, each checked.
int GuestCallsLarge(shm::DirectGuest& g, const Args& a) {
  const std::string sizes = a.Get("sizes");
  const shm::CallOptions o{std::chrono::milliseconds(a.Int("timeout-ms", 120000))};
  auto call = [&](const shm::Source& src, MsgType type, const shm::Sink& sink) {
    return g.GuestCall(src, type, sink, o);
  };
  size_t from = 0;
  while (from < sizes.size()) {
    size_t comma = sizes.find(',', from);
    if (comma == std::string::npos) comma = sizes.size();
    const uint64_t size = std::stoull(sizes.substr(from, comma - from));
    if (const std::string bad = CheckLargeCalls(call, size, size * 7 + 1); !bad.empty()) return Fail(bad);
    from = comma + 1;
  }
  Say("LARGE OK");
  return kExitOk;
}

// One large guest call (--size) interrupted at its chunk --at: --action close closes the guest there; --action
// wait prints "MID" and waits for a stdin line (the test kills the host meanwhile). Prints "RESULT ERR <code>"
// or "RESULT OK".
int GuestCallLargeInterrupted(shm::DirectGuest& g, const Args& a) {
  const uint64_t size = static_cast<uint64_t>(a.Int("size", 1 << 20));
  const uint64_t at = static_cast<uint64_t>(a.Int("at", 2)) * g.guest_payload_capacity();
  const std::string action = a.Get("action", "close");
  shm::Source src{size, [&](uint64_t offset, MutableBytes into) {
                    if (offset == at) {
                      if (action == "close") {
                        g.Close();
                      } else {
                        Say("MID");
                        std::string go;
                        (void)ReadStdinLine(&go);
                      }
                    }
                    FillPattern(1, offset, into);
                    return true;
                  }};
  std::vector<uint8_t> out;
  auto r = g.GuestCall(src, Type(kTypeDigest), shm::Sink::Into(out), {std::chrono::seconds(60)});
  Say(r ? std::string("RESULT OK") : std::string("RESULT ERR ") + shm::ToString(r.error().code()));
  return kExitOk;
}

int RunGuestCall(const Args& a) {
  shm::GuestConfig cfg;
  cfg.name = a.Get("name");
  cfg.connect_timeout = std::chrono::milliseconds(a.Int("connect-timeout-ms", 60000));
  ApplyTransferLimits(a, &cfg);
  shm::DirectGuest guest;
  if (auto r = guest.Connect(cfg); !r) return Failed("CONNECT_FAILED", r.error());
  Say("CONNECTED pid=" + std::to_string(::getpid()));
  const std::string scenario = a.Get("scenario", "basic");
  if (scenario == "basic") return GuestCallsBasic(guest, a);
  if (scenario == "ids") return GuestCallsIds(guest, a);
  if (scenario == "one") return GuestCallOne(guest, a);
  if (scenario == "crafted") return GuestCallCrafted(guest, a);
  if (scenario == "large") return GuestCallsLarge(guest, a);
  if (scenario == "large-interrupted") return GuestCallLargeInterrupted(guest, a);
  return kExitUsage;
}

// ---- Hosts -----------------------------------------------------------------------------------------------------

int RunHost(const Args& a) {
  // SIGTERM ends the hold; block it before any thread exists so that sigwait receives it.
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  Say("WAITING");
  if (a.Int("barrier", 0) != 0) WaitForStdinEof();
  shm::HostConfig cfg;
  cfg.name = a.Get("name");
  cfg.host_slots = static_cast<uint32_t>(a.Int("host-slots", 2));
  cfg.guest_slots = 1;
  cfg.payload_size = 4096;
  shm::DirectHost host;
  if (auto r = host.Init(cfg); !r) return Failed("INIT ERR", r.error());
  if (a.Int("serve-large", 0) != 0) {  // serve guest calls of the large-message types
    auto started = host.Start([](const Message& m, MutableBytes out) {
      bool large = false;
      Reply r = ServeLarge(m, out, &large);
      return large ? r : Reply::Failure();
    });
    if (!started) return Failed("START ERR", started.error());
  }
  Say("INIT OK " + std::to_string(::getpid()));
  int sig = 0;
  sigwait(&term, &sig);
  host.Shutdown();
  return kExitOk;
}

struct Switches {
  long long voluntary = 0;
  long long involuntary = 0;
};

// Context switches of every live thread of a process, from /proc/<pid>/task/*/status.
Switches CountSwitches(pid_t pid) {
  Switches total;
  const std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(task_dir.c_str());
  if (d == nullptr) return total;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(task_dir + "/" + e->d_name + "/status");
    std::string key;
    long long value = 0;
    while (f >> key) {
      if (key == "voluntary_ctxt_switches:" && f >> value)
        total.voluntary += value;
      else if (key == "nonvoluntary_ctxt_switches:" && f >> value)
        total.involuntary += value;
    }
  }
  ::closedir(d);
  return total;
}

int RunPingPong(const Args& a) {
  char self_buf[4096];
  const ssize_t len = ::readlink("/proc/self/exe", self_buf, sizeof self_buf - 1);
  if (len <= 0) return Fail("readlink /proc/self/exe");
  self_buf[len] = '\0';
  const char* self = self_buf;
  const long long count = a.Int("count", 100000);
  const auto size = static_cast<size_t>(a.Int("size", 64));
  shm::HostConfig cfg;
  cfg.name = a.Get("name");
  cfg.host_slots = 1;   // one guest worker: no idle workers waking up during the run
  cfg.guest_slots = 0;  // no guest-call worker
  cfg.payload_size = static_cast<uint32_t>(std::max<size_t>(size, 64));
  shm::DirectHost host;
  if (auto r = host.Init(cfg); !r) return Failed("INIT ERR", r.error());
  std::string name = cfg.name;
  shm_tools::ChildProcess guest;  // killed and reaped on an early return
  if (int rc = guest.Start({self, "guest", "--name", name}); rc != 0) {
    return Fail(std::string("start the guest: ") + std::strerror(rc));
  }
  const pid_t child = guest.pid();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!host.GuestAttached()) {
    if (std::chrono::steady_clock::now() > deadline) return Fail("the guest never attached");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // setup only, before the measured exchange
  }
  std::vector<uint8_t> req(size), resp;
  const Switches host0 = CountSwitches(::getpid()), guest0 = CountSwitches(child);
  const auto start = std::chrono::steady_clock::now();
  // On a machine too busy to give both peers a CPU the exchange crawls; give up at this bound.
  const auto give_up = start + std::chrono::seconds(a.Int("max-seconds", 120));
  long long sent = 0;
  for (long long i = 0; i < count; ++i, ++sent) {
    if ((i & 1023) == 0 && std::chrono::steady_clock::now() > give_up) break;
    std::memcpy(req.data(), &i, std::min(sizeof i, size));
    auto r = host.Send(req, MsgType::NORMAL, resp, {std::chrono::seconds(60), false});
    if (!r) return Failed("CALL_FAILED", r.error());
    if (resp != req) return Fail("message " + std::to_string(i) + " was answered wrongly");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Switches host1 = CountSwitches(::getpid()), guest1 = CountSwitches(child);
  host.Shutdown();
  guest.Wait(INT64_MAX);  // the host's shutdown ends the guest
  // During the exchange: sleeps (voluntary context switches: futex waits) and preemptions (involuntary: the
  // scheduler gave a peer's CPU to another task, which makes the other peer sleep). Many preemptions mean
  // the machine was too busy for the measurement to mean anything.
  Say(std::string(sent == count ? "PINGPONG" : "PINGPONG_GAVE_UP") + " messages=" + std::to_string(sent) +
      " seconds=" + std::to_string(secs) + " spin_budget_ns=" + std::to_string(host.spin_budget_ns()) + " sleeps=" +
      std::to_string(host1.voluntary - host0.voluntary + guest1.voluntary - guest0.voluntary) + " preemptions=" +
      std::to_string(host1.involuntary - host0.involuntary + guest1.involuntary - guest0.involuntary));
  if (shm_tools::ExitCode(guest.status()) != 0) return Fail("the guest did not exit cleanly");
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s guest|guest-call|host|pingpong --name N [flags]\n", argv[0]);
    return kExitUsage;
  }
  const std::string cmd = argv[1];
  const Args a(argc - 2, argv + 2);
  if (!a.ok() || a.Get("name").empty()) {
    std::fprintf(stderr, "%s: flags come in '--key value' pairs and --name is required\n", argv[0]);
    return kExitUsage;
  }
  try {
    if (cmd == "guest") return RunGuest(a);
    if (cmd == "guest-call") return RunGuestCall(a);
    if (cmd == "host") return RunHost(a);
    if (cmd == "pingpong") return RunPingPong(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    return kExitUsage;
  }
  return kExitUsage;
}

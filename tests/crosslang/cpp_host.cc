// SPDX-License-Identifier: Apache-2.0
// Cross-language tests: a C++ host (this process) and the Go guest (go/internal/crosspeer, a separate
// process started per test). Every payload is checksummed and every answer checked byte for byte: Go's race
// detector cannot see the other process's accesses to the segment, so the checks here must catch a race.
//
// The Go peer's behaviour by request type, and the guest-call types this host's handler treats specially,
// are listed in go/internal/crosspeer/main.go; the constants below mirror that table.
#if defined(_WIN32)
#include <windows.h>
#else
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif
#include <gtest/gtest.h>
#include <shm/shm.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../../tools/common/child_process.h"
#if !defined(_WIN32)
#include "../common/segment_access.h"
#endif
#include "shm/detail/slot.h"

namespace {

using shm::MsgType;
using shm::wire::SlotHeader;
using shm::wire::SlotState;
using shm::wire::WireError;
using namespace std::chrono_literals;

constexpr const char* kPeerPath = SHM_GO_PEER;

constexpr auto T(uint32_t v) { return static_cast<MsgType>(v); }
// Requests the Go peer treats as commands.
constexpr MsgType kCmdStats = T(1000), kCmdPanic = T(1001), kCmdRespondSize = T(1002), kCmdRespondType = T(1003),
                  kCmdBlock = T(1004), kCmdGuestCalls = T(1005), kCmdGuestErrors = T(1006), kCmdGuestTimeout = T(1007),
                  kCmdHostile = T(1008), kCmdGuestLarge = T(1009);
// Guest calls this host's handler treats specially.
constexpr uint32_t kHostFail = 2000, kHostThrow = 2001, kHostOversize = 2002, kHostReservedType = 2003,
                   kHostBlock = 2004;

constexpr uint32_t kPayload = 4096;

std::string UniqueName(const char* what) {
  static std::atomic<uint32_t> counter{0};
  return std::string("shm-xl-") + what + "-" + std::to_string(shm::platform::ProcessId()) + "-" +
         std::to_string(++counter);
}

uint64_t Fnv64(const uint8_t* p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

// n >= 8 pseudo-random bytes ending in the FNV-1a 64 of the bytes before them.
void FillChecked(uint8_t* p, size_t n, std::mt19937_64& rng) {
  for (size_t i = 0; i + 8 < n; ++i) p[i] = static_cast<uint8_t>(rng());
  const uint64_t h = Fnv64(p, n - 8);
  std::memcpy(p + n - 8, &h, 8);
}

std::vector<uint8_t> Checked(size_t n, std::mt19937_64& rng) {
  std::vector<uint8_t> v(n);
  if (n > 0) FillChecked(v.data(), n, rng);
  return v;
}

bool ChecksumOk(shm::Bytes b) {
  if (b.size() < 8) return false;
  uint64_t h;
  std::memcpy(&h, b.data() + b.size() - 8, 8);
  return h == Fnv64(b.data(), b.size() - 8);
}

bool IsComplementOf(shm::Bytes answer, shm::Bytes request) {
  if (answer.size() != request.size()) return false;
  for (size_t i = 0; i < answer.size(); ++i) {
    if (answer[i] != static_cast<uint8_t>(~request[i])) return false;
  }
  return true;
}

std::vector<uint8_t> U32(uint32_t v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

// Polls pred every millisecond until it holds or the deadline passes. Waiting on a condition, not a guess.
template <typename Pred>
bool WaitUntil(Pred pred, std::chrono::milliseconds limit = 30000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// A Go peer process. Killed and reaped if still running when destroyed (by its ChildProcess).
class Peer {
 public:
  Peer(const std::string& mode, const std::string& name) {
    if (const int err = proc_.Start({kPeerPath, mode, name}); err != 0) {
      ADD_FAILURE() << "cannot start " << kPeerPath << ": " << std::strerror(err);
    }
  }

  /// The exit status (0-255), or -1 if it did not exit in time (it is then killed) or died by a signal.
  int WaitExit(std::chrono::milliseconds limit = 30000ms) {
    if (!proc_.started()) return -1;
    const int64_t limit_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(limit).count();
    if (!proc_.Wait(shm::platform::MonotonicNs() + limit_ns)) {
      proc_.Kill();
      return -1;
    }
    const int status = proc_.status();
#if defined(_WIN32)
    return shm_tools::ExitCode(status);
#else
    return status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
#endif
  }

  void Kill() { proc_.Kill(); }

  pid_t pid() const { return proc_.started() && !proc_.reaped() ? proc_.pid() : -1; }

 private:
  shm_tools::ChildProcess proc_;
};

// Replaces a slot word the way no valid transition would, waking whoever sleeps on it.
void HostileStore(SlotHeader& h, uint32_t word) {
  if (const uint32_t old = h.ctl.exchange(word); old & shm::wire::kWaiting) shm::platform::FutexWakeAll(&h.ctl, old);
}

#if defined(_WIN32)
// A host's segment as this process's own host maps it (the Windows binding's mapping registry: the host is this
// process), for the raw protocol steps a well-behaved host never takes (hostile requests and answers) and for
// observing slot states.
class RawSegment {
 public:
  explicit RawSegment(const std::string& name) {
    const std::wstring prefix = L"Local\\shm-" + std::wstring(name.begin(), name.end()) + L"-";
    auto& m = shm::platform::internal::AllMappings();
    std::lock_guard<std::mutex> lock(m.mu);
    for (const auto& seg : m.list) {
      if (seg.prefix.rfind(prefix, 0) == 0 && seg.prefix.size() == prefix.size() + 17) {
        base_ = const_cast<uint8_t*>(seg.base);
        size_ = static_cast<size_t>(seg.size);
      }
    }
    if (base_ == nullptr) throw std::runtime_error("cannot find the segment");
    auto& h = *reinterpret_cast<shm::wire::SegmentHeader*>(base_);
    g_.host_slots = h.host_slots.load();
    g_.guest_slots = h.guest_slots.load();
    g_.host_payload = h.host_payload.load();
    g_.guest_payload = h.guest_payload.load();
  }
  RawSegment(const RawSegment&) = delete;
  RawSegment& operator=(const RawSegment&) = delete;
#else
// A second mapping of a host's segment (the memfd of process `host`, by default this process's own host), for
// the raw protocol steps a well-behaved host never takes (hostile requests and answers) and for observing slot
// states.
class RawSegment {
 public:
  explicit RawSegment(const std::string& name, pid_t host = getpid()) {
    fd_ = shm_test::OpenSegmentOf(host, name, O_RDWR);
    struct stat st {};
    if (fd_ < 0 || fstat(fd_, &st) != 0) throw std::runtime_error("cannot open the segment");
    size_ = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("cannot map the segment");
    base_ = static_cast<uint8_t*>(p);
    auto& h = *reinterpret_cast<shm::wire::SegmentHeader*>(base_);
    g_.host_slots = h.host_slots.load();
    g_.guest_slots = h.guest_slots.load();
    g_.host_payload = h.host_payload.load();
    g_.guest_payload = h.guest_payload.load();
  }
  RawSegment(const RawSegment&) = delete;
  RawSegment& operator=(const RawSegment&) = delete;
#if !defined(_WIN32)
  ~RawSegment() {
    munmap(base_, size_);
    close(fd_);
  }
#endif
#endif
  const shm::wire::Geometry& geometry() const { return g_; }
  shm::wire::SegmentHeader& header() { return *reinterpret_cast<shm::wire::SegmentHeader*>(base_); }
  SlotHeader& slot(uint32_t i) {
    return *reinterpret_cast<SlotHeader*>(base_ + shm::wire::kSegmentHeaderSize +
                                          uint64_t{shm::wire::kSlotHeaderSize} * i);
  }
  uint8_t* request(uint32_t i) { return base_ + shm::wire::RequestBufferOffset(g_, i); }
  uint8_t* response(uint32_t i) { return request(i) + shm::wire::SlotCapacity(g_, i); }
  uint32_t state(uint32_t i) { return shm::wire::CtlState(slot(i).ctl.load()); }
  /// Counter `c` of the guest's block of slot `i` (SPECIFICATION.md §5.4), as the Go guest wrote it.
  uint64_t guest_counter(uint32_t i, uint32_t c) {
    if (shm::wire::GuestBlockOffset(g_, i) + shm::wire::kCounterBlockSize > size_) return ~uint64_t{0};
    return reinterpret_cast<const shm::wire::CounterBlock*>(base_ + shm::wire::GuestBlockOffset(g_, i))->c[c].load();
  }
  /// Whether guest `pid` has attached: a guest stores its pid and counts its session once it holds the seat.
  bool attached_by(pid_t pid) {
    return header().guest_pid.load() == static_cast<uint32_t>(pid) && header().guest_session.load() != 0;
  }

 private:
#if !defined(_WIN32)
  int fd_ = -1;
#endif
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  shm::wire::Geometry g_;
};

/// A directory for the files the tests use as signals to the Go peer (never segment names); removed with
/// everything in it.
class SignalDir {
 public:
  SignalDir() {
#if defined(_WIN32)
    static std::atomic<uint32_t> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("shm-xl-" + std::to_string(shm::platform::ProcessId()) + "-" + std::to_string(++counter));
    std::filesystem::create_directory(dir_);  // throws if it exists: never another run's directory
#else
    std::string t = (std::filesystem::temp_directory_path() / "shm-xl-XXXXXX").string();
    if (mkdtemp(t.data()) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = t;
#endif
  }
  SignalDir(const SignalDir&) = delete;
  SignalDir& operator=(const SignalDir&) = delete;
  ~SignalDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string Path(const std::string& file) const { return (dir_ / file).string(); }

 private:
  std::filesystem::path dir_;
};

class CrossLang : public ::testing::Test {
 protected:
  void SetUp() override { name_ = UniqueName(::testing::UnitTest::GetInstance()->current_test_info()->name()); }

  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
    if (host_.initialized()) (void)host_.SendShutdown();
    // A guest serving normally leaves with status 0 once the host sends shutdown (its Wait returned nil).
    if (peer_) {
      EXPECT_EQ(peer_->WaitExit(), 0) << "the Go guest did not end cleanly after shutdown";
    }
    host_.Shutdown();
  }

  void InitHost(uint32_t host_slots = 4, uint32_t guest_slots = 2, bool serve_guest_calls = true) {
    shm::HostConfig c;
    c.name = name_;
    c.host_slots = host_slots;
    c.guest_slots = guest_slots;
    c.payload_size = kPayload;
    c.default_timeout = 30s;
    auto r = host_.Init(c);
    ASSERT_TRUE(r) << r.error().ToString();
    if (serve_guest_calls) {
      auto s = host_.Start([this](const shm::Message& m, shm::MutableBytes out) { return HostHandler(m, out); });
      ASSERT_TRUE(s) << s.error().ToString();
    }
  }

  void StartPeer(const std::string& mode = "serve") {
    peer_ = std::make_unique<Peer>(mode, name_);
    ASSERT_TRUE(WaitUntil([&] { return host_.GuestAttached(); })) << "the Go guest did not attach";
  }

  // The guest-call handler: checked echo, or the behaviour a special type asks for.
  shm::Reply HostHandler(const shm::Message& m, shm::MutableBytes out) {
    switch (static_cast<uint32_t>(m.type)) {
      case kHostFail: return shm::Reply::Failure();
      case kHostThrow: throw std::runtime_error("the guest asked for an exception");
      case kHostOversize: return shm::Reply{static_cast<int32_t>(out.size()) + 1, MsgType::NORMAL};
      case kHostReservedType: return shm::Reply{0, T(5)};
      case kHostBlock: {
        std::unique_lock<std::mutex> lock(mu_);
        host_blocked_ = true;
        cv_.notify_all();
        cv_.wait_for(lock, 60s, [&] { return released_; });
        ++host_late_answers_;
        cv_.notify_all();
        std::memcpy(out.data(), "LATE!", 5);
        return shm::Reply{5, MsgType::NORMAL};
      }
    }
    if (m.data.empty()) return shm::Reply{0, m.type};
    if (!ChecksumOk(m.data)) return shm::Reply::Failure();
    const size_t n = m.data.size();
    if (n > out.size()) {  // a large guest call (SPECIFICATION.md §8.5): a large answer
      std::vector<uint8_t> answer(n);
      for (size_t i = 0; i < n; ++i) answer[i] = static_cast<uint8_t>(~m.data[i]);
      return shm::Reply::Owned(std::move(answer), m.type);
    }
    const bool end = m.type == MsgType::FLATBUFFER;
    uint8_t* dst = end ? out.data() + out.size() - n : out.data();
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(~m.data[i]);
    return shm::Reply{end ? -static_cast<int32_t>(n) : static_cast<int32_t>(n), m.type};
  }

  // A command to the Go peer; its answer as text ("OK" or "FAIL: ...").
  std::string Command(MsgType cmd, shm::Bytes payload, std::chrono::nanoseconds timeout = 120s) {
    std::vector<uint8_t> out;
    auto r = host_.Send(payload, cmd, out, {timeout});
    if (!r) return "host error: " + r.error().ToString();
    return std::string(out.begin(), out.end());
  }

  std::vector<uint64_t> Stats() {
    std::vector<uint8_t> out;
    auto r = host_.Send("", kCmdStats, out);
    EXPECT_TRUE(r) << r.error().ToString();
    std::vector<uint64_t> v(3, 0);
    if (r && out.size() == 24) std::memcpy(v.data(), out.data(), 24);
    return v;
  }

  // One checked echo through the copying API; returns a failure description or "".
  std::string CheckedEcho(int64_t slot, size_t size, MsgType type, bool end_aligned, std::mt19937_64& rng) {
    auto req = Checked(size, rng);
    std::vector<uint8_t> out;
    shm::CallOptions o{30s, end_aligned};
    auto r =
        slot < 0 ? host_.Send(req, type, out, o) : host_.SendToSlot(static_cast<uint32_t>(slot), req, type, out, o);
    if (!r) return "call failed: " + r.error().ToString();
    if (*r != type) return "answer has type " + std::to_string(static_cast<uint32_t>(*r));
    if (!IsComplementOf(out, req)) return "wrong answer bytes for " + std::to_string(size) + " bytes";
    return "";
  }

  std::string name_;
  SignalDir signals_;
  shm::DirectHost host_;
  std::unique_ptr<Peer> peer_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false;
  bool host_blocked_ = false;
  int host_late_answers_ = 0;
};

TEST_F(CrossLang, EveryMessageTypeRoundTripsBothAlignments) {
  InitHost();
  StartPeer();
  std::mt19937_64 rng(1);
  const MsgType types[] = {MsgType::NORMAL, MsgType::FLATBUFFER, MsgType::GUEST_CALL, MsgType::APP_START, T(200),
                           T(999),          T(0xFFFFFFFFu)};
  const size_t sizes[] = {0, 8, 9, 31, 32, 33, 63, 64, 65, kPayload - 1, kPayload};  // 32: the inline limit
  for (MsgType t : types) {
    for (size_t n : sizes) {
      for (bool end : {false, true}) {
        EXPECT_EQ(CheckedEcho(-1, n, t, end, rng), "")
            << "type " << static_cast<uint32_t>(t) << ", " << n << " bytes, end-aligned " << end;
      }
    }
  }
  // Zero copy: the answer's size keeps its sign (FLATBUFFER answers come back end-aligned).
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot) << slot.error().ToString();
  auto buf = slot->RequestBuffer();
  for (int i = 0; i < 200; ++i) {
    const size_t n = 8 + rng() % (kPayload - 8);
    FillChecked(buf.data() + buf.size() - n, n, rng);
    std::vector<uint8_t> req(buf.data() + buf.size() - n, buf.data() + buf.size());
    auto r = slot->SendFlatBuffer(static_cast<int32_t>(n));
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(slot->ResponseSize(), -static_cast<int32_t>(n));
    EXPECT_EQ(slot->ResponseType(), MsgType::FLATBUFFER);
    EXPECT_TRUE(IsComplementOf(slot->Response(), req));
    FillChecked(buf.data(), n, rng);
    req.assign(buf.data(), buf.data() + n);
    r = slot->Send(static_cast<int32_t>(n), T(300));
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(slot->ResponseSize(), static_cast<int32_t>(n));
    EXPECT_TRUE(IsComplementOf(slot->Response(), req));
  }
}

// Sizes of large messages (SPECIFICATION.md §8.5) both ways: one byte past a slot to 256 MiB (the largest only
// in an optimised build without sanitizers on Linux, where it takes a second or two, not minutes).
std::vector<size_t> LargeSizes() {
  std::vector<size_t> v = {kPayload + 1, 2 * kPayload, 7 * kPayload - 1, (1u << 20) + 3, 16u << 20};
#if defined(NDEBUG) && !defined(_WIN32) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  v.push_back(256u << 20);
#endif
  return v;
}

TEST_F(CrossLang, LargeMessagesRoundTripWithTheGoGuest) {
  InitHost(2, 1);
  StartPeer();
  std::mt19937_64 rng(12);
  for (size_t n : LargeSizes()) {
    EXPECT_EQ(CheckedEcho(-1, n, MsgType::NORMAL, false, rng), "") << n << " bytes";
  }
  // Through Call: the request from a Source, the answer into the caller's own buffer.
  const auto req = Checked(3 * kPayload + 5, rng);
  std::vector<uint8_t> mine(req.size());
  auto r = host_.Call(shm::Source::Of(req), T(4000), shm::Sink::InBuffer(shm::MutableBytes(mine.data(), mine.size())),
                      {30s});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->type, T(4000));
  EXPECT_EQ(r->size, req.size());
  EXPECT_TRUE(IsComplementOf(mine, req));
  // A small call after them all still works.
  EXPECT_EQ(CheckedEcho(-1, 20, MsgType::NORMAL, false, rng), "");
}

TEST_F(CrossLang, GoGuestMakesLargeGuestCalls) {
  InitHost(1, 2);
  StartPeer();
  for (size_t n : LargeSizes()) {
    std::vector<uint8_t> p(16);
    const uint64_t size = n, seed = n * 3 + 1;
    std::memcpy(p.data(), &size, 8);
    std::memcpy(p.data() + 8, &seed, 8);
    EXPECT_EQ(Command(kCmdGuestLarge, p), "OK") << n << " bytes";
  }
}

TEST_F(CrossLang, HeartbeatIsAnsweredByTheGoRuntimeNotTheHandler) {
  InitHost();
  StartPeer();
  const uint64_t calls_before = Stats()[0];
  for (int i = 0; i < 100; ++i) {
    std::vector<uint8_t> out{1, 2, 3};
    auto r = host_.SendToSlot(static_cast<uint32_t>(i % 4), "", MsgType::HEARTBEAT_REQ, out);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(*r, MsgType::HEARTBEAT_RESP);
    EXPECT_TRUE(out.empty());
  }
  auto slot = host_.GetZeroCopySlot();
  ASSERT_TRUE(slot);
  ASSERT_TRUE(slot->Send(0, MsgType::HEARTBEAT_REQ));
  EXPECT_EQ(slot->ResponseType(), MsgType::HEARTBEAT_RESP);
  EXPECT_EQ(slot->ResponseSize(), 0);
  slot->Release();
  const auto after = Stats();
  EXPECT_EQ(after[0], calls_before + 1) << "only the stats call itself reached the handler";
  EXPECT_EQ(after[1], 0u) << "the handler saw a heartbeat";
}

TEST_F(CrossLang, GoHandlerFailuresAreRemoteErrorsAndWorkersGoOn) {
  InitHost();
  StartPeer();
  std::mt19937_64 rng(2);
  auto expect_remote = [&](MsgType cmd, shm::Bytes payload, WireError code, const std::string& what) {
    std::vector<uint8_t> out{9};
    auto r = host_.Send(payload, cmd, out);
    ASSERT_FALSE(r) << what << ": succeeded with " << out.size() << " bytes";
    EXPECT_EQ(r.error().code(), shm::ErrorCode::kRemote) << what << ": " << r.error().ToString();
    EXPECT_EQ(r.error().remote(), code) << what << ": " << r.error().ToString();
  };
  // A panic on every slot: each worker answers HandlerFailed and goes on serving.
  for (uint32_t s = 0; s < 4; ++s) {
    std::vector<uint8_t> out;
    auto r = host_.SendToSlot(s, "", kCmdPanic, out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().remote(), WireError::kHandlerFailed) << r.error().ToString();
    EXPECT_EQ(CheckedEcho(s, 100, MsgType::NORMAL, false, rng), "") << "slot " << s << " after a panic";
  }
  const int32_t cap = static_cast<int32_t>(host_.payload_capacity());
  for (int32_t size : {cap + 1, -cap - 1, INT32_MIN, INT32_MAX}) {
    auto p = U32(static_cast<uint32_t>(size));
    expect_remote(kCmdRespondSize, p, WireError::kResponseTooLarge, "response size " + std::to_string(size));
  }
  for (int32_t size : {cap, -cap}) {
    std::vector<uint8_t> out;
    auto p = U32(static_cast<uint32_t>(size));
    auto r = host_.Send(p, kCmdRespondSize, out);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(out.size(), static_cast<size_t>(cap));
  }
  expect_remote(kCmdRespondType, U32(127), WireError::kHandlerFailed, "handler answers SYSTEM_ERROR");
  for (uint32_t t : {1u, 2u, 3u, 5u, 50u, 126u}) {
    expect_remote(kCmdRespondType, U32(t), WireError::kReservedType, "handler answers type " + std::to_string(t));
  }
  for (uint32_t t : {0u, 10u, 11u, 128u, 5000u}) {
    std::vector<uint8_t> out;
    auto r = host_.Send(U32(t), kCmdRespondType, out);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(*r, T(t));
  }
  EXPECT_EQ(CheckedEcho(-1, kPayload, MsgType::NORMAL, true, rng), "");
}

TEST_F(CrossLang, HostileRequestsAreRefusedByTheGoServer) {
  InitHost();
  StartPeer();
  RawSegment raw(name_);
  const int32_t cap = static_cast<int32_t>(raw.geometry().host_payload);
  struct Case {
    int32_t size;
    uint32_t type;
    WireError want;
  };
  const Case cases[] = {
      {cap + 1, 0, WireError::kRequestTooLarge},
      {-cap - 1, 0, WireError::kRequestTooLarge},
      {INT32_MIN, 0, WireError::kRequestTooLarge},
      {INT32_MAX, 10, WireError::kRequestTooLarge},
      {cap + 1, 1, WireError::kRequestTooLarge},
      {0, 2, WireError::kReservedType},
      {0, 3, WireError::kReservedType},
      {0, 127, WireError::kReservedType},
      {4, 50, WireError::kReservedType},
      {-4, 126, WireError::kReservedType},
  };
  SlotHeader& h = raw.slot(0);
  for (const Case& c : cases) {
    uint32_t seq = 0, tx = 0;
    ASSERT_TRUE(shm::detail::TryClaim(h, &seq));
    h.req_type.store(c.type);
    h.req_size.store(static_cast<uint32_t>(c.size));
    ASSERT_TRUE(shm::detail::Publish(h, seq, &tx));
    ASSERT_TRUE(WaitUntil([&] {
      const uint32_t w = h.ctl.load();
      return shm::wire::CtlIs(w, SlotState::kResponse) && shm::wire::CtlSeq(w) == tx;
    })) << "no answer to size "
        << c.size << " type " << c.type;
    EXPECT_EQ(h.resp_type.load(), static_cast<uint32_t>(MsgType::SYSTEM_ERROR)) << c.size << "/" << c.type;
    EXPECT_EQ(h.resp_error.load(), static_cast<uint32_t>(c.want)) << c.size << "/" << c.type;
    EXPECT_EQ(h.resp_size.load(), 0u);
    shm::detail::Release(h, tx);
  }
  std::mt19937_64 rng(3);
  EXPECT_EQ(CheckedEcho(0, 500, MsgType::NORMAL, false, rng), "");
  EXPECT_EQ(Stats()[0], 2u) << "no hostile request reached the handler";
}

// The Go guest keeps the counters of §5.4 in its own blocks of the memfd, where the host (and shm-inspect)
// read them; the C++ host counts the same calls in its blocks.
TEST_F(CrossLang, GoGuestCountsWhatItServesAndCallsInTheSegment) {
  InitHost(2, 1);
  StartPeer();
  std::mt19937_64 rng(5);
  for (uint32_t s = 0; s < 2; ++s) {
    EXPECT_EQ(CheckedEcho(s, 100, MsgType::NORMAL, false, rng), "");
    std::vector<uint8_t> out;
    auto r = host_.SendToSlot(s, "", kCmdPanic, out);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().remote(), WireError::kHandlerFailed) << r.error().ToString();
  }
  std::vector<uint8_t> p(16, 0);
  const uint32_t n = 10, goroutines = 1;
  const uint64_t seed = 3;
  std::memcpy(p.data(), &n, 4);
  std::memcpy(p.data() + 4, &goroutines, 4);
  std::memcpy(p.data() + 8, &seed, 8);
  ASSERT_EQ(Command(kCmdGuestCalls, p), "OK");
  namespace w = shm::wire;
  RawSegment seg(name_);
  uint64_t served = 0, failed = 0, bytes_in = 0;
  for (uint32_t s = 0; s < 2; ++s) {
    served += seg.guest_counter(s, w::kServed);
    failed += seg.guest_counter(s, w::kAnsweredBase + static_cast<uint32_t>(WireError::kHandlerFailed));
    bytes_in += seg.guest_counter(s, w::kServeBytesIn);
  }
  // The two echoes, the two panics and the guest-calls command itself (its answer is counted before it is
  // published, so it is in by the time the host has it).
  EXPECT_EQ(served, 5u);
  EXPECT_EQ(failed, 2u);
  EXPECT_EQ(bytes_in, 200u + 16u);
  // 10 guest calls, of which i % 4 = 2 or 3 (i = 2, 3, 6, 7) send twice on a held zero-copy slot: 14.
  EXPECT_EQ(seg.guest_counter(2, w::kCalls), 14u) << "the Go guest's guest calls";
  const shm::StatsSnapshot st = host_.Stats();
  EXPECT_EQ(st.served.served, 14u) << "the host served them";
  EXPECT_EQ(st.served.bytes_in, seg.guest_counter(2, w::kCallBytesOut));
  EXPECT_EQ(st.calls.remote[static_cast<int>(WireError::kHandlerFailed)], 2u);
  EXPECT_EQ(st.calls.calls, 3u) << "two echoes and the command";
}

TEST_F(CrossLang, GuestCallsRoundTripWithChecksums) {
  InitHost();
  StartPeer();
  std::vector<uint8_t> p(16, 0);
  const uint32_t n = 3000, goroutines = 2;
  const uint64_t seed = 11;
  std::memcpy(p.data(), &n, 4);
  std::memcpy(p.data() + 4, &goroutines, 4);
  std::memcpy(p.data() + 8, &seed, 8);
  EXPECT_EQ(Command(kCmdGuestCalls, p), "OK");
}

TEST_F(CrossLang, GuestCallErrorsAreTyped) {
  InitHost();
  StartPeer();
  EXPECT_EQ(Command(kCmdGuestErrors, ""), "OK");
}

TEST_F(CrossLang, GuestCallTimeoutDiscardsTheHostsLateAnswer) {
  InitHost();
  StartPeer();
  // The Go guest's call times out while this host's handler is blocked on it.
  EXPECT_EQ(Command(kCmdGuestTimeout, ""), "OK");
  {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(host_blocked_);
    released_ = true;
    cv_.notify_all();
    EXPECT_TRUE(cv_.wait_for(lock, 30s, [&] { return host_late_answers_ == 1; }));
  }
  // The late answer was discarded (ABANDONED -> FREE), never delivered: every guest slot comes back FREE,
  // and calls on them get their own answers.
  RawSegment raw(name_);
  const auto& g = raw.geometry();
  for (uint32_t i = g.host_slots; i < g.host_slots + g.guest_slots; ++i) {
    EXPECT_TRUE(WaitUntil([&] { return raw.state(i) == static_cast<uint32_t>(SlotState::kFree); })) << "slot " << i;
  }
  std::vector<uint8_t> p(16, 0);
  const uint32_t n = 200, goroutines = 1;
  std::memcpy(p.data(), &n, 4);
  std::memcpy(p.data() + 4, &goroutines, 4);
  EXPECT_EQ(Command(kCmdGuestCalls, p), "OK");
}

TEST_F(CrossLang, HostCallTimeoutDiscardsTheGoHandlersLateAnswer) {
  InitHost();
  StartPeer();
  RawSegment raw(name_);
  std::mt19937_64 rng(4);
  int abandoned = 0;
  // A call withdrawn before the Go worker took it does not exercise the scenario: try again.
  for (int attempt = 0; attempt < 20 && abandoned < 3; ++attempt) {
    const std::string release = signals_.Path("release" + std::to_string(attempt));
    std::vector<uint8_t> out;
    auto r = host_.SendToSlot(1, release, kCmdBlock, out, {300ms});
    ASSERT_FALSE(r) << "the blocked handler answered: " << std::string(out.begin(), out.end());
    ASSERT_EQ(r.error().code(), shm::ErrorCode::kTimeout) << r.error().ToString();
    const bool was_abandoned = raw.state(1) == static_cast<uint32_t>(SlotState::kAbandoned);
    abandoned += was_abandoned;
    // Let the handler answer late, then call the same slot: the answer must be this call's own.
    ASSERT_TRUE(std::ofstream(release).good());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(CheckedEcho(1, 64 + static_cast<size_t>(i), MsgType::NORMAL, false, rng), "");
    std::filesystem::remove(release);
  }
  EXPECT_EQ(abandoned, 3) << "the Go worker never took a request within 300 ms";
  EXPECT_EQ(Stats()[2], static_cast<uint64_t>(abandoned)) << "every blocked handler answered (late)";
}

TEST_F(CrossLang, StressBothDirectionsWithChecksums) {
  InitHost();
  StartPeer();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(100 + static_cast<uint64_t>(t));
      for (int i = 0; i < 3000 && failures.load() < 5; ++i) {
        const size_t n = (i % 7 == 0) ? 0 : 8 + rng() % (kPayload - 8);
        const MsgType type = (i % 3 == 0) ? MsgType::FLATBUFFER : T(128 + static_cast<uint32_t>(i % 50));
        const std::string err = CheckedEcho(-1, n, type, i % 2 == 0, rng);
        if (!err.empty()) {
          ADD_FAILURE() << "thread " << t << " call " << i << ": " << err;
          ++failures;
        }
      }
    });
  }
  std::vector<uint8_t> p(16, 0);
  const uint32_t n = 6000, goroutines = 2;
  const uint64_t seed = 99;
  std::memcpy(p.data(), &n, 4);
  std::memcpy(p.data() + 4, &goroutines, 4);
  std::memcpy(p.data() + 8, &seed, 8);
  EXPECT_EQ(Command(kCmdGuestCalls, p), "OK");
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(CrossLang, HostileAnswersToGuestCallsAreRejectedByTheGoCaller) {
  InitHost(4, 2, /*serve_guest_calls=*/false);  // this test answers guest calls itself, by hand
  StartPeer();
  RawSegment raw(name_);
  const auto& g = raw.geometry();
  const int32_t cap = static_cast<int32_t>(g.guest_payload);
  for (uint32_t k = 0; k <= 9; ++k) {
    std::thread server([&] {
      // Take the guest call the Go peer is about to make, and answer it with hostile answer k.
      uint32_t index = 0, seq = 0;
      const bool taken = WaitUntil([&] {
        for (uint32_t i = g.host_slots; i < g.host_slots + g.guest_slots; ++i) {
          if (shm::detail::TryTake(raw.slot(i), &seq)) {
            index = i;
            return true;
          }
        }
        return false;
      });
      if (!taken) {
        ADD_FAILURE() << "case " << k << ": no guest call arrived";
        return;
      }
      SlotHeader& h = raw.slot(index);
      uint32_t type = 0, size = 0, error = 0;
      switch (k) {
        case 0: size = static_cast<uint32_t>(cap + 1); break;
        case 1: size = static_cast<uint32_t>(INT32_MIN); break;
        case 2: size = static_cast<uint32_t>(-cap - 1); break;
        case 3: type = 5; break;
        case 4: type = static_cast<uint32_t>(MsgType::HEARTBEAT_REQ); break;
        case 5: type = 127, error = 99; break;
        case 6: type = 127, error = static_cast<uint32_t>(WireError::kPeerRestarted); break;
        case 9:
          std::memset(raw.response(index), 0xA5, static_cast<size_t>(cap));
          size = static_cast<uint32_t>(-cap);
          break;
        default: break;
      }
      h.resp_type.store(type);
      h.resp_size.store(size);
      h.resp_error.store(error);
      if (k == 7) {  // answer under another transaction number
        HostileStore(h, shm::wire::MakeCtl(SlotState::kResponse, shm::wire::NextSeq(seq)));
      } else if (k == 8) {  // a state that does not exist
        HostileStore(h, 9u | (seq << shm::wire::kSeqShift));
      } else {
        shm::detail::Complete(h, seq);
      }
    });
    std::vector<uint8_t> out;
    auto r = host_.Send(U32(k), kCmdHostile, out);
    server.join();
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(std::string(out.begin(), out.end()), "OK") << "hostile case " << k;
    // Cases 7 and 8 leave the slot in a state no caller owns; put it back as a host would find it.
    for (uint32_t i = g.host_slots; i < g.host_slots + g.guest_slots; ++i) {
      const uint32_t w = raw.slot(i).ctl.load();
      if (shm::wire::CtlState(w) != static_cast<uint32_t>(SlotState::kFree)) {
        raw.slot(i).ctl.store(shm::wire::MakeCtl(SlotState::kFree, shm::wire::CtlSeq(w)));
      }
    }
  }
}

TEST_F(CrossLang, ShutdownEndsTheGoGuest) {
  InitHost();
  StartPeer();
  std::mt19937_64 rng(5);
  EXPECT_EQ(CheckedEcho(-1, 100, MsgType::NORMAL, false, rng), "");
  ASSERT_TRUE(host_.SendShutdown());
  EXPECT_EQ(peer_->WaitExit(), 0) << "Wait() did not return nil after shutdown";
  peer_.reset();
}

TEST_F(CrossLang, ShutdownEndsAGuestCallNobodyServes) {
  InitHost(2, 2, /*serve_guest_calls=*/false);
  StartPeer("shutdown-during-call");
  RawSegment raw(name_);
  const auto& g = raw.geometry();
  ASSERT_TRUE(WaitUntil([&] {
    for (uint32_t i = g.host_slots; i < g.host_slots + g.guest_slots; ++i) {
      if (raw.state(i) == static_cast<uint32_t>(SlotState::kRequest)) return true;
    }
    return false;
  })) << "the Go guest's call never arrived";
  ASSERT_TRUE(host_.SendShutdown());
  EXPECT_EQ(peer_->WaitExit(), 0) << "the pending guest call did not end with ErrShuttingDown";
  peer_.reset();
}

TEST_F(CrossLang, SecondGoGuestIsRefused) {
  InitHost();
  StartPeer();
  Peer second("expect-already-connected", name_);
  EXPECT_EQ(second.WaitExit(), 0) << "a second guest attached or failed differently";
  std::mt19937_64 rng(6);
  EXPECT_EQ(CheckedEcho(-1, 100, MsgType::NORMAL, false, rng), "") << "the first guest still serves";
}

#if !defined(_WIN32)  // a plain fork; on Windows the host's death is tested in tests/windows
TEST_F(CrossLang, GoGuestSeesTheHostDie) {
  // The host is a child process that dies without shutting down: the kernel closes its sockets. A plain fork,
  // not shm_tools::SpawnProcess: the child runs this test's own host code and ends with _exit, skipping
  // Shutdown; there is no C++ host program to exec.
  int ready[2], die[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);  // close-on-exec: the Go guest must not hold the pipes open
  ASSERT_EQ(pipe2(die, O_CLOEXEC), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    close(die[1]);  // so that the parent closing its end is an end of file here
    shm::HostConfig c;
    c.name = name_;
    shm::DirectHost host;
    char b = host.Init(c) ? 'y' : 'n';
    if (write(ready[1], &b, 1) != 1) _exit(3);
    if (read(die[0], &b, 1) < 0) _exit(4);
    _exit(0);  // no Shutdown: as if it crashed
  }
  close(ready[1]);
  close(die[0]);
  char b = 0;
  ASSERT_EQ(read(ready[0], &b, 1), 1);
  ASSERT_EQ(b, 'y');
  Peer peer("expect-host-gone", name_);
  {
    RawSegment raw(name_, child);
    EXPECT_TRUE(WaitUntil([&] { return raw.attached_by(peer.pid()); }));
  }
  close(die[1]);
  const bool exited = shm_tools::WaitExit(child, shm::platform::MonotonicNs() + 30'000'000'000);
  if (!exited) shm_tools::KillAndReap(child);
  ASSERT_TRUE(exited) << "the host child did not exit after its pipe closed";
  EXPECT_EQ(peer.WaitExit(), 0) << "the Go guest did not report ErrHostGone";
  close(ready[0]);
}

#endif

#if defined(_WIN32) && defined(SHM_WIN_PEER)
// The host is another process (shm_win_peer), killed with TerminateProcess once the Go guest has attached: the
// Go guest's Wait and a guest call must both end with ErrHostGone.
TEST_F(CrossLang, GoGuestSeesTheHostDie) {
  shm_tools::ChildProcess host;
  shm_tools::SpawnOptions o;
  o.pipe_stdin = true;
  o.pipe_stdout = true;
  ASSERT_EQ(host.Start({SHM_WIN_PEER, "host", name_}, o), 0);
  std::string buffer;
  auto line = shm_tools::ReadLine(host.stdout_handle(), &buffer, shm::platform::DeadlineAfter(60'000'000'000));
  ASSERT_TRUE(line && line->rfind("INIT OK", 0) == 0) << (line ? *line : std::string("no line"));
  // Killed only once the guest has mapped the segment (its first guest call), not when the host has only
  // handed it the segment's name: a host that dies in between leaves nothing to map.
  Peer peer("call-then-expect-host-gone", name_);
  do {
    line = shm_tools::ReadLine(host.stdout_handle(), &buffer, shm::platform::DeadlineAfter(60'000'000'000));
  } while (line && *line != "GUEST CALLED");
  ASSERT_TRUE(line) << "the host never saw the guest's first call";
  const int64_t killed = shm::platform::MonotonicNs();
  host.Kill();
  EXPECT_EQ(peer.WaitExit(), 0) << "the Go guest did not see its host die";
  std::printf("the Go guest saw its host die and exited %.1f ms after TerminateProcess\n",
              static_cast<double>(shm::platform::MonotonicNs() - killed) / 1e6);
}
#endif

TEST_F(CrossLang, RestartedGoGuestAnswersForItsDeadPredecessor) {
  InitHost();
  StartPeer();
  RawSegment raw(name_);
  const std::string never = signals_.Path("never");
  shm::Error outcome(shm::ErrorCode::kInvalidArgs, "not set");
  bool succeeded = false;
  std::thread caller([&] {
    std::vector<uint8_t> out;
    auto r = host_.SendToSlot(0, never, kCmdBlock, out, {60s});
    if (r)
      succeeded = true;
    else
      outcome = r.error();
  });
  ASSERT_TRUE(WaitUntil([&] { return raw.state(0) == static_cast<uint32_t>(SlotState::kServing); }));
  peer_->Kill();  // dies while serving slot 0
  peer_ = std::make_unique<Peer>("serve", name_);
  caller.join();
  ASSERT_FALSE(succeeded);
  // Either the host noticed the death first (PeerDead), or the new guest answered for the dead one.
  const bool restarted = outcome.code() == shm::ErrorCode::kRemote && outcome.remote() == WireError::kPeerRestarted;
  EXPECT_TRUE(restarted || outcome.code() == shm::ErrorCode::kPeerDead) << outcome.ToString();
  ASSERT_TRUE(WaitUntil([&] { return host_.GuestAttached(); }));
  std::mt19937_64 rng(7);
  EXPECT_EQ(CheckedEcho(0, 100, MsgType::NORMAL, false, rng), "") << "slot 0 with the new guest";
}

}  // namespace

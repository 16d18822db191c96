// The guest process: Connect (retries until the host appears, times out, refuses broken segments with
// distinct errors and no crash, one guest at a time, the next once the first leaves) and its workers (one per host slot, heartbeats answered
// by the runtime, a throwing handler fails only its call).
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstddef>
#include <algorithm>
#include <cstring>
#include <functional>
#include <ostream>
#include <thread>

#include "shm/platform/platform.h"
#include "test_support.h"

namespace shm_test {
namespace {

using shm::ErrorCode;
using shm::MsgType;

// Counts opens of one file (inotify IN_OPEN): each Connect attempt of a guest opens the segment file once.
class OpenCounter {
 public:
  explicit OpenCounter(const std::string& path) : fd_(::inotify_init1(IN_CLOEXEC)) {
    ok_ = fd_ >= 0 && ::inotify_add_watch(fd_, path.c_str(), IN_OPEN) >= 0;
  }
  OpenCounter(const OpenCounter&) = delete;
  OpenCounter& operator=(const OpenCounter&) = delete;
  ~OpenCounter() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }
  /// Wait until the file has been opened `n` times since construction; false at the deadline.
  bool WaitForOpens(int n, Clock::duration timeout) {
    const auto deadline = Clock::now() + timeout;
    while (opens_ < n && Clock::now() < deadline) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 1000) <= 0) continue;
      alignas(inotify_event) char buf[4096];
      const ssize_t got = ::read(fd_, buf, sizeof buf);
      for (ssize_t off = 0; off < got;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
        if (ev->mask & IN_OPEN) ++opens_;
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
    }
    return opens_ >= n;
  }

 private:
  int fd_;
  bool ok_ = false;
  int opens_ = 0;
};

TEST(Connect, RetriesUntilTheHostAppears) {
  SegmentName name("latehost");
  // An empty file and no host lock: the guest opens it, finds no live host, and must try again later.
  const int fd = ::open(name.path().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ::close(fd);
  OpenCounter opens(name.path());
  ASSERT_TRUE(opens.ok()) << std::strerror(errno);

  Process guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "60000"});
  ASSERT_TRUE(guest.started()) << guest.error();
  // Two opens by the guest: it tried, found no host, and tried again.
  ASSERT_TRUE(opens.WaitForOpens(2, kLong)) << "the guest did not retry; its output:\n" << guest.transcript();
  EXPECT_FALSE(guest.Exited()) << "the guest gave up before its connect timeout";

  shm::DirectHost host;
  auto r = host.Init(MakeHostConfig(name.str()));
  ASSERT_TRUE(r) << Describe(r);
  ASSERT_TRUE(GetLine(guest, "SERVING"));
  std::vector<uint8_t> out;
  auto s = host.Send("found you", MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(s) << Describe(s);
  EXPECT_EQ(Str(out), "found you");
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(guest, kExitOk));
}

TEST(Connect, TimesOutWithNotFoundWhenNoHostAppears) {
  SegmentName name("nohost");
  Process guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "300"});
  ASSERT_TRUE(guest.started()) << guest.error();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind("CONNECT_FAILED NotFound", 0), 0u) << line;
  EXPECT_TRUE(ExitsWith(guest, ExitCodeFor(ErrorCode::kNotFound)));
}

TEST(Connect, SecondGuestIsRefusedWhileTheFirstStays) {
  SegmentName name("twoguests");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str())));
  Process first = SpawnPeer({"guest", "--name", name.str()});
  ASSERT_TRUE(first.started()) << first.error();
  ASSERT_TRUE(GetLine(first, "SERVING"));
  Process second = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "1000"});
  ASSERT_TRUE(second.started()) << second.error();
  std::string line;
  ASSERT_TRUE(GetLine(second, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind("CONNECT_FAILED GuestAlreadyConnected", 0), 0u) << line;
  EXPECT_NE(line.find("pid " + std::to_string(first.pid())), std::string::npos) << line;
  EXPECT_TRUE(ExitsWith(second, ExitCodeFor(ErrorCode::kGuestAlreadyConnected)));
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(first, kExitOk));
}

// A guest that finds another attached keeps trying until its deadline: it attaches once the first leaves.
TEST(Connect, SecondGuestAttachesOnceTheFirstLeaves) {
  SegmentName name("nextguest");
  shm::DirectHost host;
  ASSERT_TRUE(host.Init(MakeHostConfig(name.str())));
  Process first = SpawnPeer({"guest", "--name", name.str(), "--mode", "attach-only"});
  ASSERT_TRUE(first.started()) << first.error();
  ASSERT_TRUE(GetLine(first, "CONNECTED"));
  OpenCounter opens(name.path());
  ASSERT_TRUE(opens.ok()) << std::strerror(errno);
  Process second = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "60000"});
  ASSERT_TRUE(second.started()) << second.error();
  // Two attempts while the first guest stays: the second was refused once and is trying again.
  ASSERT_TRUE(opens.WaitForOpens(2, kLong)) << "the second guest did not retry; its output:\n"
                                            << second.transcript();
  first.CloseStdin();  // the first guest closes and exits
  ASSERT_TRUE(ExitsWith(first, kExitOk));
  ASSERT_TRUE(GetLine(second, "SERVING"));
  std::vector<uint8_t> out;
  auto r = host.Send("second", MsgType::NORMAL, out, {kLong, false});
  ASSERT_TRUE(r) << Describe(r);
  EXPECT_EQ(Str(out), "second");
  ASSERT_TRUE(host.SendShutdown());
  EXPECT_TRUE(ExitsWith(second, kExitOk));
}

// ---- Broken segments -------------------------------------------------------------------------------------------
// This process plays a live host with a broken segment: it writes the file itself and holds the host lock.

struct CraftedFile {
  std::vector<uint8_t> header = std::vector<uint8_t>(shm::wire::kSegmentHeaderSize, 0);
  uint64_t file_size = 0;
  template <typename T>
  void Set(size_t offset, T v) {
    std::memcpy(header.data() + offset, &v, sizeof v);
  }
};

struct BrokenCase {
  const char* label;
  ErrorCode expected;
  std::function<void(CraftedFile&)> mutate;
};

std::ostream& operator<<(std::ostream& os, const BrokenCase& c) { return os << c.label; }

CraftedFile ValidFile() {
  using H = shm::wire::SegmentHeader;
  shm::wire::Geometry g;
  g.host_slots = 2;
  g.guest_slots = 1;
  g.host_payload = 4096;
  g.guest_payload = 4096;
  CraftedFile f;
  f.Set<uint64_t>(offsetof(H, magic), shm::wire::kMagic);
  f.Set<uint32_t>(offsetof(H, version), shm::wire::kVersion);
  f.Set<uint32_t>(offsetof(H, header_size), shm::wire::kSegmentHeaderSize);
  f.Set<uint32_t>(offsetof(H, slot_header_size), shm::wire::kSlotHeaderSize);
  f.Set<uint32_t>(offsetof(H, host_slots), g.host_slots);
  f.Set<uint32_t>(offsetof(H, guest_slots), g.guest_slots);
  f.Set<uint32_t>(offsetof(H, host_payload), g.host_payload);
  f.Set<uint32_t>(offsetof(H, guest_payload), g.guest_payload);
  f.Set<uint64_t>(offsetof(H, total_size), shm::wire::SegmentSize(g));
  f.file_size = shm::wire::SegmentSize(g);
  return f;
}

// A header that agrees with itself (total_size matches its geometry) in a file of `file_size` bytes.
void SetGeometry(CraftedFile& f, uint32_t host_slots, uint32_t payload, uint64_t file_size) {
  using H = shm::wire::SegmentHeader;
  shm::wire::Geometry g;
  g.host_slots = host_slots;
  g.guest_slots = 0;
  g.host_payload = payload;
  f.Set<uint32_t>(offsetof(H, host_slots), g.host_slots);
  f.Set<uint32_t>(offsetof(H, guest_slots), 0);
  f.Set<uint32_t>(offsetof(H, host_payload), g.host_payload);
  f.Set<uint32_t>(offsetof(H, guest_payload), 0);
  f.Set<uint64_t>(offsetof(H, total_size), shm::wire::SegmentSize(g));
  f.file_size = file_size;
}

class BrokenSegment : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenSegment, GuestGetsItsOwnErrorAndDoesNotCrash) {
  SegmentName name("broken");
  CraftedFile f = ValidFile();
  GetParam().mutate(f);
  shm::platform::File file(::open(name.path().c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid()) << std::strerror(errno);
  ASSERT_EQ(::ftruncate(file.fd(), static_cast<off_t>(f.file_size)), 0) << std::strerror(errno);
  const size_t n = std::min<size_t>(f.header.size(), f.file_size);
  ASSERT_EQ(::pwrite(file.fd(), f.header.data(), n, 0), static_cast<ssize_t>(n));
  auto locked = shm::platform::TryLockByte(file, shm::platform::kHostLockByte);
  ASSERT_TRUE(locked && *locked) << "could not take the host lock of the crafted file";

  Process guest = SpawnPeer({"guest", "--name", name.str(), "--connect-timeout-ms", "30000"});
  ASSERT_TRUE(guest.started()) << guest.error();
  std::string line;
  ASSERT_TRUE(GetLine(guest, "CONNECT_FAILED", &line));
  EXPECT_EQ(line.rfind(std::string("CONNECT_FAILED ") + shm::ToString(GetParam().expected) + " ", 0), 0u) << line;
  EXPECT_TRUE(ExitsWith(guest, ExitCodeFor(GetParam().expected)));  // an exit code, not a signal (no SIGBUS)
}

using H = shm::wire::SegmentHeader;
INSTANTIATE_TEST_SUITE_P(
    Connect, BrokenSegment,
    ::testing::Values(
        BrokenCase{"BadMagic", ErrorCode::kBadMagic,
                   [](CraftedFile& f) { f.Set<uint64_t>(offsetof(H, magic), 0x0123456789abcdefull); }},
        BrokenCase{"NewerVersion", ErrorCode::kVersionMismatch,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, version), shm::wire::kVersion + 1); }},
        BrokenCase{"ZeroHostSlots", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_slots), 0); }},
        BrokenCase{"TooManySlots", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_slots), shm::wire::kMaxSlots + 1); }},
        BrokenCase{"UnalignedPayload", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_payload), 100); }},
        BrokenCase{"HugePayload", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, host_payload), 0xFFFFFFC0u); }},
        BrokenCase{"WrongTotalSize", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) {
                     uint64_t total = 0;
                     std::memcpy(&total, f.header.data() + offsetof(H, total_size), sizeof total);
                     f.Set<uint64_t>(offsetof(H, total_size), total + 4096);
                   }},
        BrokenCase{"UnknownHeaderSize", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, header_size), 128); }},
        BrokenCase{"UnknownFlags", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) { f.Set<uint32_t>(offsetof(H, flags), 1); }},
        BrokenCase{"FileShorterThanClaimed", ErrorCode::kTruncated,
                   [](CraftedFile& f) { f.file_size = f.file_size / 2; }},
        BrokenCase{"FileShorterThanHeader", ErrorCode::kTruncated, [](CraftedFile& f) { f.file_size = 100; }},
        BrokenCase{"LargeGeometryInOnePage", ErrorCode::kTruncated,
                   [](CraftedFile& f) { SetGeometry(f, 1024, 1u << 28, shm::wire::kPage); }},  // 512 GiB
        BrokenCase{"GeometryOverSegmentLimit", ErrorCode::kBadGeometry,
                   [](CraftedFile& f) {  // 8 TiB, consistent with itself, over the 1 TiB segment limit
                     SetGeometry(f, shm::wire::kMaxSlots, shm::wire::kMaxPayload, shm::wire::kPage);
                   }}),
    [](const ::testing::TestParamInfo<BrokenCase>& case_info) { return std::string(case_info.param.label); });

// ---- Workers -----------------------------------------------------------------------------------------------

using Workers = HostAndGuest;

// N calls from N host threads, each on its own slot, to a handler that answers only once all N are inside
// it at the same time: possible only with one worker per slot.
TEST_F(Workers, OneWorkerServesEachHostSlotConcurrently) {
  constexpr uint32_t kSlots = 4;
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", kSlots)));
  for (int round = 0; round < 3; ++round) {
    const std::string request = "r" + std::to_string(round) + " " + std::to_string(kSlots);
    std::vector<std::string> answers(kSlots);
    std::vector<std::thread> callers;
    for (uint32_t i = 0; i < kSlots; ++i) {
      callers.emplace_back([&, i] {
        std::vector<uint8_t> out;
        auto r = host_->SendToSlot(i, request, Type(kTypeBarrier), out, {kLong, false});
        answers[i] = r ? Str(out) : r.error().ToString();
      });
    }
    for (auto& t : callers) t.join();
    for (uint32_t i = 0; i < kSlots; ++i) EXPECT_EQ(answers[i], "ok") << "round " << round << ", slot " << i;
  }
}

TEST_F(Workers, HeartbeatIsAnsweredWithoutTheHandler) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  auto count = [&]() -> long long {
    auto r = Call("", Type(kTypeCount), out);
    EXPECT_TRUE(r) << Describe(r);
    return r ? std::stoll(Str(out)) : -1;
  };
  const long long before = count();
  for (uint32_t i = 0; i < 10; ++i) {
    auto r = host_->SendToSlot(i % 2, "ping", MsgType::HEARTBEAT_REQ, out, {kLong, false});
    ASSERT_TRUE(r) << Describe(r);
    EXPECT_EQ(*r, MsgType::HEARTBEAT_RESP);
    EXPECT_TRUE(out.empty());
  }
  auto z = host_->GetZeroCopySlot(kLong);
  ASSERT_TRUE(z) << Describe(z);
  ASSERT_TRUE(z->Send(0, MsgType::HEARTBEAT_REQ, kLong));
  EXPECT_EQ(z->ResponseType(), MsgType::HEARTBEAT_RESP);
  z->Release();
  EXPECT_EQ(count(), before + 1) << "the handler ran for a heartbeat";
}

TEST_F(Workers, ThrowingHandlerFailsItsCallAndTheWorkerGoesOn) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 3)));
  std::vector<uint8_t> out;
  for (int pass = 0; pass < 2; ++pass) {
    for (uint32_t i = 0; i < host_->host_slots(); ++i) {
      auto r = host_->SendToSlot(i, "", Type(kTypeThrow), out, {kLong, false});
      ASSERT_FALSE(r) << "a handler that throws cannot succeed";
      EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
      EXPECT_EQ(r.error().remote(), shm::wire::WireError::kHandlerFailed) << r.error().ToString();
      auto next = host_->SendToSlot(i, "still serving", MsgType::NORMAL, out, {kLong, false});
      ASSERT_TRUE(next) << "slot " << i << ": " << Describe(next);
      EXPECT_EQ(Str(out), "still serving");
    }
  }
}

TEST_F(Workers, FailureReplyFailsTheCall) {
  ASSERT_NO_FATAL_FAILURE(Begin(MakeHostConfig("", 2)));
  std::vector<uint8_t> out;
  auto r = Call("", Type(kTypeFail), out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kRemote) << r.error().ToString();
  EXPECT_EQ(r.error().remote(), shm::wire::WireError::kHandlerFailed) << r.error().ToString();
  ASSERT_TRUE(Call("next", MsgType::NORMAL, out));
  EXPECT_EQ(Str(out), "next");
}

}  // namespace
}  // namespace shm_test

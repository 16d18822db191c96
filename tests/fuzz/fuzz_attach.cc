// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the receiving side of the attach handshake (SPECIFICATION.md §4.2), against a fake host
// that the fuzzer crafts: what memory it hands out (bytes, size, seals, or another kind of descriptor) and
// the reply record that carries it (status, detail, reserved, length, number of descriptors).
//
// Input (integers little-endian; a short input is padded with zeros):
//   [0]      u8  flags: bit 0 attach as an OBSERVER (else as a GUEST); bit 1 after an attach through the
//                public API, start the guest's workers and make a guest call on the crafted segment; bit 2 the
//                fake host closes each connection right after its reply; bit 3 the memory's size comes from
//                `size` below (else it is the length of the bytes); bit 4 the fake host closes each connection
//                without any reply
//   [1]      u8  descriptor kind, mod 6: 0 the memory (a memfd); 1 a read-only reopen of it; 2 a pipe;
//                3 /dev/null; 4 an eventfd; 5 the memory created without MFD_ALLOW_SEALING (sealing refused)
//   [2]      u8  bits 0-4: the seals added to the memory (the kernel's values: 1 F_SEAL_SEAL, 2 F_SEAL_SHRINK,
//                4 F_SEAL_GROW, 8 F_SEAL_WRITE, 16 F_SEAL_FUTURE_WRITE; a valid host adds 7); bits 5-6: a
//                huge sparse size instead (1: 2^40, 2: 2^40 + 4096, 3: 2^41)
//   [3]      u8  descriptors in the reply, mod 11 (each a copy of the chosen one; more than 8 are cut off)
//   [4..8)   u32 status      [8..12) u32 host_pid      [12..16) u32 detail      [16..20) u32 reserved
//   [20]     u8  length of the reply record, mod 65 (16 is well-formed; bytes past 16 are zero)
//   [21..25) u32 size (with flags bit 3: the memory's size, mod 4 MiB + 1)
//   [25..]       the memory's first bytes (cut or zero-padded to its size)
//
// Checked: the outcome of detail::AttachOnce is exactly the one §4.2 prescribes for what was sent (the
// target's own model below: a typed error, or success with the geometry ValidateHeader reads from the same
// bytes); the public entry point (DirectGuest::Connect, detail::Observe) agrees; the fake host receives a
// well-formed hello of the right role; nothing crashes, raises SIGBUS, reads out of bounds, leaks or hangs.
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "shm/shm.h"

namespace {

using shm::ErrorCode;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_attach: %s\n", what.c_str());
  std::abort();
}

constexpr size_t kHeaderBytes = 25;
constexpr uint64_t kMaxSmallSize = 4u << 20;

struct Input {
  bool observer = false, serve = false, close_after_reply = false, size_from_field = false, no_reply = false;
  uint32_t kind = 0;
  unsigned seals = 0;
  uint32_t huge = 0;
  int descriptors = 0;
  uint32_t status = 0, host_pid = 0, detail = 0, reserved = 0;
  size_t length = 0;
  uint64_t size = 0;
  const uint8_t* bytes = nullptr;
  size_t n = 0;
};

Input Parse(const uint8_t* data, size_t size) {
  uint8_t h[kHeaderBytes] = {};
  std::memcpy(h, data, std::min(size, kHeaderBytes));
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, h + off, 4);
    return v;
  };
  Input in;
  in.observer = h[0] & 1;
  in.serve = h[0] & 2;
  in.close_after_reply = h[0] & 4;
  in.size_from_field = h[0] & 8;
  in.no_reply = h[0] & 16;
  in.kind = h[1] % 6;
  in.seals = h[2] & 0x1F;
  in.huge = (h[2] >> 5) & 3;
  in.descriptors = h[3] % 11;
  in.status = u32(4);
  in.host_pid = u32(8);
  in.detail = u32(12);
  in.reserved = u32(16);
  in.length = h[20] % 65;
  in.bytes = size > kHeaderBytes ? data + kHeaderBytes : nullptr;
  in.n = size > kHeaderBytes ? size - kHeaderBytes : 0;
  static const uint64_t kHuge[] = {0, uint64_t{1} << 40, (uint64_t{1} << 40) + 4096, uint64_t{1} << 41};
  in.size = in.huge != 0 ? kHuge[in.huge] : in.size_from_field ? u32(21) % (kMaxSmallSize + 1) : in.n;
  return in;
}

/// The memory and the descriptor the fake host hands out.
struct Memory {
  shm::platform::File memfd;  // the memory itself (kinds 0, 1, 5)
  shm::platform::File sent;   // what travels in the reply
  shm::platform::File other;  // the other end of a pipe
};

Memory Build(const Input& in) {
  Memory m;
  if (in.kind == 0 || in.kind == 1 || in.kind == 5) {
    const unsigned flags = MFD_CLOEXEC | (in.kind == 5 ? 0u : unsigned{MFD_ALLOW_SEALING});
    m.memfd = shm::platform::File(::memfd_create("fuzz-attach", flags));
    if (!m.memfd.valid()) Fail("memfd_create");
    if (::ftruncate(m.memfd.fd(), static_cast<off_t>(in.size)) != 0) Fail("ftruncate");
    const size_t n = static_cast<size_t>(std::min<uint64_t>(in.n, in.size));
    for (size_t done = 0; done < n;) {
      const ssize_t w = ::pwrite(m.memfd.fd(), in.bytes + done, n - done, static_cast<off_t>(done));
      if (w <= 0) Fail("pwrite");
      done += static_cast<size_t>(w);
    }
    // No mapping exists, so even F_SEAL_WRITE can be added. Without MFD_ALLOW_SEALING this fails: the memory
    // then carries F_SEAL_SEAL alone.
    if (in.seals != 0 && ::fcntl(m.memfd.fd(), F_ADD_SEALS, in.seals) != 0 && in.kind != 5) Fail("F_ADD_SEALS");
    if (in.kind == 1) {
      m.sent =
          shm::platform::File(::open(("/proc/self/fd/" + std::to_string(m.memfd.fd())).c_str(), O_RDONLY | O_CLOEXEC));
    } else {
      m.sent = shm::platform::File(::fcntl(m.memfd.fd(), F_DUPFD_CLOEXEC, 0));
    }
  } else if (in.kind == 2) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) Fail("pipe2");
    m.sent = shm::platform::File(p[0]);
    m.other = shm::platform::File(p[1]);
  } else if (in.kind == 3) {
    m.sent = shm::platform::File(::open("/dev/null", O_RDWR | O_CLOEXEC));
  } else {
    m.sent = shm::platform::File(::eventfd(0, EFD_CLOEXEC));
  }
  if (!m.sent.valid()) Fail("cannot build the descriptor to send");
  return m;
}

/// What §4.2 prescribes for this input: an error code, or nullopt for success.
std::optional<ErrorCode> Prescribed(const Input& in, shm::Result<shm::wire::Geometry>* header) {
  if (in.no_reply) return ErrorCode::kNotFound;                            // end of file: no answer
  if (in.length == 0 && in.descriptors == 0) return ErrorCode::kNotFound;  // an empty record reads as EOF
  if (in.length != shm::wire::kReplySize || in.reserved != 0) return ErrorCode::kProtocol;  // malformed
  if (in.status != 0 && in.descriptors != 0) return ErrorCode::kProtocol;  // a descriptor with a refusal
  switch (in.status) {
    case 0: break;
    case 1: return ErrorCode::kGuestAlreadyConnected;
    case 2: return ErrorCode::kPermissionDenied;
    case 3: return ErrorCode::kVersionMismatch;
    case 5: return ErrorCode::kNotFound;
    default: return ErrorCode::kProtocol;  // BAD_HELLO and unknown statuses
  }
  if (in.descriptors != 1) return ErrorCode::kProtocol;
  // Step 4: a regular file sealed against resizing, not against writing.
  if (in.kind >= 2 && in.kind <= 4) return ErrorCode::kProtocol;
  const unsigned seals = in.kind == 5 ? unsigned{F_SEAL_SEAL} : in.seals;
  const unsigned required = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL, forbidden = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
  if ((seals & required) != required || (seals & forbidden) != 0) return ErrorCode::kProtocol;
  // Step 5: its size, then the mapping (a read-only descriptor cannot be mapped for writing), then the header.
  if (in.size < shm::wire::kSegmentHeaderSize) return ErrorCode::kTruncated;
  if (in.size > shm::wire::kMaxSegmentSize) return ErrorCode::kBadGeometry;
  if (in.kind == 1 && !in.observer) return ErrorCode::kPermissionDenied;
  if (!header->ok()) return header->error().code();
  return std::nullopt;
}

/// The fake host: takes the name, and answers every connection with the reply the input describes.
class FakeHost {
 public:
  FakeHost(const std::string& name, const Input& in, const Memory& m) : in_(in), fd_(m.sent.fd()) {
    auto l = shm::platform::ListenRendezvous(name);
    if (!l) Fail("the fake host cannot take its name: " + l.error().ToString());
    listener_ = std::move(*l);
    if (!wake_.Open()) Fail("eventfd");
    thread_ = std::thread([this] { Serve(); });
  }
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;
  ~FakeHost() {
    wake_.Signal();
    thread_.join();
  }

 private:
  void Serve() {
    std::vector<shm::platform::File> kept;  // open connections: the guest must not see its host gone
    for (;;) {
      const int fds[2] = {wake_.file().fd(), listener_.fd()};
      short revents[2] = {0, 0};
      shm::platform::PollFiles(fds, revents, 2, -1);
      if (revents[0] != 0) return;
      for (;;) {
        auto c = shm::platform::AcceptConnection(listener_);
        if (!c) Fail("accept: " + c.error().ToString());
        if (!c->valid()) break;
        if (Answer(*c)) kept.push_back(std::move(*c));
      }
    }
  }

  // Check the hello, then send the crafted reply. Whether to keep the connection open.
  bool Answer(const shm::platform::File& c) {
    if (!shm::platform::WaitReadable(c, shm::platform::DeadlineAfter(5000000000))) Fail("no hello in 5 s");
    uint8_t hello[64];
    const ssize_t r = ::recv(c.fd(), hello, sizeof hello, MSG_DONTWAIT | MSG_TRUNC);
    if (r <= 0) return false;  // the guest gave up before asking
    uint64_t magic;
    uint32_t version, role;
    std::memcpy(&magic, hello, 8);
    std::memcpy(&version, hello + 8, 4);
    std::memcpy(&role, hello + 12, 4);
    const auto want = in_.observer ? shm::wire::AttachRole::kObserver : shm::wire::AttachRole::kGuest;
    if (r != static_cast<ssize_t>(shm::wire::kHelloSize) || magic != shm::wire::kHelloMagic ||
        version != shm::wire::kVersion || role != static_cast<uint32_t>(want)) {
      Fail("the guest sent a malformed hello");
    }
    if (in_.no_reply) return false;
    uint8_t record[64] = {};
    const uint32_t fields[4] = {in_.status, in_.host_pid, in_.detail, in_.reserved};
    std::memcpy(record, fields, sizeof fields);
    iovec iov{record, in_.length};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 10)] = {};
    if (in_.descriptors > 0) {
      const size_t bytes = sizeof(int) * static_cast<size_t>(in_.descriptors);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(bytes);
      cmsghdr* cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(bytes);
      for (int i = 0; i < in_.descriptors; ++i) std::memcpy(CMSG_DATA(cm) + sizeof(int) * i, &fd_, sizeof fd_);
    }
    (void)::sendmsg(c.fd(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);  // a guest that gave up may be gone
    return !in_.close_after_reply;
  }

  const Input& in_;
  const int fd_;
  shm::platform::File listener_;
  shm::platform::Wakeup wake_;
  std::thread thread_;
};

std::string Describe(const std::optional<ErrorCode>& c) { return c ? shm::ToString(*c) : "success"; }

bool Retried(const std::optional<ErrorCode>& c) {
  return c && (*c == ErrorCode::kNotFound || *c == ErrorCode::kGuestAlreadyConnected);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint32_t counter = 0;
  static const bool quiet = [] {
    shm::SetLogSink(nullptr);
    return true;
  }();
  (void)quiet;
  const Input in = Parse(data, size);

  // The pure validator, on the head of the memory as the guest will read it (the bytes, cut or zero-padded to
  // the memory's size), and on a shorter read.
  const uint64_t head_size = std::min<uint64_t>(in.size, shm::wire::kSegmentHeaderSize);
  std::vector<uint8_t> head(static_cast<size_t>(head_size), 0);
  if (!head.empty() && in.n > 0) std::memcpy(head.data(), in.bytes, std::min(head.size(), in.n));
  auto header = shm::detail::ValidateHeader(head.data(), head.size(), in.size);
  if (header) {
    const shm::wire::Geometry& g = *header;
    if (!shm::wire::GeometryValid(g)) Fail("ValidateHeader accepted an invalid geometry");
    if (shm::wire::SegmentSize(g) > in.size) Fail("ValidateHeader accepted a layout larger than the memory");
    if (head.size() < shm::wire::kSegmentHeaderSize) Fail("ValidateHeader accepted a short header");
  }
  if (head.size() >= 2 && shm::detail::ValidateHeader(head.data(), head.size() / 2, in.size)) {
    Fail("ValidateHeader accepted half a header");
  }
  const std::optional<ErrorCode> want = Prescribed(in, &header);

  const std::string name = "fuzz-attach-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  const Memory memory = Build(in);
  const FakeHost fake(name, in, memory);
  const auto role = in.observer ? shm::wire::AttachRole::kObserver : shm::wire::AttachRole::kGuest;

  // One handshake: exactly the prescribed outcome.
  {
    auto a = shm::detail::AttachOnce(name, role, shm::platform::DeadlineAfter(10000000000));
    const std::optional<ErrorCode> got = a ? std::nullopt : std::optional<ErrorCode>(a.error().code());
    if (got != want) {
      Fail("AttachOnce ended " + Describe(got) + (a ? "" : " (" + a.error().ToString() + ")") + ", §4.2 says " +
           Describe(want));
    }
    if (a) {
      const shm::wire::Geometry& g = a->segment.geometry();
      if (g.host_slots != header->host_slots || g.guest_slots != header->guest_slots ||
          g.host_payload != header->host_payload || g.guest_payload != header->guest_payload) {
        Fail("AttachOnce and ValidateHeader disagree on the geometry");
      }
      if (a->segment.writable() == in.observer) Fail("the mapping's access does not match the role");
      if (a->segment.size() != in.size) Fail("the mapping does not cover the memory");
    }
  }

  // The public entry point, with its retries: the same outcome (a retried one may end either way at the
  // deadline), and on a crafted segment the guest serves and calls within its bounds.
  const auto timeout = Retried(want) ? std::chrono::milliseconds(5) : std::chrono::milliseconds(10000);
  std::optional<ErrorCode> got;
  std::string message;
  if (in.observer) {
    auto s = shm::detail::Observe(name, shm::platform::DeadlineAfter(std::chrono::nanoseconds(timeout).count()));
    if (!s) {
      got = s.error().code();
      message = s.error().ToString();
    }
  } else {
    shm::GuestConfig config;
    config.name = name;
    config.connect_timeout = timeout;
    config.retry_interval = std::chrono::milliseconds(1);
    config.default_timeout = std::chrono::milliseconds(1);
    shm::DirectGuest guest;
    auto r = guest.Connect(config);
    if (!r) {
      got = r.error().code();
      message = r.error().ToString();
    } else {
      if (guest.host_slots() != header->host_slots || guest.guest_slots() != header->guest_slots) {
        Fail("Connect and ValidateHeader disagree on the geometry");
      }
      // Serving and calling on a crafted segment: workers for a small slot count only (one thread per slot).
      if (in.serve && guest.host_slots() <= 8) {
        (void)guest.Start([](const shm::Message&, shm::MutableBytes) { return shm::Reply{}; });
        std::vector<uint8_t> resp;
        (void)guest.SendGuestCall("x", shm::MsgType::NORMAL, resp, {std::chrono::milliseconds(1)});
        if (resp.size() > guest.guest_payload_capacity()) Fail("answer larger than the response buffer");
      }
    }
    guest.Close();
  }
  const bool agree = Retried(want) ? Retried(got) : got == want;
  if (!agree) Fail("the public attach ended " + Describe(got) + " (" + message + "), §4.2 says " + Describe(want));
  return 0;
}

// libFuzzer target: the guest's attach path on a segment file the fuzzer crafts.
//
// Input: [flags u8][size u32][file bytes...]. The bytes become /dev/shm/<name>; flags bit 3 chooses the file
// size from `size` (up to 4 MiB: shorter than the bytes truncates them, longer pads with zeros), otherwise the
// file is exactly the bytes. Unless flags bit 0 is set the fuzzer "is" a live host: it holds the host lock byte
// on its own open file description. Bit 1 also holds the guest lock (another guest is attached). Bit 2, after a
// successful attach, starts the guest's workers and makes a guest call on the crafted segment.
//
// Checked: ValidateHeader (the pure function) and Connect agree; anything accepted describes a layout that
// fits the file; nothing crashes, raises SIGBUS, reads out of bounds or hangs.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "shm/shm.h"

namespace {

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_attach: %s\n", what);
  std::abort();
}

constexpr uint64_t kMaxFile = 4u << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static uint32_t counter = 0;
  static const bool quiet = [] {
    shm::SetLogSink(nullptr);
    return true;
  }();
  (void)quiet;
  if (size < 5) return 0;
  const uint8_t flags = data[0];
  uint32_t size_field;
  std::memcpy(&size_field, data + 1, 4);
  const uint8_t* bytes = data + 5;
  const size_t n = size - 5;
  const uint64_t file_size = (flags & 8) ? size_field % (kMaxFile + 1) : n;

  // The pure validator, on the head of the file as the guest will read it (the bytes, cut or zero-padded to
  // the file size), and on a shorter read.
  std::vector<uint8_t> head(static_cast<size_t>(std::min<uint64_t>(file_size, shm::wire::kSegmentHeaderSize)), 0);
  if (!head.empty() && n > 0) std::memcpy(head.data(), bytes, std::min(head.size(), n));
  auto direct = shm::detail::ValidateHeader(head.data(), head.size(), file_size);
  if (direct) {
    const shm::wire::Geometry& g = *direct;
    if (!shm::wire::GeometryValid(g)) Fail("ValidateHeader accepted an invalid geometry");
    if (shm::wire::SegmentSize(g) > file_size) Fail("ValidateHeader accepted a layout larger than the file");
    if (head.size() < shm::wire::kSegmentHeaderSize) Fail("ValidateHeader accepted a short header");
  }
  (void)shm::detail::ValidateHeader(head.data(), head.size() / 2, file_size);

  const std::string name = "fuzz-attach-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  const std::string path = "/dev/shm/" + name;
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) Fail("cannot create the segment file");
  size_t done = 0;
  while (done < n) {
    const ssize_t w = write(fd, bytes + done, n - done);
    if (w <= 0) Fail("write");
    done += static_cast<size_t>(w);
  }
  if (ftruncate(fd, static_cast<off_t>(file_size)) != 0) Fail("ftruncate");
  const shm::platform::File own(fd);
  if (!(flags & 1) && !*shm::platform::TryLockByte(own, shm::platform::kHostLockByte)) Fail("host lock");
  if ((flags & 2) && !*shm::platform::TryLockByte(own, shm::platform::kGuestLockByte)) Fail("guest lock");

  shm::GuestConfig config;
  config.name = name;
  config.connect_timeout = std::chrono::milliseconds(1);
  config.retry_interval = std::chrono::milliseconds(1);
  config.default_timeout = std::chrono::milliseconds(1);
  {
    shm::DirectGuest guest;
    auto r = guest.Connect(config);
    if (r) {
      if (!direct) Fail("Connect accepted a segment that ValidateHeader rejects");
      if (flags & 3) Fail("Connect attached without a live host or despite a live guest");
      if (guest.host_slots() != direct->host_slots || guest.guest_slots() != direct->guest_slots) {
        Fail("Connect and ValidateHeader disagree on the geometry");
      }
      // Serving and calling on a crafted segment: workers for a small slot count only (one thread per slot).
      if ((flags & 4) && guest.host_slots() <= 8) {
        (void)guest.Start([](const shm::Message&, shm::MutableBytes) { return shm::Reply{}; });
        std::vector<uint8_t> resp;
        (void)guest.SendGuestCall("x", shm::MsgType::NORMAL, resp, {std::chrono::milliseconds(1)});
        if (resp.size() > guest.guest_payload_capacity()) Fail("answer larger than the response buffer");
      }
    }
    guest.Close();
  }
  unlink(path.c_str());
  return 0;
}

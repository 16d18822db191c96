// SPDX-License-Identifier: Apache-2.0
// Built with -fno-exceptions: a host and a guest in one process make one call, so the library is shown to build
// and work where exceptions are off (no handler can throw there, and the library catches nothing).
// Exit status 0 when the echoed answer comes back; the reason on stderr otherwise.
#include <shm/shm.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "this program must be built with -fno-exceptions"
#endif

namespace {

int Fail(const char* what, const shm::Error& e) {
  std::fprintf(stderr, "no_exceptions: %s: %s\n", what, e.ToString().c_str());
  return 1;
}

}  // namespace

int main() {
  const std::string name = "shm-noexc-" + std::to_string(::getpid());
  shm::HostConfig hc;
  hc.name = name;
  hc.host_slots = 1;
  hc.guest_slots = 0;
  hc.payload_size = 256;
  shm::DirectHost host;
  if (auto r = host.Init(hc); !r) return Fail("host Init", r.error());

  shm::GuestConfig gc;
  gc.name = name;
  shm::DirectGuest guest;
  if (auto r = guest.Connect(gc); !r) return Fail("guest Connect", r.error());
  auto started = guest.Start([](const shm::Message& m, shm::MutableBytes out) {
    if (m.data.size() > out.size()) return shm::Reply::Failure();
    std::memcpy(out.data(), m.data.data(), m.data.size());
    return shm::Reply{static_cast<int32_t>(m.data.size()), shm::MsgType::NORMAL};
  });
  if (!started) return Fail("guest Start", started.error());

  std::vector<uint8_t> answer;
  auto type = host.Send("ping", shm::MsgType::NORMAL, answer);
  if (!type) return Fail("host Send", type.error());
  if (std::string(answer.begin(), answer.end()) != "ping" || *type != shm::MsgType::NORMAL) {
    std::fprintf(stderr, "no_exceptions: the answer was not the echoed request\n");
    return 1;
  }
  guest.Close();
  host.Shutdown();
  std::printf("no_exceptions: one call answered without exceptions\n");
  return 0;
}

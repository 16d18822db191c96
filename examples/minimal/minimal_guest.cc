// SPDX-License-Identifier: Apache-2.0
// The shortest complete guest: attach to segment <name>, call the host once, then serve the host until it
// shuts down. Usage: minimal_guest [name]
#include <shm/shm.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  auto fail = [](const shm::Error& e) {
    std::fprintf(stderr, "guest: %s\n", e.ToString().c_str());
    return 1;
  };
  shm::GuestConfig config;
  config.name = argc > 1 ? argv[1] : "shm-minimal";
  shm::DirectGuest guest;
  if (auto r = guest.Connect(config); !r) return fail(r.error());  // waits up to 10 s for the host

  std::vector<uint8_t> answer;  // a guest call: the host's Start() handler answers it
  auto type = guest.SendGuestCall("hi host", shm::MsgType::GUEST_CALL, answer);
  if (!type) return fail(type.error());
  std::printf("guest: host answered \"%.*s\"\n", static_cast<int>(answer.size()),
              reinterpret_cast<const char*>(answer.data()));

  // Answer every request with "echo: <request>". Runs on one worker per host slot, concurrently.
  auto started = guest.Start([](const shm::Message& m, shm::MutableBytes out) {
    const std::string reply = "echo: " + std::string(m.data.as_string_view());
    if (reply.size() > out.size()) return shm::Reply::Failure();  // the host's call fails with kRemote
    std::memcpy(out.data(), reply.data(), reply.size());
    return shm::Reply{static_cast<int32_t>(reply.size()), shm::MsgType::NORMAL};
  });
  if (!started) return fail(started.error());
  if (auto r = guest.Wait(); !r) return fail(r.error());  // Ok when the host shuts down, kHostGone if it dies
  return 0;
}

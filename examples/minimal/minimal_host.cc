// SPDX-License-Identifier: Apache-2.0
// The shortest complete host: create segment <name>, call the guest once, answer the guest's call, shut down.
// Usage: minimal_host [name]   (start minimal_guest [name] before or after it, within 10 s)
#include <shm/shm.h>

#include <cstdio>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  auto fail = [](const shm::Error& e) {
    std::fprintf(stderr, "host: %s\n", e.ToString().c_str());
    return 1;
  };
  shm::HostConfig config;
  config.name = argc > 1 ? argv[1] : "shm-minimal";
  shm::DirectHost host;
  if (auto r = host.Init(config); !r) return fail(r.error());

  // Serve the guest's calls on a worker thread: answer "ok".
  auto started = host.Start([](const shm::Message&, shm::MutableBytes out) {
    std::memcpy(out.data(), "ok", 2);
    return shm::Reply{2, shm::MsgType::NORMAL};
  });
  if (!started) return fail(started.error());

  std::vector<uint8_t> answer;  // Send waits (10 s by default) for a guest to attach and answer
  auto type = host.Send("hello", shm::MsgType::NORMAL, answer);
  if (!type) return fail(type.error());
  std::printf("host: guest answered \"%.*s\"\n", static_cast<int>(answer.size()),
              reinterpret_cast<const char*>(answer.data()));
  return 0;  // ~DirectHost tells the guest to shut down and removes the segment
}

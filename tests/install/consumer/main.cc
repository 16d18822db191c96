// SPDX-License-Identifier: Apache-2.0
// Install-test consumer: one round trip each way between a host and a guest in two processes.
// The child becomes the guest before the parent creates the segment, so it inherits nothing from the host.
#include <shm/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int Fail(const char* who, const shm::Error& e) {
  std::fprintf(stderr, "consumer %s: %s\n", who, e.ToString().c_str());
  return 1;
}

shm::Reply Echo(const shm::Message& m, shm::MutableBytes out) {
  if (m.data.size() > out.size()) return shm::Reply::Failure();
  std::memcpy(out.data(), m.data.data(), m.data.size());
  return shm::Reply{static_cast<int32_t>(m.data.size()), shm::MsgType::NORMAL};
}

int Guest(const std::string& name) {
  shm::DirectGuest guest;
  if (auto r = guest.Connect({name}); !r) return Fail("guest", r.error());
  std::vector<uint8_t> answer;
  auto type = guest.SendGuestCall("from guest", shm::MsgType::GUEST_CALL, answer);
  if (!type) return Fail("guest", type.error());
  if (std::string(answer.begin(), answer.end()) != "from guest") return 1;
  if (auto r = guest.Start(Echo); !r) return Fail("guest", r.error());
  if (auto r = guest.Wait(); !r) return Fail("guest", r.error());
  return 0;
}

int Host(const std::string& name) {
  shm::HostConfig config;
  config.name = name;
  shm::DirectHost host;
  if (auto r = host.Init(config); !r) return Fail("host", r.error());
  if (auto r = host.Start(Echo); !r) return Fail("host", r.error());
  std::vector<uint8_t> answer;
  auto type = host.Send("from host", shm::MsgType::NORMAL, answer);
  if (!type) return Fail("host", type.error());
  if (std::string(answer.begin(), answer.end()) != "from host") return 1;
  std::printf("consumer: host <-> guest round trips ok\n");
  return 0;
}  // ~DirectHost shuts the guest down

}  // namespace

int main() {
  std::printf("consumer: shm %s, protocol version %d\n", SHM_VERSION_STRING, SHM_PROTOCOL_VERSION);
  std::fflush(stdout);  // before fork, so the child does not inherit the buffered line
  const std::string name = "shm-install-test-" + std::to_string(getpid());
  const pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) _exit(Guest(name));
  if (Host(name) != 0) {
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    return 1;
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "consumer: the guest process failed (wait status %d)\n", status);
    return 1;
  }
  return 0;
}

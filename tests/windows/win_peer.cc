// SPDX-License-Identifier: Apache-2.0
// shm_win_peer: the other process of the Windows multi-process tests (win_test.cc starts it with
// CreateProcessW). It prints lines on stdout and exits with a code that says how it ended. Commands:
//
//   guest NAME        Connect, print "ATTACHED", serve until Wait() ends, print "WAIT_DONE <error code>".
//                     Request type NORMAL: echo. kHang: print "SERVING" and block until killed.
//                     kFail: the handler fails (the host's call gets SYSTEM_ERROR HandlerFailed).
//   guest-idle NAME   Connect (no workers: it never looks at its host again), print "ATTACHED", keep the
//                     segment mapped until stdin reaches end of file, then close.
//   guest-call NAME C Connect and make C guest calls, checking the host's "host:<request>" answers; then one
//                     of type kFail, which the host's handler fails. "CALLS OK" or "CALLS ERR <why>".
//   host NAME         Init a host ("INIT OK <pid>" or "INIT ERR <code> <message>"), answer guest calls, print
//                     "GUEST ATTACHED" once a guest has attached and "GUEST CALLED" at its first guest call,
//                     hold it until stdin reaches end of file.
// Exit codes: 0 done as asked, 1 failed, 2 bad command line, 3 the host went away (guest).
#include <shm/shm.h>
#include <windows.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "win_peer_protocol.h"

namespace {

void Say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// Block until stdin reaches end of file (the test closes it, or dies).
void WaitForStdinEof() {
  HANDLE in = GetStdHandle(STD_INPUT_HANDLE);
  char buf[64];
  DWORD n = 0;
  while (ReadFile(in, buf, sizeof buf, &n, nullptr) && n > 0) {
  }
}

shm::Reply Serve(const shm::Message& m, shm::MutableBytes out) {
  const auto type = static_cast<uint32_t>(m.type);
  if (type == shm_win::kHang) {
    Say("SERVING");
    for (;;) Sleep(1000);
  }
  if (type == shm_win::kFail) return shm::Reply::Failure();
  if (m.data.size() > out.size()) return shm::Reply::Failure();
  if (m.data.size() > 0) std::memcpy(out.data(), m.data.data(), m.data.size());
  return shm::Reply{static_cast<int32_t>(m.data.size()), m.type};
}

shm::Reply HostAnswer(const shm::Message& m, shm::MutableBytes out) {
  if (static_cast<uint32_t>(m.type) == shm_win::kFail) return shm::Reply::Failure();
  // The first guest call proves the guest has mapped the segment: tests that kill this host wait for it.
  static std::atomic<bool> called{false};
  if (!called.exchange(true)) Say("GUEST CALLED");
  const std::string reply = "host:" + std::string(m.data.as_string_view());
  if (reply.size() > out.size()) return shm::Reply::Failure();
  std::memcpy(out.data(), reply.data(), reply.size());
  return shm::Reply{static_cast<int32_t>(reply.size()), shm::MsgType::NORMAL};
}

shm::GuestConfig GuestCfg(const char* name) {
  shm::GuestConfig cfg;
  cfg.name = name;
  cfg.connect_timeout = std::chrono::seconds(60);
  return cfg;
}

int Guest(const char* name) {
  shm::DirectGuest guest;
  if (auto r = guest.Connect(GuestCfg(name)); !r) {
    Say("CONNECT ERR " + r.error().ToString());
    return 1;
  }
  if (auto r = guest.Start(Serve); !r) {
    Say("START ERR " + r.error().ToString());
    return 1;
  }
  Say("ATTACHED");
  auto r = guest.Wait();
  Say(std::string("WAIT_DONE ") + (r ? "ok" : shm::ToString(r.error().code())));
  if (!r && r.error().code() == shm::ErrorCode::kHostGone) return 3;
  return r ? 0 : 1;
}

int GuestIdle(const char* name) {
  shm::DirectGuest guest;
  if (auto r = guest.Connect(GuestCfg(name)); !r) {
    Say("CONNECT ERR " + r.error().ToString());
    return 1;
  }
  Say("ATTACHED");
  WaitForStdinEof();
  guest.Close();
  return 0;
}

int GuestCall(const char* name, int count) {
  shm::DirectGuest guest;
  if (auto r = guest.Connect(GuestCfg(name)); !r) {
    Say("CALLS ERR connect: " + r.error().ToString());
    return 1;
  }
  std::vector<uint8_t> answer;
  for (int i = 0; i < count; ++i) {
    const std::string req = "call-" + std::to_string(i);
    auto t = guest.SendGuestCall(req, shm::MsgType::GUEST_CALL, answer);
    if (!t) {
      Say("CALLS ERR call " + std::to_string(i) + ": " + t.error().ToString());
      return 1;
    }
    if (std::string(answer.begin(), answer.end()) != "host:" + req) {
      Say("CALLS ERR call " + std::to_string(i) + ": wrong answer");
      return 1;
    }
  }
  auto t = guest.SendGuestCall("fail", static_cast<shm::MsgType>(shm_win::kFail), answer);
  if (t || t.error().code() != shm::ErrorCode::kRemote || t.error().remote() != shm::wire::WireError::kHandlerFailed) {
    Say("CALLS ERR a failing host handler did not give SYSTEM_ERROR HandlerFailed: " +
        (t ? std::string("success") : t.error().ToString()));
    return 1;
  }
  Say("CALLS OK");
  guest.Close();
  return 0;
}

int Host(const char* name) {
  shm::HostConfig cfg;
  cfg.name = name;
  cfg.host_slots = 2;
  cfg.guest_slots = 1;
  cfg.payload_size = 4096;
  cfg.guest_payload_size = 4096;
  shm::DirectHost host;
  if (auto r = host.Init(cfg); !r) {
    Say("INIT ERR " + std::to_string(static_cast<uint32_t>(r.error().code())) + " " + r.error().ToString());
    return 1;
  }
  if (auto r = host.Start(HostAnswer); !r) {
    Say("INIT ERR " + std::to_string(static_cast<uint32_t>(r.error().code())) + " " + r.error().ToString());
    return 1;
  }
  Say("INIT OK " + std::to_string(GetCurrentProcessId()));
  // Say when a guest has attached, for tests that must not kill this host before.
  std::atomic<bool> done{false};
  std::thread watch([&] {
    while (!done.load() && !host.GuestAttached()) Sleep(1);
    if (!done.load()) Say("GUEST ATTACHED");
  });
  WaitForStdinEof();
  done.store(true);
  watch.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string cmd = argv[1];
  if (cmd == "guest") return Guest(argv[2]);
  if (cmd == "guest-idle") return GuestIdle(argv[2]);
  if (cmd == "guest-call" && argc >= 4) return GuestCall(argv[2], std::atoi(argv[3]));
  if (cmd == "host") return Host(argv[2]);
  return 2;
}

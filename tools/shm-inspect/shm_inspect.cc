// SPDX-License-Identifier: Apache-2.0
// shm-inspect: look at live shm segments from outside, read-only. It asks a segment's host for a read-only
// descriptor as an OBSERVER (never the guest seat, never a lock), maps it read-only, closes the descriptor,
// and reads every field once (snapshot.h). Usage: shm-inspect --help.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#if defined(__linux__)
#include "os_linux.h"
#else
#error "shm-inspect: no OS layer for this platform yet (os_linux.h lists what one provides)"
#endif
#include "render.h"
#include "snapshot.h"

namespace {

using shm_inspect::HostView;
using shm_inspect::Snapshot;
namespace os = shm_inspect::os;

constexpr const char* kUsage =
    "usage: shm-inspect NAME [--json] [--timeout-ms MS]   one segment: header, host, guest, counters, slots\n"
    "       shm-inspect --watch NAME [--interval-ms MS]   the same, refreshed in place with rates; q or Ctrl-C quits\n"
    "       shm-inspect --list [--json]                   every segment name on this machine\n"
    "       shm-inspect --clean NAME                      remove what a dead host left of NAME (only if stale)\n"
    "\n"
    "Read-only: it receives a read-only descriptor from the host as an observer, maps it read-only and never\n"
    "takes the guest seat. Exit status: 0 shown, 1 no such live segment (or not readable), 2 bad usage.\n";

int Usage(const std::string& why) {
  std::fprintf(stderr, "shm-inspect: %s\n%s", why.c_str(), kUsage);
  return 2;
}

bool ParseMs(const char* s, int64_t* out) {
  char* end = nullptr;
  const long long v = std::strtoll(s, &end, 10);
  if (end == s || *end != '\0' || v <= 0 || v > 3600 * 1000) return false;
  *out = v;
  return true;
}

int ShowOne(const std::string& name, bool json, int64_t timeout_ms) {
  os::Mapping map;
  uint64_t inode = 0;
  const HostView h = os::Observe(name, os::Now() + timeout_ms * 1000000, &map, &inode);
  const Snapshot s = h.answered ? shm_inspect::Parse(map.data(), map.size()) : Snapshot();
  const std::string out = json ? shm_inspect::RenderJson(name, h, s, os::Now()) + "\n"
                               : shm_inspect::RenderText(name, h, s, os::Now(), nullptr);
  std::fputs(out.c_str(), stdout);
  return h.answered && s.header_ok ? 0 : 1;
}

int List(bool json) {
  std::map<std::string, int> names;  // sorted, each once
  for (const os::NameSocket& n : os::ReadNameSockets()) {
    if (n.listening) names[n.name] = 1;
  }
  std::string out = json ? "{\"schema\":\"shm-inspect-list/1\",\"segments\":[" : "";
  if (!json) {
    out += shm_inspect::internal::Fmt("%-24s %8s %8s %12s %8s %-22s %s\n", "NAME", "HOST_PID", "UID", "SIZE", "VERSION",
                                      "HOST", "GUEST");
  }
  bool first = true;
  for (const auto& entry : names) {
    const std::string& name = entry.first;
    os::Mapping map;
    uint64_t inode = 0;
    const HostView h = os::Observe(name, os::Now() + 1000000000, &map, &inode);
    const Snapshot s = h.answered ? shm_inspect::Parse(map.data(), map.size()) : Snapshot();
    const std::string host = !h.alive ? "gone" : h.answered ? "alive" : "alive, unreadable";
    const std::string guest = h.answered && s.header_ok ? shm_inspect::GuestAttachedText(h, s) : "unknown";
    if (json) {
      using shm_inspect::internal::JsonString;
      out += std::string(first ? "" : ",") + "{\"name\":" + JsonString(name) +
             ",\"alive\":" + (h.alive ? "true" : "false") + ",\"answered\":" + (h.answered ? "true" : "false") +
             ",\"pid\":" + std::to_string(h.pid) + ",\"uid\":" + std::to_string(h.uid) +
             ",\"size\":" + std::to_string(s.size) + ",\"version\":" + std::to_string(s.version) +
             ",\"valid\":" + (s.header_ok ? "true" : "false") + ",\"guest_attached\":" +
             (guest == "yes"  ? "true"
              : guest == "no" ? "false"
                              : "null") +
             ",\"error\":" +
             (h.error.empty() ? (s.header_ok || !h.answered ? "null" : JsonString(s.error)) : JsonString(h.error)) +
             "}";
    } else {
      out +=
          shm_inspect::internal::Fmt("%-24s %8u %8u %12llu %8u %-22s %s\n", name.c_str(), h.pid, h.uid,
                                     static_cast<unsigned long long>(s.size), s.version, host.c_str(), guest.c_str());
    }
    first = false;
  }
  if (json) out += "]}\n";
  if (!json && names.empty()) out += "(no segments)\n";
  std::fputs(out.c_str(), stdout);
  return 0;
}

// A host leaves nothing behind: its name is a socket the kernel frees when the host dies, and its
// memory a memfd freed with its last mapping. So --clean has something to remove only while the name is
// held, and then it is held by a live process: it never removes anything, and says why.
int Clean(const std::string& name) {
  int connections = 0;
  if (os::ListenerOf(name, &connections) != 0) {
    os::Mapping map;
    uint64_t inode = 0;
    const HostView h = os::Observe(name, os::Now() + 1000000000, &map, &inode);
    std::fprintf(stderr, "shm-inspect: not cleaning %s: it is held by a live host (pid %u, uid %u)%s\n", name.c_str(),
                 h.pid, h.uid, h.answered ? "" : ", which does not answer");
    return 1;
  }
  std::printf(
      "nothing to clean: no process holds %s. A segment leaves no file behind: its name goes with its "
      "host's socket, and its memory with the last process that maps it.\n",
      name.c_str());
  return 0;
}

int Watch(const std::string& name, int64_t interval_ms) {
  os::Terminal term;
  os::Mapping map;
  uint64_t inode = 0;
  HostView h;
  Snapshot prev;
  int64_t prev_ns = 0;
  std::vector<uint32_t> word;       // per slot: the control word (W aside) last seen
  std::vector<int64_t> word_since;  // and since when
  for (;;) {
    if (os::Interrupted()) break;
    const int64_t now = os::Now();
    if (!h.answered || !os::ListenerAlive(name, inode, &h.guest_connections)) {
      if (h.answered) {
        h.answered = false;
        h.alive = false;
      }
      map.Reset();
      h = os::Observe(name, now + 1000000000, &map, &inode);
      prev = Snapshot();
      word.clear();
    }
    std::string text;
    if (h.answered) {
      const Snapshot s = shm_inspect::Parse(map.data(), map.size());
      shm_inspect::WatchInfo w;
      if (word.size() != s.slots.size()) {
        word.assign(s.slots.size(), ~0u);
        word_since.assign(s.slots.size(), -1);
      }
      w.in_state_ns.resize(s.slots.size(), -1);
      for (size_t i = 0; i < s.slots.size(); ++i) {
        const uint32_t v = s.slots[i].ctl & ~shm::wire::kWaiting;
        if (v != word[i]) {
          // First seen now: how long before is unknown, so the age counts from the refresh before.
          word[i] = v;
          word_since[i] = prev_ns != 0 ? prev_ns : now;
        }
        w.in_state_ns[i] = now - word_since[i];
      }
      if (prev.header_ok && prev.counters && s.counters && prev_ns != 0 && now > prev_ns) {
        w.interval_s = static_cast<double>(now - prev_ns) / 1e9;
        for (int d = 0; d < 2; ++d) {
          const auto a = shm_inspect::SumDirection(prev, d == 0), b = shm_inspect::SumDirection(s, d == 0);
          w.calls_per_s[d] =
              static_cast<double>(b.caller[shm::wire::kCalls] - a.caller[shm::wire::kCalls]) / w.interval_s;
          w.errors_per_s[d] = static_cast<double>(b.caller_errors() - a.caller_errors()) / w.interval_s;
        }
      }
      text = shm_inspect::RenderText(name, h, s, now, &w);
      prev = s;
      prev_ns = now;
    } else {
      text = shm_inspect::RenderText(name, h, Snapshot(), now, nullptr) + "  (retrying)\n";
    }
    term.Show(text + "\n  refresh every " + std::to_string(interval_ms) + " ms; q quits\n");
    const int64_t until = now + interval_ms * 1000000;
    bool quit = false;
    for (;;) {
      const int64_t left = until - os::Now();
      if (left <= 0 || os::Interrupted()) break;
      const int key = term.ReadKey(static_cast<int>((left + 999999) / 1000000));
      if (key == 'q' || key == 'Q' || key == 3) {
        quit = true;
        break;
      }
    }
    if (quit) break;
  }
  os::Terminal::Write("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> names;
  bool json = false, list = false, watch = false, clean = false;
  int64_t timeout_ms = 2000, interval_ms = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--list") {
      list = true;
    } else if (a == "--watch") {
      watch = true;
    } else if (a == "--clean") {
      clean = true;
    } else if (a == "--timeout-ms" || a == "--interval-ms") {
      if (i + 1 >= argc || !ParseMs(argv[i + 1], a == "--timeout-ms" ? &timeout_ms : &interval_ms)) {
        return Usage(a + " needs a number of milliseconds (1..3600000)");
      }
      ++i;
    } else if (!a.empty() && a[0] == '-') {
      return Usage("unknown option " + a);
    } else {
      names.push_back(a);
    }
  }
  if (static_cast<int>(list) + static_cast<int>(watch) + static_cast<int>(clean) > 1) {
    return Usage("--list, --watch and --clean exclude each other");
  }
  if (list) {
    if (!names.empty()) return Usage("--list takes no name");
    return List(json);
  }
  if (names.size() != 1) return Usage("give exactly one segment name");
  if (auto r = shm::ValidateName(names[0]); !r) return Usage(r.error().message());
  if (clean) return Clean(names[0]);
  if (watch) {
    if (json) return Usage("--watch shows a terminal view; use NAME --json for scripts");
    return Watch(names[0], interval_ms);
  }
  return ShowOne(names[0], json, timeout_ms);
}

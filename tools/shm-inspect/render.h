// SPDX-License-Identifier: Apache-2.0
// shm-inspect's output: the terminal view (one-shot and --watch) and the JSON document (schema
// "shm-inspect/1", described in tools/shm-inspect/README.md). Portable: pure functions of a Snapshot and of
// what the OS layer found out about the host.
#pragma once

#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "snapshot.h"

namespace shm_inspect {

/// What the OS layer learned about the process that holds the name, from the kernel (never from the
/// segment's informational pids).
struct HostView {
  bool alive = false;     ///< A live process holds the name (its listening socket exists).
  bool answered = false;  ///< It answered the observer's hello and handed over the memory.
  uint32_t pid = 0;       ///< Its pid and uid, as the kernel recorded them for its socket.
  uint32_t uid = 0;
  int guest_connections = -1;  ///< Connected sockets bound to the name (the guest seat), -1 if unknown.
  std::string error;           ///< Why the memory could not be read, if it could not.
};

/// Figures --watch adds: rates since the previous refresh and how long each slot has been in its word.
struct WatchInfo {
  double interval_s = 0;           ///< Time since the previous refresh (0 on the first).
  double calls_per_s[2] = {0, 0};  ///< host to guest, guest to host
  double errors_per_s[2] = {0, 0};
  std::vector<int64_t> in_state_ns;  ///< per slot: at least this long in its current word; -1 unknown
};

namespace internal {

inline std::string Fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string Fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

inline std::string Bytes(uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return std::to_string(n >> 30) + " GiB";
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return std::to_string(n >> 20) + " MiB";
  if (n >= 1024 && n % 1024 == 0) return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " B";
}

inline std::string Seconds(int64_t ns) {
  if (ns < 0) return "?";
  const double s = static_cast<double>(ns) / 1e9;
  if (s < 10) return Fmt("%.2fs", s);
  if (s < 3600) return Fmt("%.0fs", s);
  return Fmt("%.1fh", s / 3600);
}

inline std::string JsonString(const std::string& v) {
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      out += Fmt("\\u%04x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

inline const char* WireErrorName(uint32_t e) { return wire::ToString(static_cast<wire::WireError>(e)); }

// "HandlerFailed 2, ResponseTooLarge 1" for the by-wire-error counters at base+1..base+7 (and the unknown
// ones at base itself when `with_unknown`).
inline std::string ByWireError(const uint64_t* c, uint32_t base, bool with_unknown) {
  std::string out;
  for (uint32_t e = 1; e <= wire::kCountedWireErrors; ++e) {
    if (c[base + e] == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::string(WireErrorName(e)) + " " + std::to_string(c[base + e]);
  }
  if (with_unknown && c[base] != 0) out += std::string(out.empty() ? "" : ", ") + "unknown " + std::to_string(c[base]);
  return out;
}

inline std::string GuestAttachedJson(const HostView& h, const Snapshot& s) {
  if (s.counters) return s.guest_attached == 1 ? "true" : "false";
  if (h.guest_connections >= 0) return h.guest_connections > 0 ? "true" : "false";
  return "null";
}

}  // namespace internal

/// "yes", "no" or "unknown": whether a guest holds the seat, from the host's record in the counters region,
/// else from the connected sockets of the name.
inline std::string GuestAttachedText(const HostView& h, const Snapshot& s) {
  const std::string j = internal::GuestAttachedJson(h, s);
  return j == "true" ? "yes" : j == "false" ? "no" : "unknown";
}

/// The terminal view. `now_ns`: CLOCK_MONOTONIC now (for ages); `w`: --watch figures, or null.
inline std::string RenderText(const std::string& name, const HostView& h, const Snapshot& s, int64_t now_ns,
                              const WatchInfo* w) {
  using internal::Fmt;
  std::string o;
  o += "segment " + name + "\n";
  if (!h.alive) {
    o += "  host      none: no live process holds this name\n";
    return o;
  }
  o +=
      Fmt("  host      pid %u (uid %u), alive (holds the name)%s\n", h.pid, h.uid, h.answered ? "" : ", NOT ANSWERING");
  if (!h.error.empty()) o += "  error     " + h.error + "\n";
  if (!h.answered) return o;
  if (!s.header_ok) {
    o += Fmt("  memory    %" PRIu64 " bytes, magic 0x%016" PRIx64 ", version %u: INVALID: %s\n", s.size, s.magic,
             s.version, s.error.c_str());
    return o;
  }
  const auto& g = s.geometry;
  o += Fmt("  protocol  %u   counters %s   size %s (segment %s)\n", s.version,
           s.counters ? std::to_string(s.counters_version).c_str() : "none", internal::Bytes(s.size).c_str(),
           internal::Bytes(s.total_size).c_str());
  o += Fmt("  slots     %u host x %s, %u guest x %s\n", g.host_slots, internal::Bytes(g.host_payload).c_str(),
           g.guest_slots, g.guest_slots ? internal::Bytes(g.guest_payload).c_str() : "-");
  o += Fmt("  state     %s   host_pid %u   doorbell 0x%08x", s.host_state == 1 ? "SHUTTING_DOWN" : "RUNNING",
           s.host_pid, s.doorbell);
  if (s.counters && s.host_since_ns != 0) {
    o += "   up " + internal::Seconds(now_ns - static_cast<int64_t>(s.host_since_ns));
  }
  o += "\n";
  o += Fmt("  guest     attached %s   pid %u   session %u", GuestAttachedText(h, s).c_str(), s.guest_pid,
           s.guest_session);
  if (s.counters && s.guest_since_ns != 0 && s.guest_attached == 1) {
    o += "   since " + internal::Seconds(now_ns - static_cast<int64_t>(s.guest_since_ns));
  }
  o += "\n";
  if (s.counters) {
    o += "\n";
    for (int d = 0; d < 2; ++d) {
      const bool host_dir = d == 0;
      if (!host_dir && g.guest_slots == 0) continue;
      const Direction dir = SumDirection(s, host_dir);
      o += Fmt("  %-13s calls %" PRIu64 "  errors %" PRIu64 "  out %" PRIu64 " B  in %" PRIu64 " B",
               host_dir ? "host->guest" : "guest->host", dir.caller[wire::kCalls], dir.caller_errors(),
               dir.caller[wire::kCallBytesOut], dir.caller[wire::kCallBytesIn]);
      if (w != nullptr && w->interval_s > 0)
        o += Fmt("  [%.0f calls/s, %.1f errors/s]", w->calls_per_s[d], w->errors_per_s[d]);
      o += "\n";
      o += Fmt("                timeout %" PRIu64 "  peer dead %" PRIu64 "  protocol %" PRIu64 "  ended %" PRIu64
               "  remote %" PRIu64,
               dir.caller[wire::kTimeouts], dir.caller[wire::kPeerDead], dir.caller[wire::kProtocol],
               dir.caller[wire::kEnded], dir.remote_errors());
      const std::string by = internal::ByWireError(dir.caller, wire::kRemoteBase, true);
      if (!by.empty()) o += " (" + by + ")";
      o += "\n";
      o += Fmt("                served %" PRIu64 "  late answers discarded %" PRIu64 "  lost %" PRIu64
               "  heartbeats %" PRIu64 "  error answers %" PRIu64,
               dir.server[wire::kServed], dir.server[wire::kLate], dir.server[wire::kLost],
               dir.server[wire::kHeartbeats], dir.answered_errors());
      const std::string ans = internal::ByWireError(dir.server, wire::kAnsweredBase, false);
      if (!ans.empty()) o += " (" + ans + ")";
      o += "\n";
    }
  }
  o += "\n  slot  kind   state       seq W  held by        in state   calls  errors  late  request / response\n";
  for (const SlotInfo& slot : s.slots) {
    std::string held = Holder(slot);
    const std::string side = HolderSide(slot);
    if (!side.empty()) held += " (" + side + ")";
    const bool dead_guest_holds = side == "guest" && GuestAttachedText(h, s) == "no";
    if (dead_guest_holds) held += " GONE";
    std::string age = "-";
    if (w != nullptr && slot.index < w->in_state_ns.size()) age = internal::Seconds(w->in_state_ns[slot.index]);
    const uint64_t* cb = slot.caller_block();
    uint64_t errors = 0;
    for (uint32_t i = wire::kTimeouts; i <= wire::kEnded; ++i) errors += cb[i];
    for (uint32_t i = wire::kRemoteBase; i < wire::kCountersPerBlock; ++i) errors += cb[i];
    std::string rr;
    if (slot.state() == 2 || slot.state() == 3 || slot.state() == 5) {
      rr = TypeName(slot.req_type) + " " + std::to_string(slot.req_size);
    } else if (slot.state() == 4) {
      rr = TypeName(slot.resp_type) + " " + std::to_string(slot.resp_size);
      if (slot.resp_type == static_cast<uint32_t>(shm::MsgType::SYSTEM_ERROR)) {
        rr += std::string(" ") + internal::WireErrorName(slot.resp_error);
      }
    }
    std::string line =
        Fmt("  %4u  %-5s  %-10s %5u %s  %-14s %8s %7" PRIu64 " %7" PRIu64 " %5" PRIu64 "  %s", slot.index,
            slot.host_slot ? "host" : "guest", StateName(slot.state()).c_str(), slot.seq(), slot.waiting() ? "W" : ".",
            held.c_str(), age.c_str(), cb[wire::kCalls], errors, slot.server_block()[wire::kLate], rr.c_str());
    while (!line.empty() && line.back() == ' ') line.pop_back();
    o += line + "\n";
  }
  if (s.slots.size() > 0) {
    o += "\n  held by: caller/server of the slot; queued = a request no server took yet; GONE = no guest is\n"
         "  attached, so a guest that died or left holds it\n";
  }
  return o;
}

/// The JSON document (one line, schema "shm-inspect/1").
inline std::string RenderJson(const std::string& name, const HostView& h, const Snapshot& s, int64_t now_ns) {
  using internal::Fmt;
  using internal::JsonString;
  auto u = [](uint64_t v) { return std::to_string(v); };
  std::string o = "{\"schema\":\"shm-inspect/1\",\"name\":" + JsonString(name);
  o += ",\"host\":{\"alive\":" + std::string(h.alive ? "true" : "false") +
       ",\"answered\":" + (h.answered ? "true" : "false") + ",\"pid\":" + u(h.pid) + ",\"uid\":" + u(h.uid) +
       ",\"error\":" + (h.error.empty() ? "null" : JsonString(h.error)) + "}";
  if (!h.answered) return o + ",\"segment\":null,\"guest\":null,\"counters\":null,\"directions\":null,\"slots\":[]}";
  o += ",\"segment\":{\"valid\":" + std::string(s.header_ok ? "true" : "false") +
       ",\"error\":" + (s.header_ok ? "null" : JsonString(s.error)) + ",\"size\":" + u(s.size) +
       ",\"magic\":" + u(s.magic) + ",\"version\":" + u(s.version);
  if (s.header_ok) {
    o += ",\"total_size\":" + u(s.total_size) + ",\"host_slots\":" + u(s.geometry.host_slots) +
         ",\"guest_slots\":" + u(s.geometry.guest_slots) + ",\"host_payload\":" + u(s.geometry.host_payload) +
         ",\"guest_payload\":" + u(s.geometry.guest_payload) +
         ",\"host_state\":" + (s.host_state == 1 ? "\"SHUTTING_DOWN\"" : "\"RUNNING\"") +
         ",\"host_pid\":" + u(s.host_pid) + ",\"doorbell\":" + u(s.doorbell);
  }
  o += "}";
  if (!s.header_ok) return o + ",\"guest\":null,\"counters\":null,\"directions\":null,\"slots\":[]}";
  o += ",\"guest\":{\"attached\":" + internal::GuestAttachedJson(h, s) + ",\"pid\":" + u(s.guest_pid) +
       ",\"session\":" + u(s.guest_session) + "}";
  if (s.counters) {
    o +=
        ",\"counters\":{\"version\":" + u(s.counters_version) +
        ",\"host_age_ns\":" + std::to_string(s.host_since_ns ? now_ns - static_cast<int64_t>(s.host_since_ns) : -1) +
        ",\"guest_age_ns\":" + std::to_string(s.guest_since_ns ? now_ns - static_cast<int64_t>(s.guest_since_ns) : -1) +
        "}";
  } else {
    o += ",\"counters\":null";
  }
  auto caller_json = [&](const uint64_t* c) {
    std::string r = "{\"calls\":" + u(c[wire::kCalls]) + ",\"bytes_out\":" + u(c[wire::kCallBytesOut]) +
                    ",\"bytes_in\":" + u(c[wire::kCallBytesIn]) + ",\"timeouts\":" + u(c[wire::kTimeouts]) +
                    ",\"peer_dead\":" + u(c[wire::kPeerDead]) + ",\"protocol\":" + u(c[wire::kProtocol]) +
                    ",\"ended\":" + u(c[wire::kEnded]) + ",\"remote\":{\"unknown\":" + u(c[wire::kRemoteBase]);
    for (uint32_t e = 1; e <= wire::kCountedWireErrors; ++e) {
      r += ",\"" + std::string(internal::WireErrorName(e)) + "\":" + u(c[wire::kRemoteBase + e]);
    }
    return r + "}}";
  };
  auto server_json = [&](const uint64_t* c) {
    std::string r = "{\"served\":" + u(c[wire::kServed]) + ",\"bytes_in\":" + u(c[wire::kServeBytesIn]) +
                    ",\"bytes_out\":" + u(c[wire::kServeBytesOut]) + ",\"late\":" + u(c[wire::kLate]) +
                    ",\"lost\":" + u(c[wire::kLost]) + ",\"heartbeats\":" + u(c[wire::kHeartbeats]) + ",\"answered\":{";
    for (uint32_t e = 1; e <= wire::kCountedWireErrors; ++e) {
      r += std::string(e == 1 ? "" : ",") + "\"" + internal::WireErrorName(e) + "\":" + u(c[wire::kAnsweredBase + e]);
    }
    return r + "}}";
  };
  if (s.counters) {
    const Direction hg = SumDirection(s, true), gh = SumDirection(s, false);
    o += ",\"directions\":{\"host_to_guest\":{\"caller\":" + caller_json(hg.caller) +
         ",\"server\":" + server_json(hg.server) + "},\"guest_to_host\":{\"caller\":" + caller_json(gh.caller) +
         ",\"server\":" + server_json(gh.server) + "}}";
  } else {
    o += ",\"directions\":null";
  }
  o += ",\"slots\":[";
  for (const SlotInfo& slot : s.slots) {
    if (slot.index != 0) o += ",";
    const std::string side = HolderSide(slot);
    o += "{\"index\":" + u(slot.index) + ",\"kind\":" + (slot.host_slot ? "\"host\"" : "\"guest\"") +
         ",\"ctl\":" + u(slot.ctl) + ",\"state\":" + JsonString(StateName(slot.state())) + ",\"seq\":" + u(slot.seq()) +
         ",\"waiting\":" + (slot.waiting() ? "true" : "false") + ",\"holder\":" + JsonString(Holder(slot)) +
         ",\"holder_side\":" + (side.empty() ? "null" : JsonString(side)) + ",\"req_type\":" + u(slot.req_type) +
         ",\"req_size\":" + std::to_string(slot.req_size) + ",\"resp_type\":" + u(slot.resp_type) +
         ",\"resp_size\":" + std::to_string(slot.resp_size) + ",\"resp_error\":" + u(slot.resp_error);
    if (s.counters) {
      o += ",\"caller\":" + caller_json(slot.caller_block()) + ",\"server\":" + server_json(slot.server_block());
    } else {
      o += ",\"caller\":null,\"server\":null";
    }
    o += "}";
  }
  return o + "]}";
}

}  // namespace shm_inspect

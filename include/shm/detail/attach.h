// SPDX-License-Identifier: Apache-2.0
// The attach handshake, both ends (SPECIFICATION.md §4). The host's Doorman serves the rendezvous socket on a
// thread of its own: it admits peers by their kernel-recorded credentials, hands a guest the segment's memfd,
// holds the guest seat, and tells the host's endpoint the moment the guest's connection closes. The guest's
// AttachOnce connects, checks who listens, asks, and maps what it is given only after checking its seals.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "shm/detail/endpoint.h"
#include "shm/detail/segment.h"
#include "shm/error.h"
#include "shm/log.h"
#include "shm/platform/platform.h"
#include "shm/wire/layout.h"

namespace shm {
namespace detail {

/// Who may attach: the segment's permission bits applied to the peer's credentials (SPECIFICATION.md §4.1).
struct AdmissionPolicy {
  uint32_t mode = 0600;  ///< Owner, group and other classes, as file permission bits.
  uint32_t uid = 0;      ///< The owner: the host's effective uid.
  uint32_t gid = 0;      ///< The group the group bits apply to.

  /// The permission bits (rwx, 0-7) of the class `peer` falls in.
  uint32_t ClassBits(const platform::PeerCredentials& peer) const noexcept {
    if (peer.uid == uid || peer.uid == 0) return (mode >> 6) & 7;
    const bool member = peer.gid == gid || std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end();
    return member ? (mode >> 3) & 7 : mode & 7;
  }
  /// Whether `peer` may ask for anything at all (it can at least read).
  bool MayAsk(const platform::PeerCredentials& peer) const noexcept { return (ClassBits(peer) & 4) != 0; }
  bool Admits(const platform::PeerCredentials& peer, wire::AttachRole role) const noexcept {
    const uint32_t need = role == wire::AttachRole::kGuest ? 6 : 4;
    return (ClassBits(peer) & need) == need;
  }
};

/// How long the host waits for a connected peer's hello before dropping it.
constexpr int64_t kHelloTimeoutNs = 1000000000;

/// The host's end of the rendezvous: a thread that sleeps in poll() on the listening socket and the guest's
/// connection. Owned by DirectHost. Start/Stop are not thread-safe against each other; Stop is idempotent and
/// may be called from any thread but the doorman's own (it joins it).
class Doorman {
 public:
  Doorman() = default;
  Doorman(const Doorman&) = delete;
  Doorman& operator=(const Doorman&) = delete;
  ~Doorman() { Stop(); }

  /// Serve `listener` (bound and listening) from now on, before the segment exists: connections are accepted
  /// at once (so a second host probing the name always learns this one's pid) and wait for Open().
  Result<void> Start(platform::File listener, AdmissionPolicy policy) {
    if (auto r = wake_.Open(); !r) return r;
    listener_ = std::move(listener);
    policy_ = policy;
    stop_.store(false, std::memory_order_seq_cst);
    thread_ = std::thread([this] { Run(); });
    return Ok();
  }

  /// The segment of `ep` is ready: answer the connections that waited, and every later one.
  void Open(std::shared_ptr<Endpoint> ep) {
    ep_ = std::move(ep);
    ready_.store(true, std::memory_order_release);  // publishes ep_ to the doorman's thread
    wake_.Signal();
  }

  /// End the thread, free the name (close the listening socket) and close the guest's connection, which the
  /// guest sees as the host gone.
  void Stop() {
    if (!thread_.joinable()) return;
    stop_.store(true, std::memory_order_seq_cst);
    wake_.Signal();
    thread_.join();
    listener_.Close();
    waiting_.clear();
    if (guest_.valid()) GuestGone();
    ep_.reset();
    ready_.store(false, std::memory_order_relaxed);
  }

 private:
  void Run() {
    while (!stop_.load(std::memory_order_seq_cst)) {
      const platform::Handle fds[3] = {wake_.file().fd(), listener_.fd(),
                                       guest_.valid() ? guest_.fd() : platform::kNoHandle};
      short revents[3] = {0, 0, 0};
      platform::PollFiles(fds, revents, 3, -1);
      if (stop_.load(std::memory_order_seq_cst)) break;
      if (revents[0] != 0) wake_.Drain();
      if (!ready_.load(std::memory_order_acquire)) {
        if (revents[1] != 0) Park();
        continue;
      }
      for (auto& c : waiting_) Admit(std::move(c));
      waiting_.clear();
      // The guest's connection first: a seat freed in this same poll goes to the newcomer.
      if (guest_.valid() && revents[2] != 0) CheckGuest();
      if (revents[1] != 0) AcceptPending();
    }
  }

  // Drain what the guest sent (nothing is expected after the hello) and notice its end of file.
  void CheckGuest() {
    uint8_t sink[64];
    for (;;) {
      auto rec = platform::ReceiveRecord(guest_, sink, sizeof sink);
      if (!rec) {
        if (rec.error().code() == ErrorCode::kNotFound) return;  // nothing more: still attached
        GuestGone();                                             // a failing connection proves nothing alive
        return;
      }
      if (rec->size == 0 && !rec->truncated && rec->files.empty()) {
        GuestGone();
        return;
      }
    }
  }

  void GuestGone() {
    Log(LogLevel::kInfo, "guest pid " + std::to_string(guest_pid_) + " left");
    guest_.Close();
    guest_pid_ = 0;
    ep_->OnGuestGone();  // callers sleeping on a request to it test liveness at once
  }

  // Before the segment exists: accept and keep connections for later, a bounded number (the oldest waiting
  // one is dropped first: it was most likely a probe that has left; a guest dropped so retries).
  void Park() {
    for (;;) {
      auto conn = platform::AcceptConnection(listener_);
      if (!conn || !conn->valid()) return;
      if (waiting_.size() >= kMaxWaiting) waiting_.erase(waiting_.begin());
      waiting_.push_back(std::move(*conn));
    }
  }

  void AcceptPending() {
    for (;;) {
      auto conn = platform::AcceptConnection(listener_);
      if (!conn) {
        Log(LogLevel::kWarn, "segment rendezvous: " + conn.error().ToString());
        platform::SleepNs(10000000);  // e.g. out of descriptors: do not spin on a readable listener
        return;
      }
      if (!conn->valid()) return;
      Admit(std::move(*conn));
    }
  }

  void Reply(const platform::File& conn, wire::AttachStatus status, uint32_t detail,
             const platform::File* attach = nullptr) {
    wire::AttachReply r;
    r.status = static_cast<uint32_t>(status);
    r.host_pid = platform::ProcessId();
    r.detail = detail;
    (void)platform::SendRecord(conn, &r, sizeof r, attach);
  }

  // Wait for `conn`'s hello (at most kHelloTimeoutNs) while still watching the guest's connection, so a
  // slow newcomer cannot delay noticing that the attached guest died.
  bool AwaitHello(const platform::File& conn) {
    const int64_t deadline = platform::DeadlineAfter(kHelloTimeoutNs);
    for (;;) {
      const int64_t now = platform::MonotonicNs();
      if (now >= deadline || stop_.load(std::memory_order_seq_cst)) return false;
      const platform::Handle fds[3] = {wake_.file().fd(), conn.fd(),
                                       guest_.valid() ? guest_.fd() : platform::kNoHandle};
      short revents[3] = {0, 0, 0};
      platform::PollFiles(fds, revents, 3, static_cast<int>((deadline - now + 999999) / 1000000));
      if (revents[0] != 0) return false;
      if (guest_.valid() && revents[2] != 0) CheckGuest();
      if (revents[1] != 0) return true;
    }
  }

  void Deny(const platform::File& conn, const platform::PeerCredentials& peer) {
    Log(LogLevel::kWarn, "refused pid " + std::to_string(peer.pid) + " (uid " + std::to_string(peer.uid) +
                             "): the segment's mode does not admit it");
    Reply(conn, wire::AttachStatus::kDenied, 0);
  }

  void Admit(platform::File conn) {
    auto peer = platform::PeerCredentialsOf(conn, true);
    if (!peer) return;
    // A peer that may not even read is refused before it can make this thread wait for its hello.
    if (!policy_.MayAsk(*peer)) return Deny(conn, *peer);
    if (!AwaitHello(conn)) return;
    wire::Hello hello;
    auto rec = platform::ReceiveRecord(conn, &hello, sizeof hello);
    if (!rec || rec->size == 0) return;  // gone before asking (a second host probing the name)
    if (rec->size != sizeof hello || rec->truncated || !rec->files.empty() || hello.magic != wire::kHelloMagic) {
      return Reply(conn, wire::AttachStatus::kBadHello, 0);
    }
    if (hello.version != wire::kVersion) return Reply(conn, wire::AttachStatus::kVersionMismatch, wire::kVersion);
    const auto role = static_cast<wire::AttachRole>(hello.role);
    if (role != wire::AttachRole::kGuest && role != wire::AttachRole::kObserver) {
      return Reply(conn, wire::AttachStatus::kBadHello, 0);
    }
    if (!policy_.Admits(*peer, role)) return Deny(conn, *peer);
    if (ep_->closing() || ep_->host_shutting_down()) return Reply(conn, wire::AttachStatus::kShuttingDown, 0);
    if (role == wire::AttachRole::kObserver) {
      auto ro = platform::ReopenReadOnly(ep_->segment().file());
      if (!ro) return Reply(conn, wire::AttachStatus::kDenied, 0);
      return Reply(conn, wire::AttachStatus::kAccepted, 0, &*ro);
    }
    if (guest_.valid()) CheckGuest();
    if (guest_.valid()) {
      Log(LogLevel::kDebug, "refused guest pid " + std::to_string(peer->pid) + ": the guest seat is held by pid " +
                                std::to_string(guest_pid_));
      return Reply(conn, wire::AttachStatus::kBusy, guest_pid_);
    }
    wire::AttachReply r;
    r.status = static_cast<uint32_t>(wire::AttachStatus::kAccepted);
    r.host_pid = platform::ProcessId();
    // Attached before the guest can act on the reply: a caller must never see a request served by a guest the
    // host does not know of yet (it would take it for dead).
    guest_pid_ = peer->pid;
    ep_->OnGuestAttached();
    if (!platform::SendRecord(conn, &r, sizeof r, &ep_->segment().file())) {
      GuestGone();
      return;
    }
    guest_ = std::move(conn);
    Log(LogLevel::kInfo, "guest pid " + std::to_string(guest_pid_) + " attached");
  }

  platform::File listener_;
  static constexpr size_t kMaxWaiting = 64;
  std::vector<platform::File> waiting_;  // accepted before the segment was ready
  std::atomic<bool> ready_{false};
  platform::File guest_;  // the guest seat: the attached guest's connection
  uint32_t guest_pid_ = 0;
  platform::Wakeup wake_;
  std::shared_ptr<Endpoint> ep_;
  AdmissionPolicy policy_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// What a guest or observer gets from one successful handshake.
struct Attached {
  Segment segment;
  platform::File link;  ///< The connection: the guest seat, and the host's liveness (SPECIFICATION.md §2).
  uint32_t host_pid = 0;
};

/// One attempt at SPECIFICATION.md §4.2 steps 1–5, waiting for the host's reply until `deadline_ns`.
/// kNotFound and kGuestAlreadyConnected mean "try again"; every other error is final.
inline Result<Attached> AttachOnce(const std::string& name, wire::AttachRole role, int64_t deadline_ns) {
  auto conn = platform::ConnectRendezvous(name);
  if (!conn) return std::move(conn).error();
  auto host = platform::PeerCredentialsOf(*conn, false);
  if (!host) return std::move(host).error();
  const uint32_t me = platform::EffectiveUserId();
  if (host->uid != me && host->uid != 0) {
    return Error(ErrorCode::kPermissionDenied, "segment name " + name + " is held by pid " + std::to_string(host->pid) +
                                                   " of uid " + std::to_string(host->uid) +
                                                   ", not by this user or root");
  }
  wire::Hello hello;
  hello.role = static_cast<uint32_t>(role);
  // A host that refuses this peer before its hello (DENIED) may have closed already: the send fails, and the
  // refusal is still there to read.
  (void)platform::SendRecord(*conn, &hello, sizeof hello);
  wire::AttachReply reply;
  platform::Record rec;
  for (;;) {
    if (!platform::WaitReadable(*conn, deadline_ns)) {
      return Error(ErrorCode::kNotFound, "the host of " + name + " did not answer in time");
    }
    auto r = platform::ReceiveRecord(*conn, &reply, sizeof reply);
    if (r) {
      rec = std::move(*r);
      break;
    }
    if (r.error().code() != ErrorCode::kNotFound) return std::move(r).error();
  }
  if (rec.size == 0 && !rec.truncated && rec.files.empty()) {
    return Error(ErrorCode::kNotFound, "the host of " + name + " closed the connection without an answer");
  }
  auto bad = [&](const std::string& why) { return Error(ErrorCode::kProtocol, "host of " + name + ": " + why); };
  if (rec.size != sizeof reply || rec.truncated || reply.reserved != 0) return bad("malformed attach reply");
  const auto status = static_cast<wire::AttachStatus>(reply.status);
  if (status != wire::AttachStatus::kAccepted && !rec.files.empty()) return bad("descriptor with a refusal");
  switch (status) {
    case wire::AttachStatus::kAccepted: break;
    case wire::AttachStatus::kBusy:
      return Error(ErrorCode::kGuestAlreadyConnected,
                   "segment " + name + " already has a live guest (pid " + std::to_string(reply.detail) + ")");
    case wire::AttachStatus::kDenied:
      return Error(ErrorCode::kPermissionDenied,
                   "the host of " + name + " (pid " + std::to_string(reply.host_pid) + ") does not admit this user");
    case wire::AttachStatus::kVersionMismatch:
      return Error(ErrorCode::kVersionMismatch, "the host of " + name + " speaks protocol version " +
                                                    std::to_string(reply.detail) + "; this library speaks " +
                                                    std::to_string(wire::kVersion));
    case wire::AttachStatus::kShuttingDown:
      return Error(ErrorCode::kNotFound, "the host of " + name + " is shutting down");
    case wire::AttachStatus::kBadHello: return bad("it refused the hello");
    default: return bad("unknown attach status " + std::to_string(reply.status));
  }
  if (rec.files.size() != 1) return bad(std::to_string(rec.files.size()) + " descriptors instead of one");
  auto seg = Segment::FromDescriptor(std::move(rec.files[0]), role == wire::AttachRole::kGuest);
  if (!seg) return std::move(seg).error();
  Attached a;
  a.segment = std::move(*seg);
  a.link = std::move(*conn);
  a.host_pid = reply.host_pid;
  return a;
}

/// Map a live host's segment read-only, as an observer (tools, tests), retrying until `deadline_ns` while no
/// host answers. Never takes the guest seat, never writes. Errors as AttachOnce.
inline Result<Segment> Observe(const std::string& name, int64_t deadline_ns) {
  for (;;) {
    auto a = AttachOnce(name, wire::AttachRole::kObserver, deadline_ns);
    if (a) return std::move(a->segment);
    if (a.error().code() != ErrorCode::kNotFound || platform::MonotonicNs() >= deadline_ns) {
      return std::move(a).error();
    }
    platform::SleepNs(std::min<int64_t>(10000000, deadline_ns - platform::MonotonicNs()));
  }
}

}  // namespace detail
}  // namespace shm

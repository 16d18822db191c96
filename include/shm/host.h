// SPDX-License-Identifier: Apache-2.0
// shm — DirectHost: creates a named segment, calls the guest, and serves the guest's calls.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/detail/attach.h"
#include "shm/detail/copy_call.h"
#include "shm/detail/endpoint.h"
#include "shm/detail/segment.h"
#include "shm/error.h"
#include "shm/handler.h"
#include "shm/stats.h"
#include "shm/zero_copy_slot.h"

namespace shm {

/// The host side of a segment.
///
/// Lifetime: Init() takes the name (binds its rendezvous socket) and creates the segment's memory; the name is
/// held until Shutdown() or destruction, and the kernel frees it if the process dies, so the next host can
/// take it at once. A thread of the host's (the doorman) hands the segment to admitted guests and notices a
/// guest's death the moment its connection closes.
/// Thread safety: Init() and the destructor must not race with other calls. Every other method is thread-safe:
/// any number of threads may Send concurrently (each call uses its own slot), and Shutdown() may be called
/// while calls are in flight (they end with kClosed). What the guest-call handler may call: handler.h.
/// Errors after shutting down: once SendShutdown() has been called, further calls fail with kShuttingDown;
/// once Shutdown() has run (or before Init()), every call fails with kClosed.
class DirectHost {
 public:
  DirectHost() = default;
  DirectHost(const DirectHost&) = delete;
  DirectHost& operator=(const DirectHost&) = delete;
  /// Shutdown(), then unmaps. Never blocks longer than the guest-call worker takes to notice (one handler call).
  /// Must not run in the guest-call handler.
  ~DirectHost() {
    Shutdown();
    Stop();  // joins a worker that was stopped from its own handler
    if (ep_) ep_->Detach();
    ep_.reset();
  }

  /// Validate `config`, take the name, create and initialise the segment, start admitting guests. Allowed
  /// again after Shutdown(). Errors: kInvalidArgs (the message names the field), kHostAlreadyRunning (names the
  /// holder's pid and uid), kSystem.
  Result<void> Init(const HostConfig& config) {
    if (ep_ && !shut_down_.load()) return Error(ErrorCode::kInvalidArgs, "DirectHost is already initialised");
    auto geometry = ValidateHostConfig(config);
    if (!geometry) return std::move(geometry).error();
    if (ep_) ep_->Detach();  // a host that was shut down may be initialised again
    ep_.reset();
    doorman_.Stop();
    // The name first, so that a second host learns this one's pid from the moment it is taken.
    auto listener = platform::ListenRendezvous(config.name);
    if (!listener) return std::move(listener).error();
    detail::AdmissionPolicy policy;
    policy.mode = config.mode;
    policy.uid = platform::EffectiveUserId();
    policy.gid = config.group == HostConfig::kOwnGroup ? platform::EffectiveGroupId() : config.group;
    if (auto r = doorman_.Start(std::move(*listener), policy); !r) return r;
    auto segment = detail::Segment::Create(config.name, *geometry);
    if (!segment) {
      doorman_.Stop();
      return std::move(segment).error();
    }
    auto ep = std::make_shared<detail::Endpoint>(std::move(*segment), detail::Role::kHost, config.default_timeout);
    if (config.latency_histogram) ep->EnableLatencyHistogram();
    ep->SetTransferLimits(config.transfers);
    doorman_.Open(ep);
    ep_ = std::move(ep);
    name_ = config.name;
    shut_down_.store(false);
    return Ok();
  }

  /// Call the guest on any free host slot: copy `request` in, wait for the answer, copy its bytes into
  /// `response`. Returns the answer's type. The slot stays parked for this thread's next Send, which then
  /// skips claiming one (see ReleaseParkedSlots). A request or answer larger than the slot travels in chunks
  /// on that one slot (SPECIFICATION.md §8.5), up to the guest's limit for requests (kRemote RequestTooLarge
  /// beyond it) and options.max_response_size or HostConfig::transfers.max_message_size for answers
  /// (kTooLarge beyond it); see Call for messages that should not be held twice in memory. Errors: kTimeout
  /// (the deadline covers every chunk), kNoFreeSlot, kTooLarge, kInvalidArgs
  /// (reserved type, or a null request with a non-zero size), kRemote (the guest answered SYSTEM_ERROR: see
  /// Error::remote()), kPeerDead, kShuttingDown (after SendShutdown), kProtocol, kClosed (not initialised, or
  /// Shutdown: a call in flight then ends with it too). Thread-safe.
  Result<MsgType> Send(Bytes request, MsgType type, std::vector<uint8_t>& response, const CallOptions& options = {}) {
    return SendOn(-1, request, type, response, options);
  }

  /// Like Send, on slot `slot` (0 <= slot < host_slots()); waits while that slot is busy (kSlotBusy at the
  /// deadline). A slot parked by any thread of this process is not busy. Errors: those of Send, kSlotBusy
  /// instead of kNoFreeSlot, and kInvalidArgs for a slot that does not exist. Thread-safe.
  Result<MsgType> SendToSlot(uint32_t slot, Bytes request, MsgType type, std::vector<uint8_t>& response,
                             const CallOptions& options = {}) {
    if (ep_ && slot >= ep_->segment().geometry().host_slots) {
      return Error(ErrorCode::kInvalidArgs, "slot " + std::to_string(slot) + " does not exist; there are " +
                                                std::to_string(ep_->segment().geometry().host_slots));
    }
    return SendOn(slot, request, type, response, options);
  }

  /// Call the guest with a request of any size read from `request` (written chunk by chunk straight into the
  /// slot) and put the answer where `response` says (the caller's own memory: copied straight from the slot,
  /// never zeroed). Small messages take the same single transaction as Send. Returns the answer's type and
  /// size. `slot` < 0: any free slot, else that one (as SendToSlot). Errors: those of Send and SendToSlot;
  /// kInvalidArgs also when the Source fails; kTooLarge when the Sink gives no room. Thread-safe.
  Result<Received> Call(const Source& request, MsgType type, const Sink& response, const CallOptions& options = {},
                        int64_t slot = -1) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    if (slot >= 0 && slot >= static_cast<int64_t>((*ep)->segment().geometry().host_slots)) {
      return Error(ErrorCode::kInvalidArgs, "slot " + std::to_string(slot) + " does not exist; there are " +
                                                std::to_string((*ep)->segment().geometry().host_slots));
    }
    return detail::MessageCall(**ep, slot, request, type, response, options);
  }

  /// Free the host slots that copying Sends keep parked for their threads' next call. Never needed for
  /// correctness: any call of this process takes a parked slot when no slot is free. For tools and tests that
  /// count free slots from outside, where a parked slot looks held (RESPONSE). Thread-safe.
  void ReleaseParkedSlots() noexcept {
    if (auto ep = ep_) ep->ReleaseAllParked();
  }

  /// Hold a free host slot for zero-copy calls (see ZeroCopySlot). Errors: kNoFreeSlot at the deadline,
  /// kShuttingDown (after SendShutdown), kClosed (not initialised, or Shutdown). Thread-safe.
  Result<ZeroCopySlot> GetZeroCopySlot(Duration timeout = kUseDefault) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    uint32_t seq = 0;
    auto index = (*ep)->ClaimAny((*ep)->Deadline(timeout), &seq);
    if (!index) return std::move(index).error();
    return ZeroCopySlot(ep_, (*ep)->segment().Slot(*index), seq);
  }

  /// Serve guest calls on a worker thread until Stop() or Shutdown(). The worker sleeps on the doorbell
  /// futex when idle (no polling) and wakes at once on a call. Errors: kInvalidArgs (already started, called
  /// from the guest-call handler, no handler, or no guest slots), kShuttingDown (after SendShutdown), kClosed
  /// (not initialised, or Shutdown). Thread-safe. If the handler stopped its own worker, Start waits for that
  /// handler to return.
  Result<void> Start(Handler guest_call_handler) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    if (!guest_call_handler) return Error(ErrorCode::kInvalidArgs, "Start needs a handler");
    if ((*ep)->slot_count(detail::Role::kGuest) == 0) {
      return Error(ErrorCode::kInvalidArgs, "this segment has no guest slots (guest_slots = 0): nothing to serve");
    }
    if (OnWorkerThread()) {
      return Error(ErrorCode::kInvalidArgs, "Start was called from the guest-call handler: its worker still runs");
    }
    std::lock_guard<std::mutex> lock(worker_mu_);
    if (worker_.joinable()) {
      if (!stop_worker_.load(std::memory_order_seq_cst)) {
        return Error(ErrorCode::kInvalidArgs, "the guest-call worker is already running");
      }
      worker_.join();  // stopped from its own handler; nothing it may still call takes worker_mu_
    }
    stop_worker_.store(false, std::memory_order_seq_cst);
    worker_ = std::thread([this, ep = ep_, h = std::move(guest_call_handler)] {
      WorkerOf() = this;
      while (!stop_worker_.load(std::memory_order_seq_cst) && !ep->closing()) {
        auto pending = WaitOn(*ep, std::chrono::seconds(1), &stop_worker_);
        if (!pending) break;  // a wait that failed fails again at once: retrying would spin
        if (*pending) (void)ProcessOn(*ep, h, SIZE_MAX);
      }
    });
    return Ok();
  }

  /// Stop the guest-call worker and wait for it (it finishes the call it is serving). Idempotent. Thread-safe.
  /// From the guest-call handler it cannot wait: the worker ends once the handler returns, and the destructor,
  /// the next Start() or a Stop() from another thread joins it.
  void Stop() {
    if (OnWorkerThread()) {
      stop_worker_.store(true, std::memory_order_seq_cst);
      return;
    }
    std::lock_guard<std::mutex> lock(worker_mu_);
    if (!worker_.joinable()) return;
    stop_worker_.store(true, std::memory_order_seq_cst);
    if (ep_) ep_->RingDoorbell();  // changes the doorbell word and wakes the worker
    worker_.join();
  }

  /// Serve up to `limit` pending guest calls on the calling thread, without blocking. Returns how many were
  /// served. Each call is served exactly once even with several concurrent processors. Errors: kShuttingDown
  /// (after SendShutdown), kClosed (not initialised, or Shutdown). Thread-safe.
  Result<size_t> ProcessGuestCalls(const Handler& handler, size_t limit = SIZE_MAX) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    return ProcessOn(**ep, handler, limit);
  }

  /// Block until a guest call is pending (true), or the timeout passes (false). For hosts that serve guest
  /// calls from their own loop with ProcessGuestCalls. Errors: kInvalidArgs (no guest slots), kShuttingDown
  /// (after SendShutdown), kClosed (not initialised, or Shutdown: a wait in flight then ends with it too).
  /// Thread-safe.
  Result<bool> WaitForGuestCalls(Duration timeout = kUseDefault) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    return WaitOn(**ep, timeout, nullptr);
  }

  /// Tell the guest to stop: every guest worker exits, guest calls are refused with kShuttingDown, and so are
  /// this host's further calls until Shutdown(). Idempotent until Shutdown(). Errors: kClosed (not
  /// initialised, or Shutdown). Thread-safe.
  Result<void> SendShutdown() {
    auto ep = ep_;
    if (!ep) return Error(ErrorCode::kClosed, "DirectHost is not initialised");
    if (ep->closing()) return Error(ErrorCode::kClosed, "DirectHost is shut down");
    AnnounceShutdown(*ep);
    return Ok();
  }

  /// SendShutdown(), end every in-flight call with kClosed, stop the worker, free the name and close the
  /// guest's connection. Never waits for the guest: a slot still held by a guest's late handler is
  /// simply left behind. Idempotent. Thread-safe. From the guest-call handler it does not wait for the worker
  /// (see Stop()); the call the handler serves may then end with kHostGone for the guest.
  void Shutdown() {
    if (!ep_ || shut_down_.exchange(true)) return;
    ep_->set_closing();  // before the nudge, so woken callers see it too
    AnnounceShutdown(*ep_);
    ep_->ReleaseAllParked();
    ep_->ReclaimAllQuarantined();
    Stop();
    doorman_.Stop();  // frees the name; the guest sees its connection close
  }

  /// Whether a guest is attached (holds the guest seat). A load, no system call. Thread-safe.
  bool GuestAttached() const { return ep_ && !shut_down_.load() && ep_->PeerAlive(); }
  /// Whether Init succeeded (it stays true after Shutdown, whose calls then fail with kClosed). Thread-safe.
  bool initialized() const noexcept { return ep_ != nullptr; }
  /// The segment name given to Init (empty before). The reference stays valid as long as this object.
  const std::string& name() const noexcept { return name_; }
  /// Number of host-to-guest slots; 0 before Init. Thread-safe.
  uint32_t host_slots() const noexcept { return ep_ ? ep_->segment().geometry().host_slots : 0; }
  /// Number of guest-to-host slots (0: no guest calls); 0 before Init. Thread-safe.
  uint32_t guest_slots() const noexcept { return ep_ ? ep_->segment().geometry().guest_slots : 0; }
  /// Capacity of each host slot's request and response buffer (payload_size rounded up to 64).
  uint32_t payload_capacity() const noexcept { return ep_ ? ep_->segment().geometry().host_payload : 0; }
  /// This host's counters (SPECIFICATION.md §5.4): its calls to the guest (calls, call_slots: host slot i at
  /// [i]) and its serving of guest calls (served, serve_slots: guest slot j at [j]), counted since Init(); the
  /// latency histogram if HostConfig::latency_histogram. They live in the segment, where shm-inspect reads
  /// them. Empty before Init(); after Shutdown() the counts of the last segment. Thread-safe, any time: each
  /// counter is read once with an atomic load, so the set is not one consistent snapshot while calls run.
  StatsSnapshot Stats() const {
    if (!ep_) return StatsSnapshot();
    return ep_->ReadStats();
  }
  /// The current spin budget before sleeping, learned from measured wake-up costs (ns).
  int64_t spin_budget_ns() const noexcept { return ep_ ? ep_->spin().budget_ns() : 0; }

 private:
  // The DirectHost whose guest-call worker runs on this thread, if any: a handler's Stop() must not join
  // its own thread.
  static const DirectHost*& WorkerOf() noexcept {
    thread_local const DirectHost* host = nullptr;
    return host;
  }
  bool OnWorkerThread() const noexcept { return WorkerOf() == this; }

  // The endpoint, if calls may use it. A plain pointer, not a copy of ep_: copying a shared_ptr is an atomic
  // read-modify-write on a line every caller thread shares. Safe because ep_ changes only in Init() and the
  // destructor, which must not race with calls (the class contract); Shutdown() keeps it.
  Result<detail::Endpoint*> Live() const {
    detail::Endpoint* ep = ep_.get();
    if (!ep) return Error(ErrorCode::kClosed, "DirectHost is not initialised");
    if (ep->closing()) return Error(ErrorCode::kClosed, "DirectHost is shut down");
    if (ep->host_shutting_down()) return Error(ErrorCode::kShuttingDown, "SendShutdown() was called");
    return ep;
  }

  // host_state = SHUTTING_DOWN, then every sleeper re-checks (SPECIFICATION.md §9).
  static void AnnounceShutdown(detail::Endpoint& ep) noexcept {
    ep.header().host_state.store(static_cast<uint32_t>(wire::HostState::kShuttingDown), std::memory_order_seq_cst);
    ep.NudgeAll();
    ep.RingDoorbell();
  }

  Result<MsgType> SendOn(int64_t slot, Bytes request, MsgType type, std::vector<uint8_t>& response,
                         const CallOptions& options) {
    auto ep = Live();
    if (!ep) return std::move(ep).error();
    return detail::CopyCall(**ep, slot, request, type, response, options);
  }

  static bool AnyPending(detail::Endpoint& ep) noexcept {
    const uint32_t first = ep.first_slot(detail::Role::kGuest), n = ep.slot_count(detail::Role::kGuest);
    for (uint32_t i = 0; i < n; ++i) {
      if (wire::CtlIs(ep.segment().Slot(first + i).header->ctl.load(std::memory_order_acquire),
                      wire::SlotState::kRequest)) {
        return true;
      }
    }
    return false;
  }

  static Result<bool> WaitOn(detail::Endpoint& ep, Duration timeout, const std::atomic<bool>* stop) {
    if (ep.slot_count(detail::Role::kGuest) == 0) {
      return Error(ErrorCode::kInvalidArgs, "this segment has no guest slots (guest_slots = 0)");
    }
    uint32_t v = 0;
    auto st = detail::WaitFor(
        ep.header().doorbell, nullptr, ep.Deadline(timeout), ep.spin(), [&](uint32_t) { return AnyPending(ep); },
        [&](bool) { return ep.closing() || (stop != nullptr && stop->load(std::memory_order_seq_cst)); }, &v,
        wire::kDoorbellWaiting);
    if (st == detail::WaitStatus::kReady) return true;
    if (st == detail::WaitStatus::kTimeout) return false;
    if (ep.closing()) return Error(ErrorCode::kClosed, "DirectHost is shut down");
    return false;  // the worker was asked to stop
  }

  static size_t ProcessOn(detail::Endpoint& ep, const Handler& handler, size_t limit) {
    const uint32_t first = ep.first_slot(detail::Role::kGuest), n = ep.slot_count(detail::Role::kGuest);
    ep.transfers().Sweep(first, n, false);  // large guest calls the guest stopped sending (one load when none)
    size_t served = 0;
    bool progress = true;
    while (progress && served < limit) {
      progress = false;
      for (uint32_t i = 0; i < n && served < limit; ++i) {
        const detail::SlotView s = ep.segment().Slot(first + i);
        uint32_t seq = 0;
        if (!wire::CtlIs(s.header->ctl.load(std::memory_order_relaxed), wire::SlotState::kRequest)) continue;
        detail::Endpoint::PrefetchForServe(s);
        if (!detail::TryTake(*s.header, &seq)) continue;
        (void)ep.Serve(s, seq, &handler, ep.host_shutting_down());
        ++served;
        progress = true;
      }
    }
    return served;
  }

  std::shared_ptr<detail::Endpoint> ep_;
  detail::Doorman doorman_;
  std::string name_;
  std::atomic<bool> shut_down_{false};
  std::mutex worker_mu_;
  std::thread worker_;
  std::atomic<bool> stop_worker_{false};
};

}  // namespace shm

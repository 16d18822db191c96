// SPDX-License-Identifier: Apache-2.0
// shm — DirectGuest: attaches to a host's segment, serves its calls, and calls it back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
#include "shm/log.h"
#include "shm/stats.h"
#include "shm/zero_copy_slot.h"

namespace shm {

/// The guest side of a segment. One guest is attached to a segment at a time (the guest seat).
///
/// Lifetime: Connect() receives the segment from the host over its rendezvous socket, maps it and holds the
/// guest seat (the connection) until Close() or destruction; the kernel closes the connection if the process
/// dies, and the next guest to attach answers or frees whatever this one left.
/// Thread safety: Connect(), Start() and the destructor must not race with each other or with Close(); Close()
/// may run on any thread, a handler's included, and concurrently with itself. SendGuestCall,
/// AcquireGuestSlot, Wait and the accessors are thread-safe and may run concurrently with everything else
/// (including a reconnect). The handler runs on one worker thread per host slot, concurrently: it must be
/// thread-safe. What the handler may call (Close() among them): handler.h.
/// Errors after shutting down: once the host has sent shutdown, guest calls fail with kShuttingDown; before
/// Connect() and once Close() has run, every call fails with kClosed.
class DirectGuest {
 public:
  DirectGuest() = default;
  DirectGuest(const DirectGuest&) = delete;
  DirectGuest& operator=(const DirectGuest&) = delete;
  /// Close(). Must not run in a handler.
  ~DirectGuest() { Close(); }

  /// Attach to the host named config.name, retrying every retry_interval until connect_timeout while no live
  /// host answers or another guest still holds the seat (a dying guest's connection closes with its last
  /// thread, so a supervisor may restart a guest at once). Errors: kInvalidArgs, kNotFound (no live host
  /// answered in time), kGuestAlreadyConnected (another guest stayed attached until the deadline),
  /// kPermissionDenied (the host does not admit this user, or the name is held by another user), kBadMagic,
  /// kVersionMismatch, kBadGeometry, kTruncated (memory smaller than its header claims), kProtocol (a reply or
  /// a segment that breaks the attach rules, such as memory not sealed against resizing), kSystem.
  Result<void> Connect(const GuestConfig& config) {
    if (endpoint()) return Error(ErrorCode::kInvalidArgs, "DirectGuest is already connected; Close() first");
    if (auto r = ValidateName(config.name); !r) return r;
    if (auto r = ValidateTimeout(config.connect_timeout, "connect_timeout"); !r) return r;
    if (auto r = ValidateTimeout(config.default_timeout, "default_timeout"); !r) return r;
    if (auto r = ValidateTimeout(config.retry_interval, "retry_interval"); !r) return r;
    if (auto r = ValidateTransferLimits(config.transfers); !r) return r;
    const int64_t deadline = platform::DeadlineAfter(config.connect_timeout.count());
    std::optional<Error> busy, last;
    for (;;) {
      auto ep = AttachOnce(config, deadline);
      if (ep) {
        config_ = config;
        closing_.store(false);
        SetEndpoint(std::move(*ep));
        return Ok();
      }
      // Not there yet, or a previous guest still dying (its threads exiting; the kernel closes its connection when the
      // last one has): both resolve by themselves, so retry until the deadline.
      const ErrorCode code = ep.error().code();
      if (code != ErrorCode::kNotFound && code != ErrorCode::kGuestAlreadyConnected) return std::move(ep).error();
      // An attempt that ended at the deadline may have been cut short by it and then says nothing new: report
      // the last one that ended before it, and BUSY if the host ever answered that.
      if (code == ErrorCode::kGuestAlreadyConnected) busy = ep.error();
      const int64_t now = platform::MonotonicNs();
      if (now < deadline) last = ep.error();
      if (now >= deadline) {
        if (busy) return *busy;
        return Error(ErrorCode::kNotFound, "no host appeared for " + config.name + " within the connect timeout (" +
                                               (last ? *last : ep.error()).message() + ")");
      }
      platform::SleepNs(std::min<int64_t>(config.retry_interval.count(), deadline - now));
    }
  }

  /// Serve every host slot: one worker thread per slot runs `handler` on each request. HEARTBEAT_REQ is
  /// answered by the runtime without calling the handler; a handler that throws answers SYSTEM_ERROR
  /// kHandlerFailed and its worker goes on. Workers sleep on the slot's futex when idle and exit when the host
  /// sends shutdown, dies (unless GuestConfig::reconnect), or Close() is called.
  /// Errors: kClosed, kInvalidArgs (no handler, already started, called from a handler). After a Close() from
  /// a handler, waits for that handler's worker to end.
  Result<void> Start(Handler handler) {
    auto ep = endpoint();
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    if (!handler) return Error(ErrorCode::kInvalidArgs, "Start needs a handler");
    if (WorkerOf() == this) return Error(ErrorCode::kInvalidArgs, "Start was called from a handler");
    {
      // A worker whose handler called Close() ends by itself; wait for it before starting anew.
      std::lock_guard<std::mutex> one_close(close_mu_);
      JoinDeferred();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (serving_) return Error(ErrorCode::kInvalidArgs, "workers are already running");
    }
    // A supervisor of an earlier Start() returns once serving_ is false; join it outside the lock it needs.
    if (supervisor_.joinable()) supervisor_.join();
    std::lock_guard<std::mutex> lock(mu_);
    JoinFinishedLocked();
    handler_ = std::make_shared<const Handler>(std::move(handler));
    exit_error_.reset();
    serving_ = true;
    StartWorkersLocked(ep);
    if (config_.reconnect && !supervisor_.joinable()) supervisor_ = std::thread([this] { Supervise(); });
    return Ok();
  }

  /// Block until the workers have exited for good. Ok if they exited because the host sent shutdown or
  /// Close() was called; kHostGone if the host died (without reconnect). Returns at once if Start() was not
  /// called. A vanished host is noticed within ~50 ms, so this cannot hang on a dead host.
  Result<void> Wait() { return WaitUntil(INT64_MAX); }

  /// Like Wait(), at most `timeout`: kTimeout if workers are still running then.
  Result<void> Wait(Duration timeout) { return WaitUntil(platform::DeadlineAfter(timeout.count())); }

  /// Stop the workers (each finishes the request it is serving), end guest calls in flight with kClosed,
  /// leave the guest seat and unmap. Idempotent.
  /// From a handler: waits for the other workers, not for the calling one, which ends once the handler has
  /// returned and its answer is delivered; the seat goes then, and Wait() returns then. The destructor,
  /// the next Start() or a Close() from another thread joins that worker.
  void Close() {
    const bool from_worker = WorkerOf() == this;
    std::unique_lock<std::mutex> one_close(close_mu_, std::defer_lock);
    if (!from_worker) {
      one_close.lock();
    } else if (!one_close.try_lock()) {
      return;  // another Close is running and waits for this worker: blocking here would deadlock it
    }
    closing_.store(true, std::memory_order_seq_cst);
    if (auto ep = endpoint()) {
      ep->set_closing();
      ep->NudgeAll();
      ep->ReleaseAllParked();
      ep->ReclaimAllQuarantined();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.notify_all();  // the supervisor re-checks closing_
    }
    if (supervisor_.joinable()) supervisor_.join();
    JoinDeferred();
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      workers.swap(workers_);
      for (auto it = workers.begin(); from_worker && it != workers.end(); ++it) {
        if (it->get_id() == std::this_thread::get_id()) {
          deferred_ = std::move(*it);
          workers.erase(it);
          break;
        }
      }
    }
    for (auto& t : workers) t.join();
    // From a worker, this worker still serves its call: the last worker to end leaves the seat (Work).
    if (auto ep = endpoint(); ep && !from_worker) ep->LeaveSeat();  // nothing of this guest writes it any more
    SetEndpoint(nullptr);
    std::lock_guard<std::mutex> lock(mu_);
    if (!from_worker) serving_ = false;  // else the last worker says so when it ends
    handler_.reset();
    done_.notify_all();
  }

  /// Call the host on any free guest slot; the answer's bytes are copied into `response`; returns its type.
  /// The slot stays parked for this thread's next guest call (see ReleaseParkedSlots). Requests and answers
  /// larger than a slot travel in chunks (see GuestCall). Errors: kTimeout,
  /// kNoFreeSlot, kTooLarge, kInvalidArgs (reserved type, no guest slots, a null request with a non-zero size),
  /// kRemote (SYSTEM_ERROR answer), kHostGone, kShuttingDown (the host sent shutdown), kProtocol, kClosed (not
  /// connected, or Close(): a call in flight then ends with it too). Thread-safe. A calling thread keeps a
  /// reference to the segment it last called through until its next guest call or its exit.
  Result<MsgType> SendGuestCall(Bytes request, MsgType type, std::vector<uint8_t>& response,
                                const CallOptions& options = {}) {
    detail::Endpoint* ep = EndpointForCall();
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    return detail::CopyCall(*ep, -1, request, type, response, options);
  }

  /// A guest call of any size: the request read from `request` (chunk by chunk, straight into the slot), the
  /// answer put where `response` says (not zeroed). Small messages take the same single transaction as
  /// SendGuestCall. Requests and answers larger than a slot travel in chunks (SPECIFICATION.md §8.5), up to the
  /// host's limit for requests and options.max_response_size or GuestConfig::transfers.max_message_size for
  /// answers. Errors: those of SendGuestCall; kInvalidArgs also when the Source fails; kTooLarge when the
  /// Sink gives no room. Thread-safe.
  Result<Received> GuestCall(const Source& request, MsgType type, const Sink& response,
                             const CallOptions& options = {}) {
    detail::Endpoint* ep = EndpointForCall();
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    return detail::MessageCall(*ep, -1, request, type, response, options);
  }

  /// Free the guest slots that SendGuestCall keeps parked for its threads' next call. Never needed for
  /// correctness (any guest call of this process takes a parked slot when no slot is free); for tools and
  /// tests that count free slots from outside. Close() frees them too. Thread-safe.
  void ReleaseParkedSlots() noexcept {
    if (auto ep = endpoint()) ep->ReleaseAllParked();
  }

  /// Hold a free guest slot for zero-copy guest calls (see ZeroCopySlot). Errors: kNoFreeSlot at the deadline,
  /// kInvalidArgs (no guest slots), kShuttingDown (the host sent shutdown), kClosed (not connected, or
  /// Close()). Thread-safe.
  Result<ZeroCopySlot> AcquireGuestSlot(Duration timeout = kUseDefault) {
    auto ep = endpoint();
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    uint32_t seq = 0;
    auto index = ep->ClaimAny(ep->Deadline(timeout), &seq);
    if (!index) return std::move(index).error();
    return ZeroCopySlot(ep, ep->segment().Slot(*index), seq);
  }

  /// Whether the host is alive: its end of the connection is open (a system call). Thread-safe.
  bool HostAlive() const {
    auto ep = endpoint();
    return ep && ep->PeerAlive();
  }
  /// Whether this guest holds a segment: true from a successful Connect until Close. Thread-safe.
  bool connected() const { return endpoint() != nullptr; }
  /// Number of host-to-guest slots of the attached segment (one worker serves each); 0 when not connected.
  /// Thread-safe.
  uint32_t host_slots() const {
    auto ep = endpoint();
    return ep ? ep->segment().geometry().host_slots : 0;
  }
  /// Number of guest-to-host slots (for SendGuestCall); 0 when the host has none or when not connected.
  /// Thread-safe.
  uint32_t guest_slots() const {
    auto ep = endpoint();
    return ep ? ep->segment().geometry().guest_slots : 0;
  }
  /// Capacity of each guest slot's request and response buffer, in bytes; 0 without guest slots or when not
  /// connected. Thread-safe.
  uint32_t guest_payload_capacity() const {
    auto ep = endpoint();
    return ep ? ep->segment().geometry().guest_payload : 0;
  }
  /// This guest's counters (SPECIFICATION.md §5.4): its serving of host calls (served, serve_slots: host slot i
  /// at [i]) and its guest calls (calls, call_slots: guest slot j at [j]), counted since it attached to the
  /// current segment (a reconnect starts them anew); the latency histogram of guest calls if
  /// GuestConfig::latency_histogram. StatsSnapshot::shared says whether they live in the segment, where shm-inspect
  /// reads them. Empty when not connected. Thread-safe, any time: each counter is read once with an atomic
  /// load, so the set is not one consistent snapshot while calls run.
  StatsSnapshot Stats() const {
    auto ep = endpoint();
    if (!ep) return StatsSnapshot();
    return ep->ReadStats();
  }
  /// How many times this guest attached to a new host by itself (GuestConfig::reconnect).
  uint32_t reconnects() const { return reconnects_.load(); }

 private:
  std::shared_ptr<detail::Endpoint> endpoint() const {
    std::lock_guard<std::mutex> lock(ep_mu_);
    return ep_;
  }
  void SetEndpoint(std::shared_ptr<detail::Endpoint> ep) {
    std::lock_guard<std::mutex> lock(ep_mu_);
    if (ep_ && ep_ != ep) ep_->Detach();  // slots held on the old segment fail with kClosed from now on
    ep_ = std::move(ep);
    ep_generation_.store(NextGeneration(), std::memory_order_release);
  }

  // The endpoint for a copying call of this thread. Calls run concurrently with a reconnect or Close(), which
  // replace ep_, so a call must hold a reference to the endpoint it uses; taking one through endpoint() costs
  // a lock and a reference count, atomic read-modify-writes on lines every calling thread shares. Instead each
  // thread keeps the reference it took last, tagged with the generation of ep_ it came from (unique across all
  // DirectGuests of the process), and takes a new one only when the generation has moved: one load per call.
  // The price: a thread keeps its last reference until its next guest call or its exit, so a replaced or
  // closed segment may stay mapped that long (its calls fail with kClosed or kHostGone meanwhile).
  detail::Endpoint* EndpointForCall() const {
    struct Cached {
      uint64_t generation = 0;
      std::shared_ptr<detail::Endpoint> ep;
    };
    thread_local Cached cached;
    if (cached.generation != ep_generation_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(ep_mu_);
      cached.ep = ep_;
      cached.generation = ep_generation_.load(std::memory_order_relaxed);
    }
    return cached.ep.get();
  }
  static uint64_t NextGeneration() noexcept {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  // One attempt: receive and map a live host's segment with the guest seat, recover what a dead guest left.
  static Result<std::shared_ptr<detail::Endpoint>> AttachOnce(const GuestConfig& config, int64_t deadline) {
    auto attached = detail::AttachOnce(config.name, wire::AttachRole::kGuest, deadline);
    if (!attached) return std::move(attached).error();
    auto ep = std::make_shared<detail::Endpoint>(std::move(attached->segment), detail::Role::kGuest,
                                                 config.default_timeout, std::move(attached->link));
    if (config.latency_histogram) ep->EnableLatencyHistogram();
    ep->SetTransferLimits(config.transfers);
    ep->ResetOwnCounters();  // they count this guest's session, its recovery included
    Recover(*ep);
    ep->header().guest_pid.store(platform::ProcessId(), std::memory_order_relaxed);
    ep->header().guest_session.fetch_add(1, std::memory_order_acq_rel);
    return ep;
  }

  // This guest just took the guest seat, so every earlier guest is dead or gone: answer or free what they left.
  static void Recover(detail::Endpoint& ep) {
    const auto& g = ep.segment().geometry();
    for (uint32_t i = 0; i < g.host_slots; ++i) {
      if (detail::SweepAsNewServer(*ep.segment().Slot(i).header)) {
        detail::Endpoint::CountAnswered(ep.block(i), wire::WireError::kPeerRestarted);
        detail::Endpoint::Count(ep.block(i), wire::kServed);
      }
    }
    for (uint32_t i = 0; i < g.guest_slots; ++i) {
      detail::SweepAsNewCaller(*ep.segment().Slot(g.host_slots + i).header);
    }
  }

  void StartWorkersLocked(const std::shared_ptr<detail::Endpoint>& ep) {
    const uint32_t n = ep->segment().geometry().host_slots;
    running_ = n;
    host_gone_ = false;
    for (uint32_t i = 0; i < n; ++i) {
      workers_.emplace_back([this, i, ep, h = handler_] {
        WorkerOf() = this;
        Work(*ep, i, *h);
      });
    }
  }

  void JoinFinishedLocked() {
    // Called with no worker running: joining returns at once.
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  void Work(detail::Endpoint& ep, uint32_t index, const Handler& handler) {
    const detail::SlotView s = ep.segment().Slot(index);
    bool host_gone = false;
    detail::WaitStart start = detail::WaitStart::kSpin;
    for (;;) {
      uint32_t v = 0;
      auto st = detail::WaitFor(
          s.header->ctl, &s.header->wake_stamp_ns, INT64_MAX, ep.spin(),
          [](uint32_t w) { return wire::CtlIs(w, wire::SlotState::kRequest); },
          [&](bool slow) {
            if (ep.closing() || ep.host_shutting_down()) return true;
            if (slow && !ep.PeerAlive()) return host_gone = true;
            if (slow) ep.transfers().Sweep(index, 1, false);  // a large transfer the host stopped sending
            return false;
          },
          &v, wire::kWaiting, start);
      if (st != detail::WaitStatus::kReady) break;
      uint32_t seq = 0;
      bool woke_host = false;
      detail::Endpoint::PrefetchForServe(s);
      if (detail::TryTake(*s.header, &seq)) (void)ep.Serve(s, seq, &handler, false, &woke_host);
      // Having woken the host, keep spinning for its next request (it may come at once), but offer this CPU
      // from the start: the host may be queued on it. Sleeping here instead would let a busy exchange settle
      // into both sides sleeping on every message.
      start = woke_host ? detail::WaitStart::kYield : detail::WaitStart::kSpin;
    }
    std::lock_guard<std::mutex> lock(mu_);
    host_gone_ |= host_gone;
    if (--running_ > 0) return;
    // Nothing serves this endpoint any more. If it is closing, its seat may go: a Close() from a handler left
    // that to here (after any other Close() it is gone already, and leaving again is harmless).
    if (ep.closing()) ep.LeaveSeat();
    // A closing endpoint is never followed; checked first, so config_ (which a new Connect may be writing)
    // is not read then.
    const bool follow = !ep.closing() && config_.reconnect && host_gone_ && !closing_.load();
    if (!follow) {
      if (host_gone_ && !closing_.load()) exit_error_ = std::make_unique<Error>(ErrorCode::kHostGone, "the host died");
      serving_ = false;
    }
    done_.notify_all();
  }

  // With reconnect: whenever every worker has exited because the host died, attach to the next host and start
  // a new generation of workers.
  void Supervise() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      done_.wait(lock, [&] { return closing_.load() || !serving_ || (running_ == 0 && host_gone_); });
      if (closing_.load() || !serving_) return;
      JoinFinishedLocked();
      lock.unlock();
      Log(LogLevel::kWarn, "host of " + config_.name + " died; waiting for the next host");
      std::shared_ptr<detail::Endpoint> next;
      while (!closing_.load()) {
        auto ep = AttachOnce(config_, platform::DeadlineAfter(config_.connect_timeout.count()));
        if (ep) {
          next = std::move(*ep);
          break;
        }
        if (ep.error().code() != ErrorCode::kNotFound) Log(LogLevel::kWarn, "reconnect: " + ep.error().ToString());
        platform::SleepNs(std::max<int64_t>(config_.retry_interval.count(), 1000000));
      }
      if (!next) return;
      SetEndpoint(next);
      reconnects_.fetch_add(1);
      lock.lock();
      if (closing_.load()) {
        next->set_closing();
        return;
      }
      StartWorkersLocked(next);
    }
  }

  // The DirectGuest whose worker runs on this thread, if any: a handler's Close() must not join its own thread.
  static const DirectGuest*& WorkerOf() noexcept {
    thread_local const DirectGuest* guest = nullptr;
    return guest;
  }

  // Join the worker a handler's Close() left running, unless this is that worker. With close_mu_ held.
  void JoinDeferred() {
    if (deferred_.joinable() && deferred_.get_id() != std::this_thread::get_id()) deferred_.join();
  }

  Result<void> WaitUntil(int64_t deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    while (serving_) {
      const int64_t now = platform::MonotonicNs();
      if (now >= deadline) return Error(ErrorCode::kTimeout, "workers are still running");
      done_.wait_for(lock, std::chrono::nanoseconds(std::min<int64_t>(deadline - now, 100000000)));
    }
    if (exit_error_) return *exit_error_;
    return Ok();
  }

  GuestConfig config_;
  mutable std::mutex ep_mu_;
  std::shared_ptr<detail::Endpoint> ep_;    // guarded by ep_mu_; replaced on reconnect
  std::atomic<uint64_t> ep_generation_{0};  // changes with ep_ (under ep_mu_); 0 = never set
  std::mutex close_mu_;                     // one Close() at a time; guards deferred_
  std::thread deferred_;                    // the worker whose handler called Close(), until it is joined
  std::mutex mu_;                           // guards everything below
  std::condition_variable done_;
  std::shared_ptr<const Handler> handler_;
  std::vector<std::thread> workers_;
  uint32_t running_ = 0;
  bool serving_ = false;
  bool host_gone_ = false;
  std::unique_ptr<Error> exit_error_;
  std::thread supervisor_;
  std::atomic<bool> closing_{false};
  std::atomic<uint32_t> reconnects_{0};
};

}  // namespace shm

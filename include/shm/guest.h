// shm — DirectGuest: attaches to a host's segment, serves its calls, and calls it back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/detail/copy_call.h"
#include "shm/detail/endpoint.h"
#include "shm/detail/segment.h"
#include "shm/error.h"
#include "shm/handler.h"
#include "shm/zero_copy_slot.h"

namespace shm {

/// The guest side of a segment. One guest is attached to a segment at a time (the guest lock).
///
/// Lifetime: Connect() maps the segment and takes the guest lock until Close() or destruction; the kernel
/// drops the lock if the process dies, and the next guest to attach answers or frees whatever this one left.
/// Thread safety: Connect(), Close() and the destructor must not race with other calls. SendGuestCall,
/// AcquireGuestSlot, Wait and HostAlive are thread-safe. The handler runs on one worker thread per host slot,
/// concurrently: it must be thread-safe.
class DirectGuest {
 public:
  DirectGuest() = default;
  DirectGuest(const DirectGuest&) = delete;
  DirectGuest& operator=(const DirectGuest&) = delete;
  ~DirectGuest() { Close(); }

  /// Attach to the host named config.name, retrying every retry_interval until connect_timeout. Errors:
  /// kInvalidArgs, kNotFound (no live host appeared in time), kBadMagic, kVersionMismatch, kBadGeometry,
  /// kTruncated (file smaller than its header claims), kGuestAlreadyConnected, kSystem.
  Result<void> Connect(const GuestConfig& config) {
    if (ep_) return Error(ErrorCode::kInvalidArgs, "DirectGuest is already connected; Close() first");
    if (auto r = ValidateName(config.name); !r) return r;
    if (auto r = ValidateTimeout(config.connect_timeout, "connect_timeout"); !r) return r;
    if (auto r = ValidateTimeout(config.default_timeout, "default_timeout"); !r) return r;
    if (config.retry_interval < Duration::zero()) return Error(ErrorCode::kInvalidArgs, "retry_interval < 0");
    const int64_t deadline = platform::MonotonicNs() + config.connect_timeout.count();
    for (;;) {
      auto seg = detail::Segment::Attach(config.name);
      if (seg) {
        auto locked = platform::TryLockByte(seg->file(), platform::kGuestLockByte);
        if (!locked) return std::move(locked).error();
        if (!*locked) {
          return Error(ErrorCode::kGuestAlreadyConnected,
                       "segment " + config.name + " already has a live guest (pid " +
                           std::to_string(seg->header().guest_pid.load(std::memory_order_relaxed)) + ")");
        }
        auto ep = std::make_shared<detail::Endpoint>(std::move(*seg), detail::Role::kGuest, config.default_timeout);
        Recover(*ep);
        ep->header().guest_pid.store(platform::ProcessId(), std::memory_order_relaxed);
        ep->header().guest_session.fetch_add(1, std::memory_order_acq_rel);
        ep_ = std::move(ep);
        return Ok();
      }
      if (seg.error().code() != ErrorCode::kNotFound) return std::move(seg).error();
      const int64_t now = platform::MonotonicNs();
      if (now >= deadline) {
        return Error(ErrorCode::kNotFound, "no host appeared for " + config.name + " within the connect timeout (" +
                                               seg.error().message() + ")");
      }
      platform::SleepNs(std::min<int64_t>(config.retry_interval.count(), deadline - now));
    }
  }

  /// Serve every host slot: one worker thread per slot runs `handler` on each request. HEARTBEAT_REQ is
  /// answered by the runtime without calling the handler; a handler that throws answers SYSTEM_ERROR
  /// kHandlerFailed and its worker goes on. Workers sleep on the slot's futex when idle and exit when the host
  /// sends shutdown, dies, or Close() is called. Errors: kClosed, kInvalidArgs (no handler, already started).
  Result<void> Start(Handler handler) {
    if (!ep_) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    if (!handler) return Error(ErrorCode::kInvalidArgs, "Start needs a handler");
    std::lock_guard<std::mutex> lock(mu_);
    if (!workers_.empty()) return Error(ErrorCode::kInvalidArgs, "workers are already running");
    handler_ = std::make_shared<const Handler>(std::move(handler));
    const uint32_t n = ep_->segment().geometry().host_slots;
    running_ = n;
    exit_error_.reset();
    for (uint32_t i = 0; i < n; ++i) workers_.emplace_back([this, i, ep = ep_, h = handler_] { Work(*ep, i, *h); });
    return Ok();
  }

  /// Block until every worker has exited. Ok if they exited because the host sent shutdown or Close() was
  /// called; kHostGone if the host died. Returns at once if Start() was not called. Ends whenever the host
  /// ends (shutdown or death is noticed within ~50 ms), so it cannot hang on a vanished host.
  Result<void> Wait() { return WaitUntil(INT64_MAX); }

  /// Like Wait(), at most `timeout`: kTimeout if workers are still running then.
  Result<void> Wait(Duration timeout) { return WaitUntil(platform::MonotonicNs() + timeout.count()); }

  /// Stop the workers (each finishes the request it is serving), release the guest lock and unmap.
  /// Idempotent.
  void Close() {
    if (!ep_) return;
    ep_->set_closing();
    for (uint32_t i = 0; i < ep_->segment().slot_count(); ++i) detail::Nudge(ep_->segment().Slot(i).header->ctl);
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      workers.swap(workers_);
    }
    for (auto& t : workers) t.join();
    platform::UnlockByte(ep_->segment().file(), platform::kGuestLockByte);
    ep_.reset();
    handler_.reset();
  }

  /// Call the host on any free guest slot; the answer's bytes are copied into `response`; returns its type.
  /// Errors: kTimeout, kNoFreeSlot, kTooLarge, kInvalidArgs, kRemote (SYSTEM_ERROR answer), kHostGone,
  /// kShuttingDown, kProtocol, kClosed. Thread-safe.
  Result<MsgType> SendGuestCall(Bytes request, MsgType type, std::vector<uint8_t>& response,
                                const CallOptions& options = {}) {
    auto ep = ep_;
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    return detail::CopyCall(*ep, -1, request, type, response, options);
  }

  /// Hold a free guest slot for zero-copy guest calls (see ZeroCopySlot). Thread-safe.
  Result<ZeroCopySlot> AcquireGuestSlot(Duration timeout = kUseDefault) {
    auto ep = ep_;
    if (!ep) return Error(ErrorCode::kClosed, "DirectGuest is not connected");
    uint32_t seq = 0;
    auto index = ep->ClaimAny(ep->Deadline(timeout), &seq);
    if (!index) return std::move(index).error();
    return ZeroCopySlot(ep, ep->segment().Slot(*index), seq);
  }

  /// Whether the host still holds its lock (a system call). Thread-safe.
  bool HostAlive() const { return ep_ && ep_->PeerAlive(); }
  bool connected() const noexcept { return ep_ != nullptr; }
  uint32_t host_slots() const noexcept { return ep_ ? ep_->segment().geometry().host_slots : 0; }
  uint32_t guest_slots() const noexcept { return ep_ ? ep_->segment().geometry().guest_slots : 0; }
  uint32_t guest_payload_capacity() const noexcept { return ep_ ? ep_->segment().geometry().guest_payload : 0; }

 private:
  // This guest just took the guest lock, so every earlier guest is dead: answer or free what they left.
  static void Recover(detail::Endpoint& ep) {
    const auto& g = ep.segment().geometry();
    for (uint32_t i = 0; i < g.host_slots; ++i) detail::SweepAsNewServer(*ep.segment().Slot(i).header);
    for (uint32_t i = 0; i < g.guest_slots; ++i) {
      detail::SweepAsNewCaller(*ep.segment().Slot(g.host_slots + i).header);
    }
  }

  void Work(detail::Endpoint& ep, uint32_t index, const Handler& handler) {
    const detail::SlotView s = ep.segment().Slot(index);
    bool host_gone = false;
    for (;;) {
      uint32_t v = 0;
      auto st = detail::WaitFor(
          s.header->ctl, &s.header->wake_stamp_ns, INT64_MAX, ep.spin(),
          [](uint32_t w) { return wire::CtlIs(w, wire::SlotState::kRequest); },
          [&](bool slow) {
            if (ep.closing() || ep.host_shutting_down()) return true;
            if (slow && !ep.PeerAlive()) return host_gone = true;
            return false;
          },
          &v);
      if (st != detail::WaitStatus::kReady) break;
      uint32_t seq = 0;
      if (detail::TryTake(*s.header, &seq)) (void)ep.Serve(s, seq, &handler, false);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (host_gone && !exit_error_) {
      exit_error_ = std::make_unique<Error>(ErrorCode::kHostGone, "the host died");
    }
    if (--running_ == 0) done_.notify_all();
  }

  Result<void> WaitUntil(int64_t deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    while (running_ > 0) {
      const int64_t now = platform::MonotonicNs();
      if (now >= deadline) return Error(ErrorCode::kTimeout, "workers are still running");
      done_.wait_for(lock, std::chrono::nanoseconds(std::min<int64_t>(deadline - now, 100000000)));
    }
    if (exit_error_) return *exit_error_;
    return Ok();
  }

  std::shared_ptr<detail::Endpoint> ep_;
  std::shared_ptr<const Handler> handler_;
  std::mutex mu_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  uint32_t running_ = 0;
  std::unique_ptr<Error> exit_error_;
};

}  // namespace shm

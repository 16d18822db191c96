// SPDX-License-Identifier: Apache-2.0
// shm — ZeroCopySlot: a slot held across calls, written and read in place.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/detail/endpoint.h"
#include "shm/error.h"

namespace shm {

class DirectHost;
class DirectGuest;

/// A slot this process holds for zero-copy calls: write the request into RequestBuffer(), Send() (or
/// SendFlatBuffer()), then read Response() in place; repeat as often as wanted; the destructor (or Release())
/// gives the slot back.
///
/// Ownership and lifetime: move-only. It shares ownership of the mapped segment with its DirectHost/DirectGuest,
/// so it may outlive that object safely: once the owner is destroyed, closed, or (guest) has moved on to a new
/// host, every method fails with kClosed or returns an empty view, and the mapping goes when the slot does.
/// Buffers returned by RequestBuffer() and Response() point into shared memory: use them while valid().
/// Thread safety: not thread-safe; use one ZeroCopySlot from one thread at a time (different slots may be
/// used concurrently). A Send or SendFlatBuffer that starts while another thread's is still running on the
/// same object fails with kInvalidArgs and leaves that call and the slot alone.
class ZeroCopySlot {
 public:
  /// An empty object that holds no slot (valid() is false).
  ZeroCopySlot() = default;
  /// Takes over o's slot and last answer; o holds none afterwards.
  ZeroCopySlot(ZeroCopySlot&& o) noexcept { *this = std::move(o); }
  /// Releases the slot this object holds, then takes over o's; o holds none afterwards.
  ZeroCopySlot& operator=(ZeroCopySlot&& o) noexcept {
    if (this != &o) {
      Release();
      ep_ = std::move(o.ep_);
      view_ = o.view_;
      seq_ = o.seq_;
      held_ = std::exchange(o.held_, false);
      answered_ = std::exchange(o.answered_, false);
      answer_ = o.answer_;
    }
    return *this;
  }
  ZeroCopySlot(const ZeroCopySlot&) = delete;
  ZeroCopySlot& operator=(const ZeroCopySlot&) = delete;
  ~ZeroCopySlot() { Release(); }

  /// Whether this object holds a slot (false after Release(), a move, or a call that lost the slot).
  bool valid() const noexcept { return held_ && ep_ && !ep_->detached(); }
  /// Index of the held slot.
  uint32_t index() const noexcept { return view_.index; }
  /// Capacity of the request buffer (and of the response buffer), in bytes.
  uint32_t capacity() const noexcept { return valid() ? view_.capacity : 0; }

  /// The whole request buffer, to write the request into. Empty if !valid().
  MutableBytes RequestBuffer() const noexcept {
    return valid() ? MutableBytes(view_.request, view_.capacity) : MutableBytes();
  }

  /// Send the request already written in RequestBuffer(): `size` bytes at its start, or, if negative, the
  /// last -size bytes (end-aligned). Blocks until the answer, an error, or the deadline. On success the
  /// answer is readable through Response*(). A timeout while the peer was serving loses the slot
  /// (kSlotLost on the next call); a timeout before it took the request keeps it. Errors: kTimeout,
  /// kTooLarge (size outside the buffer, or an answer larger than the slot: the slot stays held), kInvalidArgs
  /// (reserved type), kRemote, kPeerDead (host slot) or kHostGone (guest slot), kShuttingDown (the host is shutting
  /// down), kProtocol, kSlotLost, kClosed (the owner was shut down, closed or destroyed: a call in flight then ends
  /// with it too); kInvalidArgs also when another thread is in Send on this object.
  Result<void> Send(int32_t size, MsgType type = MsgType::NORMAL, Duration timeout = kUseDefault) {
    // A second thread would publish over the first's transaction, which would then look like the peer
    // breaking the protocol. A plain flag on this object's own line (relaxed load and store, no
    // read-modify-write, so the publish that follows does not wait for it) catches a thread that enters while
    // another is in a Send; two entering at the very same instant can still collide and see kProtocol.
    if (in_send_.load(std::memory_order_relaxed)) {
      return Error(ErrorCode::kInvalidArgs,
                   "this ZeroCopySlot is in a Send on another thread; use it from one "
                   "thread at a time");
    }
    in_send_.store(true, std::memory_order_relaxed);
    struct Leave {
      std::atomic<bool>& flag;
      ~Leave() { flag.store(false, std::memory_order_relaxed); }
    } leave{in_send_};
    // A plain load, not a reference count: the endpoint is this object's own.
    if (!ep_ || ep_->detached()) return Error(ErrorCode::kClosed, "the slot's host or guest is gone");
    if (!held_) return Error(ErrorCode::kSlotLost, "this ZeroCopySlot no longer holds a slot");
    answered_ = false;
    bool owned = true;
    detail::Endpoint::StageInline(view_, size);
    auto a = ep_->Call(view_, &seq_, size, type, ep_->Deadline(timeout), &owned);
    held_ = owned;
    if (!a) return std::move(a).error();
    if (a->type == MsgType::CHUNK) {
      // A large answer (SPECIFICATION.md §8.5) cannot be shown in place: the server drops it with the slot's
      // next request.
      return Error(ErrorCode::kTooLarge, "the answer is larger than the slot; receive it with a copying call");
    }
    if (a->type == MsgType::CHUNK_ACK) return Error(ErrorCode::kProtocol, "peer acknowledged a chunk never sent");
    answer_ = *a;
    answered_ = true;
    return Ok();
  }

  /// Send a FlatBuffer finished at the end of RequestBuffer() (as a FlatBufferBuilder builds it):
  /// `size` bytes, end-aligned, type FLATBUFFER. Errors: those of Send; a size that is negative or larger
  /// than capacity() is kTooLarge (as in the Go guest).
  Result<void> SendFlatBuffer(int32_t size, Duration timeout = kUseDefault) {
    if (size < 0) {
      return Error(ErrorCode::kTooLarge, "a FlatBuffer of " + std::to_string(size) + " bytes does not fit the buffer");
    }
    return Send(-size, MsgType::FLATBUFFER, timeout);
  }

  /// The last answer's bytes, in place in shared memory: in the response buffer, or, for an answer of at most
  /// 32 bytes, in the slot's header (SPECIFICATION.md §8.1). Valid until the next Send or Release. Empty
  /// before a successful Send().
  Bytes Response() const noexcept {
    if (!answered_ || !valid()) return Bytes();
    return Bytes(answer_.data, answer_.length);
  }
  /// The last answer's wire size (negative: it was end-aligned). 0 before a successful Send().
  int32_t ResponseSize() const noexcept { return answered_ ? answer_.wire_size : 0; }
  /// The last answer's type.
  MsgType ResponseType() const noexcept { return answered_ ? answer_.type : MsgType::NORMAL; }

  /// Give the slot back. Idempotent; harmless after the owner is gone.
  void Release() noexcept {
    if (held_ && ep_ && !ep_->detached()) ep_->ReleaseOwned(view_.index, seq_);
    held_ = false;
    answered_ = false;
    ep_.reset();
  }

 private:
  friend class DirectHost;
  friend class DirectGuest;
  ZeroCopySlot(std::shared_ptr<detail::Endpoint> ep, detail::SlotView view, uint32_t seq)
      : ep_(std::move(ep)), view_(view), seq_(seq), held_(true) {}

  std::shared_ptr<detail::Endpoint> ep_;
  detail::SlotView view_;
  uint32_t seq_ = 0;
  bool held_ = false;
  bool answered_ = false;
  detail::Answer answer_;
  std::atomic<bool> in_send_{false};  // a Send is running: detects use from two threads at once
};

}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// One side of a mapped segment — host or guest — and the two halves of a transaction that both sides share:
// Call (the caller half: publish, wait, read the answer) and Serve (the server half: read once, validate, run
// the handler, answer). The host's Send and the guest's SendGuestCall are the same Call; the guest's workers
// and the host's guest-call processor are the same Serve.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "shm/config.h"
#include "shm/detail/segment.h"
#include "shm/detail/slot.h"
#include "shm/detail/transfer.h"
#include "shm/detail/wait.h"
#include "shm/error.h"
#include "shm/handler.h"
#include "shm/log.h"
#include "shm/platform/platform.h"
#include "shm/stats.h"
#include "shm/wire/counters.h"

namespace shm {
namespace detail {

enum class Role { kHost, kGuest };

/// A validated answer: its bytes lie in the slot's response buffer, or in its header's inline_data when
/// there are at most wire::kInlineSize of them (SPECIFICATION.md §8.1).
struct Answer {
  MsgType type = MsgType::NORMAL;
  int32_t wire_size = 0;
  const uint8_t* data = nullptr;
  uint32_t length = 0;
};

/// Shared state of one host or guest. Owned through shared_ptr by DirectHost/DirectGuest, by in-flight calls
/// and by ZeroCopySlots, so the mapping outlives every user of it; an owner that lets go calls Detach().
/// Thread-safe after construction.
class Endpoint {
 public:
  /// `link`: a guest's connection to its host (the host's liveness); unused by the host, whose Doorman
  /// reports the guest's arrival and departure through OnGuestAttached/OnGuestGone.
  Endpoint(Segment segment, Role role, Duration default_timeout, platform::File link = platform::File())
      : segment_(std::move(segment)),
        link_(std::move(link)),
        role_(role),
        default_timeout_ns_(default_timeout.count()),
        id_(NextEndpointId()),
        parked_(new ParkedWord[segment_.slot_count()]()),
        quarantine_(new QuarantinedSlot[segment_.slot_count()]) {
    transfers_.Init(segment_.slot_count(), TransferLimits{});
    // This side's counter blocks: in the segment when it has a counters region (SPECIFICATION.md §5.4),
    // where shm-inspect reads them, else in this process's memory.
    if (segment_.has_counters() && (role_ == Role::kHost || segment_.writable())) {
      blocks_ = segment_.counter_blocks(role_ == Role::kHost);
    } else {
      local_blocks_.reset(new wire::CounterBlock[segment_.slot_count()]);
      for (uint32_t i = 0; i < segment_.slot_count(); ++i) ResetBlock(local_blocks_[i]);
      blocks_ = local_blocks_.get();
    }
  }

  /// Frees the slots still parked: a Park() that raced with closing may have come after its sweep. Nothing
  /// else can use the endpoint now.
  ~Endpoint() { ReleaseAllParked(); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  /// Unique for the life of the process (never reused, unlike an address).
  uint64_t id() const noexcept { return id_; }

  // ---- Counters (SPECIFICATION.md §5.4) ------------------------------------------------------------------
  // Each side writes its own blocks only, one per slot, so counting adds no line shared with the peer. The
  // side that holds a slot updates that slot's block with a relaxed load and store (no locked instruction: no
  // other thread of this side writes it meanwhile, and the slot's control-word CAS orders the handoffs); a
  // count made after the slot was given up, and every error count, is an atomic add.

  /// Keep a latency histogram of successful calls from now on. Before the endpoint is shared.
  void EnableLatencyHistogram() { latency_.reset(new LatencyHistogram()); }

  /// What this side accepts of messages larger than a slot (SPECIFICATION.md §8.5). Before the endpoint is
  /// shared.
  void SetTransferLimits(const TransferLimits& limits) { transfers_.Init(segment_.slot_count(), limits); }
  /// The transfers this side's servers hold. Thread-safe.
  TransferTable& transfers() noexcept { return transfers_; }

  /// Zero this side's blocks (a guest taking the seat, SPECIFICATION.md §4.2 step 6), and stamp the start.
  void ResetOwnCounters() noexcept {
    for (uint32_t i = 0; i < segment_.slot_count(); ++i) ResetBlock(blocks_[i]);
    if (role_ == Role::kGuest && segment_.has_counters() && segment_.writable()) {
      segment_.counters_header().guest_since_ns.store(static_cast<uint64_t>(platform::MonotonicNs()),
                                                      std::memory_order_relaxed);
    }
  }

  /// This side's block of slot `index`.
  wire::CounterBlock& block(uint32_t index) noexcept { return blocks_[index]; }

  /// Add `n` to a counter of a slot this thread holds.
  static void Count(wire::CounterBlock& b, uint32_t counter, uint64_t n = 1) noexcept {
    b.c[counter].store(b.c[counter].load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  /// Add `n` to a counter of a slot this thread may no longer hold.
  static void CountShared(wire::CounterBlock& b, uint32_t counter, uint64_t n = 1) noexcept {
    b.c[counter].fetch_add(n, std::memory_order_relaxed);
  }
  /// The clock reading from which a call's latency counts: 0 without a histogram (no clock is read).
  int64_t CallClock() const noexcept { return latency_ ? platform::MonotonicNs() : 0; }
  /// A call on slot `index` (held by this thread) that ended with an accepted answer of `bytes_in` bytes;
  /// `started` is CallClock() at the call's start. Once per call, however many transactions it took.
  void CountCall(uint32_t index, uint64_t bytes_in, int64_t started) noexcept {
    Count(blocks_[index], wire::kCalls);
    Count(blocks_[index], wire::kCallBytesIn, bytes_in);
    if (latency_) latency_->Add(static_cast<uint64_t>(platform::MonotonicNs() - started));
  }
  /// A call on slot `index` that ended with a protocol violation a transfer found (SPECIFICATION.md §8.5).
  void CountProtocol(uint32_t index) noexcept { CountShared(blocks_[index], wire::kProtocol); }
  /// A SYSTEM_ERROR answer this side, as server, is about to publish.
  static void CountAnswered(wire::CounterBlock& b, wire::WireError e) noexcept {
    const auto v = static_cast<uint32_t>(e);
    if (v >= 1 && v <= wire::kCountedWireErrors) Count(b, wire::kAnsweredBase + v);
  }

  /// This side's counters, read once each (see StatsSnapshot).
  StatsSnapshot ReadStats() const {
    StatsSnapshot st;
    st.shared = blocks_ != local_blocks_.get();
    const uint32_t h = segment_.geometry().host_slots, g = segment_.geometry().guest_slots;
    const bool host = role_ == Role::kHost;
    const uint32_t call_first = host ? 0 : h, call_n = host ? h : g;
    const uint32_t serve_first = host ? h : 0, serve_n = host ? g : h;
    auto ld = [](const wire::CounterBlock& b, uint32_t i) { return b.c[i].load(std::memory_order_relaxed); };
    for (uint32_t i = call_first; i < call_first + call_n; ++i) {
      const wire::CounterBlock& b = blocks_[i];
      CallStats c;
      c.calls = ld(b, wire::kCalls);
      c.bytes_out = ld(b, wire::kCallBytesOut);
      c.bytes_in = ld(b, wire::kCallBytesIn);
      c.timeouts = ld(b, wire::kTimeouts);
      c.peer_dead = ld(b, wire::kPeerDead);
      c.protocol = ld(b, wire::kProtocol);
      c.ended = ld(b, wire::kEnded);
      for (uint32_t e = 0; e < 8; ++e) c.remote[e] = ld(b, wire::kRemoteBase + e);
      st.calls.Add(c);
      st.call_slots.push_back(c);
    }
    for (uint32_t i = serve_first; i < serve_first + serve_n; ++i) {
      const wire::CounterBlock& b = blocks_[i];
      ServeStats v;
      v.served = ld(b, wire::kServed);
      v.bytes_in = ld(b, wire::kServeBytesIn);
      v.bytes_out = ld(b, wire::kServeBytesOut);
      v.late = ld(b, wire::kLate);
      v.lost = ld(b, wire::kLost);
      v.heartbeats = ld(b, wire::kHeartbeats);
      for (uint32_t e = 1; e < 8; ++e) v.answered_errors[e] = ld(b, wire::kAnsweredBase + e);
      st.served.Add(v);
      st.serve_slots.push_back(v);
    }
    if (latency_) st.latency = latency_->Read();
    return st;
  }

  Segment& segment() noexcept { return segment_; }
  Role role() const noexcept { return role_; }
  SpinPolicy& spin() noexcept { return spin_; }
  wire::SegmentHeader& header() noexcept { return segment_.header(); }

  /// Its DirectHost/DirectGuest let go of it (destroyed, closed, re-initialised, or moved on to a new host):
  /// ZeroCopySlots that still hold it fail with kClosed.
  void Detach() noexcept { detached_.store(true, std::memory_order_release); }
  bool detached() const noexcept { return detached_.load(std::memory_order_acquire); }

  /// This process is closing the endpoint (its own Shutdown or Close): every call, and every wait in flight,
  /// ends with kClosed.
  bool closing() const noexcept { return closing_.load(std::memory_order_seq_cst); }
  void set_closing() noexcept { closing_.store(true, std::memory_order_seq_cst); }

  /// Make every sleeper on every slot word re-check its conditions (after a shutdown or close flag was
  /// stored with seq_cst). Thread-safe.
  void NudgeAll() noexcept {
    for (uint32_t i = 0; i < segment_.slot_count(); ++i) Nudge(segment_.Slot(i).header->ctl);
  }

  bool host_shutting_down() noexcept {
    return header().host_state.load(std::memory_order_seq_cst) == static_cast<uint32_t>(wire::HostState::kShuttingDown);
  }

  /// Whether the other side is alive (SPECIFICATION.md §2). For the host a load of what its Doorman last saw
  /// (cheap); for a guest a system call on its connection: never on the hot path.
  bool PeerAlive() const {
    if (role_ == Role::kHost) return guest_present_.load(std::memory_order_seq_cst);
    return !platform::ConnectionClosed(link_);
  }
  /// Whether PeerAlive() is cheap enough for a spin loop (a local load, no system call).
  bool PeerAliveIsCheap() const noexcept { return role_ == Role::kHost; }

  /// Guest: leave the guest seat now (the host sees the connection end), even while ZeroCopySlots still hold
  /// this endpoint. The descriptor stays open until the endpoint is destroyed.
  void LeaveSeat() noexcept { platform::ShutdownConnection(link_); }

  /// Host: a guest took the seat. Called by the Doorman.
  void OnGuestAttached() noexcept {
    guest_sessions_.fetch_add(1, std::memory_order_seq_cst);
    guest_present_.store(true, std::memory_order_seq_cst);
    if (segment_.has_counters()) segment_.counters_header().guest_attached.store(1, std::memory_order_relaxed);
  }
  /// Host: the guest's connection closed: it died or left. Wakes every sleeper so that callers waiting on it
  /// notice at once. Called by the Doorman.
  void OnGuestGone() noexcept {
    guest_present_.store(false, std::memory_order_seq_cst);
    if (segment_.has_counters()) segment_.counters_header().guest_attached.store(0, std::memory_order_relaxed);
    // Wake every word, W or not: a guest that died between its transition (which cleared W) and its
    // FUTEX_WAKE left a sleeper that only a wake reaches (SPECIFICATION.md §6.1).
    for (uint32_t i = 0; i < segment_.slot_count(); ++i) {
      std::atomic<uint32_t>& w = segment_.Slot(i).header->ctl;
      Nudge(w);
      platform::FutexWakeAll(&w, w.load(std::memory_order_seq_cst));
    }
    // The guest's large guest calls in progress will never go on (SPECIFICATION.md §8.5).
    transfers_.Sweep(first_slot(Role::kGuest), slot_count(Role::kGuest), true);
  }
  /// Which server session this side's calls are served by: it changes when a new server takes over. The host's
  /// servers are the guests, counted by its Doorman as they take the seat (process-local: not the segment's
  /// guest_session, which a guest writes); a guest's server is its host, which never changes within a segment
  /// (0). One atomic load.
  uint64_t PeerSession() const noexcept {
    return role_ == Role::kHost ? guest_sessions_.load(std::memory_order_seq_cst) : 0;
  }

  /// Absolute CLOCK_MONOTONIC deadline for a timeout (kUseDefault = configured default).
  int64_t Deadline(Duration timeout) const noexcept {
    return platform::DeadlineAfter(timeout.count() < 0 ? default_timeout_ns_ : timeout.count());
  }

  /// Host slots are [0, host_slots); guest slots follow.
  uint32_t first_slot(Role caller) const noexcept { return caller == Role::kHost ? 0 : segment_.geometry().host_slots; }
  uint32_t slot_count(Role caller) const noexcept {
    return caller == Role::kHost ? segment_.geometry().host_slots : segment_.geometry().guest_slots;
  }
  /// Capacity of each request (and response) buffer of the slots `caller` calls on.
  uint32_t capacity(Role caller) const noexcept {
    return caller == Role::kHost ? segment_.geometry().host_payload : segment_.geometry().guest_payload;
  }

  /// This side's own Shutdown/Close has run.
  static Error ClosedError() { return Error(ErrorCode::kClosed, "closed by this side's Shutdown or Close"); }

  /// The errors of a request that can never be sent, for every caller to word alike.
  static Error TooLargeError(int64_t size, uint32_t capacity) {
    return Error(ErrorCode::kTooLarge, "request of " + std::to_string(size) + " bytes does not fit the slot's " +
                                           std::to_string(capacity) + "-byte buffer");
  }
  static Error ReservedTypeError(MsgType type) {
    return Error(ErrorCode::kInvalidArgs,
                 "message type " + std::to_string(static_cast<uint32_t>(type)) + " is reserved by the protocol");
  }

  // ---- Parked slots -------------------------------------------------------------------------------------
  // A copying call leaves its slot held (RESPONSE, on the wire a caller-held slot) and parks it instead of
  // freeing it, so the same thread's next call publishes at once: two compare-and-swaps on the control line
  // fewer (release, claim), each of which the server's polling would otherwise pull back across cores. Parking
  // is local to this process: any caller of this endpoint takes a parked slot when no slot is free (ClaimIn),
  // and closing the endpoint frees every parked slot. Thread-safe.

  /// Take parked slot `index`. On success this thread owns it in RESPONSE at *seq.
  bool Unpark(uint32_t index, uint32_t* seq) noexcept {
    // Look before writing: ClaimIn scans every slot's word, and an exchange would write each one's line.
    // The exchange is what hands the slot from one thread to another (the slot's own thread or any caller
    // that found no free slot): exactly one taker gets it. Each word has its cache line to itself, which the
    // thread that parks the slot keeps in its own cache, so callers of different slots never share a line.
    std::atomic<uint32_t>& word = parked_[index].word;
    if (word.load(std::memory_order_acquire) == 0) return false;
    const uint32_t p = word.exchange(0, std::memory_order_acq_rel);
    if (p == 0) return false;
    const uint32_t held_seq = p & wire::kSeqMask;
    const uint32_t cur = segment_.Slot(index).header->ctl.load(std::memory_order_acquire);
    // Only a broken peer can move a caller-held slot; then it is not ours to use, nor to free yet.
    if (!wire::CtlIs(cur, SlotState::kResponse) || wire::CtlSeq(cur) != held_seq) {
      Quarantine(index, cur);
      return false;
    }
    *seq = held_seq;
    return true;
  }

  /// Park slot `index`, owned in RESPONSE at `seq`. Frees it instead when the endpoint is closing.
  void Park(uint32_t index, uint32_t seq) noexcept {
    // A release store, not seq_cst (on x86 an xchg or a fence, once per call). So a Park() racing with
    // closing may be missed by both this check and the closer's sweep; the slot is then freed by the next
    // copying call of this thread (CopyCall sees closing()) or when the endpoint is destroyed.
    parked_[index].word.store(kParked | (seq & wire::kSeqMask), std::memory_order_release);
    if (closing()) ReleaseParked(index);
  }

  /// Free slot `index` if it is parked.
  void ReleaseParked(uint32_t index) noexcept {
    uint32_t seq = 0;
    if (Unpark(index, &seq)) ReleaseOwned(index, seq);
  }

  /// Free every parked slot (after set_closing()).
  void ReleaseAllParked() noexcept {
    for (uint32_t i = 0; i < segment_.slot_count(); ++i) ReleaseParked(i);
  }

  // ---- Quarantined slots --------------------------------------------------------------------------------
  // A slot this side held as caller, which the peer moved to a word this side cannot explain (SPECIFICATION.md
  // §6), is neither used nor freed then: the peer may still be writing it. It is remembered here, in process
  // memory (the word last seen and the server session then), skipped by claims, and freed (T12) once the server
  // is proven dead or a new server session has begun. Claims look at it only when no slot is free, and
  // Shutdown/Close once; a misbehaving peer can cost the pool slots only while it stays. Thread-safe.

  /// Give up slot `index`, last seen holding `word`, until its server is gone.
  void Quarantine(uint32_t index, uint32_t word) noexcept {
    QuarantinedSlot& q = quarantine_[index];
    q.word.store(word, std::memory_order_relaxed);
    q.session.store(PeerSession(), std::memory_order_relaxed);
    if (!q.held.exchange(true, std::memory_order_acq_rel)) quarantined_.fetch_add(1, std::memory_order_acq_rel);
  }

  /// Free slot `index`, owned at `seq` (CLAIMED or RESPONSE); quarantine it if the peer moved it meanwhile.
  void ReleaseOwned(uint32_t index, uint32_t seq) noexcept {
    SlotHeader& h = *segment_.Slot(index).header;
    if (!Release(h, seq)) Quarantine(index, h.ctl.load(std::memory_order_acquire));
  }

  /// Free the quarantined slots of [first, first + n) whose server is gone: a new session (one load), or, when
  /// `check_liveness`, proven dead (a system call). Returns whether one became free.
  bool ReclaimQuarantined(uint32_t first, uint32_t n, bool check_liveness) {
    if (quarantined_.load(std::memory_order_acquire) == 0) return false;
    // One reclaimer at a time, so none frees a slot another has just handed back to a claimer.
    std::lock_guard<std::mutex> lock(reclaim_mu_);
    const uint64_t session = PeerSession();
    // The words before liveness, as for T9 (SPECIFICATION.md §6.1): "dead" must describe the server that left
    // the word seen, not one that attached after the check.
    std::unique_ptr<uint32_t[]> seen(new uint32_t[n]);
    for (uint32_t i = 0; i < n; ++i) seen[i] = segment_.Slot(first + i).header->ctl.load(std::memory_order_seq_cst);
    int dead = -1;  // not asked yet
    bool freed = false;
    for (uint32_t i = first; i < first + n; ++i) {
      QuarantinedSlot& q = quarantine_[i];
      if (!q.held.load(std::memory_order_acquire)) continue;
      const bool replaced = q.session.load(std::memory_order_relaxed) != session;
      if (!replaced && !check_liveness) continue;
      if (dead < 0 && check_liveness) dead = PeerAlive() ? 0 : 1;
      if (!replaced && dead != 1) continue;
      if (!detail::ReclaimQuarantined(*segment_.Slot(i).header, seen[i - first], dead == 1)) continue;
      char word[16];
      std::snprintf(word, sizeof word, "0x%08x", q.word.load(std::memory_order_relaxed));
      q.held.store(false, std::memory_order_release);
      quarantined_.fetch_sub(1, std::memory_order_acq_rel);
      freed = true;
      Log(LogLevel::kInfo, "slot " + std::to_string(i) + ", quarantined since the peer left it as word " + word +
                               ", is free again: " + (dead == 1 ? "its server died" : "a new server took over"));
    }
    return freed;
  }

  /// ReclaimQuarantined over every slot this side calls on, liveness included (Shutdown, Close).
  void ReclaimAllQuarantined() { (void)ReclaimQuarantined(first_slot(role_), slot_count(role_), true); }

  /// Claim a free slot among those this side calls on, until the deadline (kNoFreeSlot). Returns the slot
  /// index; *seq gets its sequence number. The slot is CLAIMED, or RESPONSE when it was a parked one.
  Result<uint32_t> ClaimAny(int64_t deadline, uint32_t* seq) {
    if (slot_count(role_) == 0) {
      return Error(ErrorCode::kInvalidArgs, "this segment has no guest slots (guest_slots = 0)");
    }
    return ClaimIn(first_slot(role_), slot_count(role_), deadline, seq, ErrorCode::kNoFreeSlot);
  }

  /// Claim slot `index` (or take it if parked), waiting until the deadline while it is busy (kSlotBusy).
  Result<void> ClaimOne(uint32_t index, int64_t deadline, uint32_t* seq) {
    auto r = ClaimIn(index, 1, deadline, seq, ErrorCode::kSlotBusy);
    if (!r) return std::move(r).error();
    return Ok();
  }

  /// The caller half of a transaction on slot `s`, which the caller owns at *seq (CLAIMED or RESPONSE). The
  /// request bytes are in place in their area (MessageBytes: the header's inline_data for small requests, see
  /// StageInline). On return *seq is the transaction's seq and *owned says whether the caller
  /// still owns the slot (false: it is the server's until it finishes, or a broken peer moved it and it is
  /// quarantined).
  /// The answer may be a CHUNK (the first piece of a large answer, SPECIFICATION.md §8.5: data in the response
  /// buffer, its chunk header in the slot header) or CHUNK_ACK; callers that cannot take one refuse it.
  /// A plain answer is counted as a call (CountCall) from `started` (CallClock() at the call's start; kClockNow:
  /// from here); a CHUNK or CHUNK_ACK answer is a part of a transfer, which counts the call when it ends.
  Result<Answer> Call(const SlotView& s, uint32_t* seq, int32_t size, MsgType type, int64_t deadline, bool* owned,
                      int64_t started = kClockNow) {
    *owned = true;
    if (!IsUserRequestType(type)) return ReservedTypeError(type);
    return Transact(s, seq, size, type, deadline, owned, started);
  }

  /// Call's `started` that reads the clock in Call itself.
  static constexpr int64_t kClockNow = -1;

  /// Call for any type, the transfer's CHUNK and CHUNK_NEXT included (transfer_call.h). A CHUNK's bytes are
  /// at the start of the request buffer whatever its size, its chunk header in the slot header.
  Result<Answer> Transact(const SlotView& s, uint32_t* seq, int32_t size, MsgType type, int64_t deadline, bool* owned,
                          int64_t started = kClockNow) {
    *owned = true;
    Placement req;
    if (!ResolveSize(size, s.capacity, &req)) return TooLargeError(size, s.capacity);
    if (closing()) return ClosedError();
    if (host_shutting_down()) return Error(ErrorCode::kShuttingDown, "the host is shutting down");
    SlotHeader& h = *s.header;
    wire::CounterBlock& counters = block(s.index);
    if (started == kClockNow) started = CallClock();
    h.req_type.store(static_cast<uint32_t>(type), std::memory_order_relaxed);
    h.req_size.store(static_cast<uint32_t>(size), std::memory_order_relaxed);           // two's complement on the wire
    if (type != MsgType::CHUNK_NEXT) Count(counters, wire::kCallBytesOut, req.length);  // message bytes only
    uint32_t tx = 0;
    bool woke_server = false;
    if (!Publish(h, *seq, &tx, &woke_server)) {  // SYNC POINT WRITE: ctl (request bytes and fields)
      *owned = false;
      Quarantine(s.index, h.ctl.load(std::memory_order_acquire));
      CountShared(counters, wire::kProtocol);
      return Error(ErrorCode::kProtocol, "slot " + std::to_string(s.index) + " was taken from its caller");
    }
    *seq = tx;
    if (role_ == Role::kGuest) RingDoorbell();

    ErrorCode abort_code = ErrorCode::kTimeout;
    auto in_flight = [tx](uint32_t v) {
      return wire::CtlSeq(v) == tx && (wire::CtlIs(v, SlotState::kRequest) || wire::CtlIs(v, SlotState::kServing));
    };
    auto abort = [&](bool slow) {
      if (closing()) {
        abort_code = ErrorCode::kClosed;
        return true;
      }
      // A request nobody took yet, while the host shuts down: no server may ever take it (the guest's
      // workers exit), so give up now rather than at the deadline. Both roles: a host call may race its own
      // SendShutdown().
      if (host_shutting_down() && wire::CtlIs(h.ctl.load(std::memory_order_acquire), SlotState::kRequest)) {
        abort_code = ErrorCode::kShuttingDown;
        return true;
      }
      if (!slow && !PeerAliveIsCheap()) return false;
      if (role_ == Role::kGuest) {
        if (PeerAlive()) return false;
        abort_code = ErrorCode::kHostGone;
        return true;
      }
      // No guest: a request nobody took may still be served by a guest that attaches later; one that a dead
      // guest took never will be. The word first, then liveness (SPECIFICATION.md §6.1): in the other order a
      // new guest could attach and take the request in between, and the caller would take it from a live
      // server.
      if (wire::CtlIs(h.ctl.load(std::memory_order_seq_cst), SlotState::kServing) && !PeerAlive()) {
        abort_code = ErrorCode::kPeerDead;
        return true;
      }
      return false;
    };
    uint32_t v = 0;
    int64_t waited_from = 0;
    // Having woken the server, yield while spinning from the start: it may be queued on this CPU.
    WaitStatus st = WaitFor(
        h.ctl, &h.wake_stamp_ns, deadline, spin_, [&](uint32_t w) { return !in_flight(w); }, abort, &v, wire::kWaiting,
        woke_server ? WaitStart::kYield : WaitStart::kSpin, &waited_from);
    if (waited_from != 0) {
      // A round trip that took longer than a spin budget can: the caller or its server lost its CPU meanwhile
      // (or the handler is slow, for which sleeping is right too). Evidence of crowding (SPECIFICATION.md
      // §7.3) that the waits themselves may miss: a waiter preempted mid-spin finds its answer when it runs
      // again, without another look at the clock.
      const int64_t now = platform::MonotonicNs();
      if (now - waited_from > SpinPolicy::kPreemptedNs) spin_.NoteCrowded(now);
    }
    if (st != WaitStatus::kReady) {
      if (abort_code == ErrorCode::kHostGone) {
        *owned = false;  // the segment is dead; nothing to give back
        CountShared(counters, wire::kPeerDead);
        return Error(ErrorCode::kHostGone, "the host died during the call");
      }
      if (abort_code == ErrorCode::kPeerDead && RecoverFromDeadServer(h, tx)) {
        CountShared(counters, wire::kPeerDead);
        return Error(ErrorCode::kPeerDead, "the guest serving slot " + std::to_string(s.index) + " died");
      }
      switch (Cancel(h, tx)) {
        case CancelOutcome::kWithdrawn: break;
        case CancelOutcome::kAbandoned: *owned = false; break;
        case CancelOutcome::kAnswered: v = h.ctl.load(std::memory_order_acquire); goto answered;
        case CancelOutcome::kLost:
          *owned = false;
          Quarantine(s.index, h.ctl.load(std::memory_order_acquire));
          break;
      }
      CountShared(counters, abort_code == ErrorCode::kTimeout    ? wire::kTimeouts
                            : abort_code == ErrorCode::kPeerDead ? wire::kPeerDead
                                                                 : wire::kEnded);
      if (abort_code == ErrorCode::kTimeout) {
        return Error(ErrorCode::kTimeout, "call on slot " + std::to_string(s.index) + " did not finish in time" +
                                              (PeerAlive() ? "" : " (no peer is attached)"));
      }
      if (abort_code == ErrorCode::kPeerDead) {
        return Error(ErrorCode::kPeerDead, "the guest serving slot " + std::to_string(s.index) + " died");
      }
      if (abort_code == ErrorCode::kClosed) {
        return Error(ErrorCode::kClosed, "call on slot " + std::to_string(s.index) + " ended: this side was closed");
      }
      return Error(abort_code, "call on slot " + std::to_string(s.index) + " ended: the host is shutting down");
    }
  answered:
    if (!wire::CtlIs(v, SlotState::kResponse) || wire::CtlSeq(v) != tx) {
      *owned = false;
      Quarantine(s.index, v);
      CountShared(counters, wire::kProtocol);
      return Error(ErrorCode::kProtocol, "slot " + std::to_string(s.index) + " left its transaction (state " +
                                             std::to_string(wire::CtlState(v)) + ")");
    }
    auto answer = ReadAnswer(s);
    if (answer) {
      if (answer->type != MsgType::CHUNK && answer->type != MsgType::CHUNK_ACK) {
        CountCall(s.index, answer->length, started);
      }
    } else if (answer.error().code() == ErrorCode::kRemote) {
      const auto e = static_cast<uint32_t>(answer.error().remote());
      CountShared(counters, wire::kRemoteBase + (e >= 1 && e <= wire::kCountedWireErrors ? e : 0));
    } else {
      CountShared(counters, wire::kProtocol);
    }
    return answer;
  }

  /// A zero-copy caller wrote its request at the start or the end of the request buffer: one of at most
  /// wire::kInlineSize bytes travels in the header (SPECIFICATION.md §8.1), so move it there before Call. An
  /// invalid size is left for Call to refuse.
  static void StageInline(const SlotView& s, int32_t size) noexcept {
    Placement in_buffer;
    if (!ResolveSize(size, s.capacity, &in_buffer) || in_buffer.length > wire::kInlineSize) return;
    uint32_t length = 0;
    uint8_t* to = MessageBytes(*s.header, s.request, s.capacity, size, &length);
    if (length != 0) std::memcpy(to, s.request + in_buffer.offset, length);
  }

  /// A server about to take slot `s` (TryTake): start the transfers of the request's first line and the
  /// response's first line now, so they overlap the take's compare-and-swap instead of following it. A small
  /// request lies in the header, so its buffer is left alone: fetching it would only take from the caller a
  /// line it writes (a zero-copy caller stages small requests there). The size is a hint here, read again
  /// and validated by Serve.
  static void PrefetchForServe(const SlotView& s) noexcept {
    const int32_t size = static_cast<int32_t>(s.header->req_size.load(std::memory_order_relaxed));
    if (size > static_cast<int32_t>(wire::kInlineSize) || size < -static_cast<int32_t>(wire::kInlineSize)) {
      platform::PrefetchRead(size < 0 && size != INT32_MIN ? s.request + (s.capacity - 64) : s.request);
    }
    platform::PrefetchWrite(s.response);
  }

  /// The server half, for a slot this side has taken (TryTake) at `seq`. Reads the request fields once,
  /// validates them, runs the handler unless the runtime answers itself, writes the answer and completes.
  /// `refuse` answers SYSTEM_ERROR kShuttingDown without running the handler. *woke_caller: the caller was
  /// asleep and has been woken.
  CompleteOutcome Serve(const SlotView& s, uint32_t seq, const Handler* handler, bool refuse,
                        bool* woke_caller = nullptr) {
    SlotHeader& h = *s.header;
    wire::CounterBlock& counters = block(s.index);
    // Read once into locals; only the locals are used from here on.
    const int32_t size = static_cast<int32_t>(h.req_size.load(std::memory_order_relaxed));
    const MsgType type = static_cast<MsgType>(h.req_type.load(std::memory_order_relaxed));
    if (type == MsgType::CHUNK || type == MsgType::CHUNK_NEXT) {
      ServeTransfer(s, size, type, handler, refuse, counters);
    } else {
      if (transfers_.live_slots() != 0) transfers_.Drop(s.index);  // a plain request ends any transfer here
      ServePlain(s, size, type, handler, refuse, counters);
    }
    Count(counters, wire::kServed);
    const CompleteOutcome out = Complete(h, seq, woke_caller);  // SYNC POINT WRITE: ctl (response bytes, fields)
    if (out == CompleteOutcome::kDiscarded) CountShared(counters, wire::kLate);
    if (out == CompleteOutcome::kLost) CountShared(counters, wire::kLost);
    return out;
  }

 private:
  // §8.4 step 2-3 for a request of a plain type.
  void ServePlain(const SlotView& s, int32_t size, MsgType type, const Handler* handler, bool refuse,
                  wire::CounterBlock& counters) {
    SlotHeader& h = *s.header;
    uint32_t req_length = 0;
    const uint8_t* req = MessageBytes(h, s.request, s.capacity, size, &req_length);
    if (req == nullptr) {
      AnswerError(h, counters, wire::WireError::kRequestTooLarge);
    } else if (!IsUserRequestType(type)) {
      AnswerError(h, counters, wire::WireError::kReservedType);
    } else if (type == MsgType::HEARTBEAT_REQ) {
      h.resp_type.store(static_cast<uint32_t>(MsgType::HEARTBEAT_RESP), std::memory_order_relaxed);
      h.resp_size.store(0, std::memory_order_relaxed);
      h.resp_error.store(0, std::memory_order_relaxed);
      Count(counters, wire::kHeartbeats);
    } else if (refuse) {
      AnswerError(h, counters, wire::WireError::kShuttingDown);
    } else if (handler == nullptr || !*handler) {
      AnswerError(h, counters, wire::WireError::kNoHandler);
    } else {
      RunHandler(s, Bytes(req, req_length), size < 0, type, *handler, counters);
    }
  }

  // A CHUNK or CHUNK_NEXT (SPECIFICATION.md §8.5): take the chunk, or answer the next one; run the handler once a
  // large request is whole.
  void ServeTransfer(const SlotView& s, int32_t size, MsgType type, const Handler* handler, bool refuse,
                     wire::CounterBlock& counters) {
    SlotHeader& h = *s.header;
    ChunkVerdict v = type == MsgType::CHUNK ? transfers_.OnChunk(s, size) : transfers_.OnNext(s, size);
    switch (v.kind) {
      case ChunkVerdict::kAck:
        h.resp_type.store(static_cast<uint32_t>(MsgType::CHUNK_ACK), std::memory_order_relaxed);
        h.resp_size.store(0, std::memory_order_relaxed);
        h.resp_error.store(0, std::memory_order_relaxed);
        return;
      case ChunkVerdict::kError: AnswerError(h, counters, v.error); return;
      case ChunkVerdict::kAnswered:
        Count(counters, wire::kServeBytesOut, h.resp_size.load(std::memory_order_relaxed));
        return;
      case ChunkVerdict::kRun: break;
    }
    if (refuse) {
      AnswerError(h, counters, wire::WireError::kShuttingDown);
    } else if (handler == nullptr || !*handler) {
      AnswerError(h, counters, wire::WireError::kNoHandler);
    } else {
      RunHandler(s, v.message, false, v.type, *handler, counters);
    }
  }

 public:
  /// Guest side: announce a published guest-slot request to the host's processors.
  void RingDoorbell() noexcept {
    auto& bell = header().doorbell;
    uint32_t old = bell.load(std::memory_order_relaxed);
    while (!bell.compare_exchange_weak(old, (old + wire::kDoorbellIncrement) & ~wire::kDoorbellWaiting,
                                       std::memory_order_seq_cst, std::memory_order_relaxed)) {
    }
    if (old & wire::kDoorbellWaiting) platform::FutexWakeAll(&bell, old);
  }

 private:
  Result<Answer> ReadAnswer(const SlotView& s) {
    SlotHeader& h = *s.header;
    // SYNC POINT READ: ctl (acquired by the wait). Read each field once.
    Answer a;
    a.type = static_cast<MsgType>(h.resp_type.load(std::memory_order_relaxed));
    a.wire_size = static_cast<int32_t>(h.resp_size.load(std::memory_order_relaxed));
    if (a.type == MsgType::SYSTEM_ERROR) {
      const auto code = static_cast<wire::WireError>(h.resp_error.load(std::memory_order_relaxed));
      return Error(ErrorCode::kRemote,
                   std::string("peer answered SYSTEM_ERROR ") + wire::ToString(code) + " (" +
                       std::to_string(static_cast<uint32_t>(code)) + ")",
                   code);
    }
    if (a.type == MsgType::CHUNK || a.type == MsgType::CHUNK_ACK) {
      // A transfer's answers (SPECIFICATION.md §8.5): a chunk's data always starts the buffer; an ack is empty.
      const bool ok = a.type == MsgType::CHUNK ? a.wire_size >= 1 && static_cast<uint32_t>(a.wire_size) <= s.capacity
                                               : a.wire_size == 0;
      if (!ok) {
        return Error(ErrorCode::kProtocol, "peer answered " +
                                               std::string(a.type == MsgType::CHUNK ? "CHUNK" : "CHUNK_ACK") +
                                               " with size " + std::to_string(a.wire_size));
      }
      a.data = s.response;
      a.length = static_cast<uint32_t>(a.wire_size);
      return a;
    }
    a.data = MessageBytes(h, s.response, s.capacity, a.wire_size, &a.length);
    if (a.data == nullptr) {
      return Error(ErrorCode::kProtocol, "peer answered with size " + std::to_string(a.wire_size) + ", outside the " +
                                             std::to_string(s.capacity) + "-byte buffer");
    }
    if (a.type != MsgType::HEARTBEAT_RESP && !IsUserResponseType(a.type)) {
      return Error(ErrorCode::kProtocol,
                   "peer answered with reserved type " + std::to_string(static_cast<uint32_t>(a.type)));
    }
    return a;
  }

  // An error answer's fields, counted.
  static void AnswerError(SlotHeader& h, wire::CounterBlock& counters, wire::WireError e) noexcept {
    WriteErrorResponse(h, e);
    CountAnswered(counters, e);
  }

  void RunHandler(const SlotView& s, Bytes req, bool end_aligned, MsgType type, const Handler& handler,
                  wire::CounterBlock& counters) {
    SlotHeader& h = *s.header;
    Count(counters, wire::kServeBytesIn, req.size());
    Message m;
    m.data = req;
    m.type = type;
    m.end_aligned = end_aligned;
    m.slot = s.index;
    Reply r;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
      r = handler(m, MutableBytes(s.response, s.capacity));
    } catch (const std::exception& e) {
      Log(LogLevel::kWarn, std::string("handler threw on slot ") + std::to_string(s.index) + ": " + e.what());
      AnswerError(h, counters, wire::WireError::kHandlerFailed);
      return;
    } catch (...) {
      Log(LogLevel::kWarn, "handler threw a non-std exception on slot " + std::to_string(s.index));
      AnswerError(h, counters, wire::WireError::kHandlerFailed);
      return;
    }
#else
    // Built without exceptions (-fno-exceptions): nothing can be thrown, so there is nothing to catch; a
    // handler fails a call by returning Reply::Failure().
    r = handler(m, MutableBytes(s.response, s.capacity));
#endif
    if (r.large.fill && r.type != MsgType::SYSTEM_ERROR && IsUserResponseType(r.type)) {
      // An answer from a Source: one that fits the buffer is read into it and sent as usual; a larger one is
      // kept and sent chunk by chunk (SPECIFICATION.md §8.5).
      if (r.large.size > s.capacity) {
        const uint64_t total = r.large.size;
        ChunkVerdict v = total <= wire::kMaxMessageSize ? transfers_.StartAnswer(s, std::move(r.large), r.type)
                                                        : ErrorVerdict(wire::WireError::kResponseTooLarge);
        if (v.kind == ChunkVerdict::kAnswered) {
          Count(counters, wire::kServeBytesOut, h.resp_size.load(std::memory_order_relaxed));
        } else {
          AnswerError(h, counters, v.error);
        }
        return;
      }
      const uint32_t n = static_cast<uint32_t>(r.large.size);
      bool filled = false;
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
      try {
        filled = r.large.fill(0, MutableBytes(s.response, n));
      } catch (...) {
        filled = false;
      }
#else
      filled = r.large.fill(0, MutableBytes(s.response, n));
#endif
      if (!filled) {
        AnswerError(h, counters, wire::WireError::kHandlerFailed);
        return;
      }
      r.size = static_cast<int32_t>(n);
    }
    Placement out;
    if (r.type == MsgType::SYSTEM_ERROR) {
      AnswerError(h, counters, wire::WireError::kHandlerFailed);
    } else if (!IsUserResponseType(r.type)) {
      AnswerError(h, counters, wire::WireError::kReservedType);
    } else if (!ResolveSize(r.size, s.capacity, &out)) {
      AnswerError(h, counters, wire::WireError::kResponseTooLarge);
    } else {
      // A small answer travels in the header (SPECIFICATION.md §8.1). The handler is done with the request,
      // whose inline bytes this overwrites.
      if (out.length != 0 && out.length <= wire::kInlineSize) {
        uint32_t length = 0;
        std::memcpy(MessageBytes(h, s.response, s.capacity, r.size, &length), s.response + out.offset, out.length);
      }
      h.resp_type.store(static_cast<uint32_t>(r.type), std::memory_order_relaxed);
      h.resp_size.store(static_cast<uint32_t>(r.size), std::memory_order_relaxed);
      h.resp_error.store(0, std::memory_order_relaxed);
      Count(counters, wire::kServeBytesOut, out.length);
    }
  }

  static uint64_t NextEndpointId() noexcept {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  // FREE -> CLAIMED on the first free slot of [first, first + n), else a parked one. Frees slots abandoned by a dead
  // server on the way. While all are busy it backs off (yield, then sleeps doubling to 1 ms): that is contention, not
  // the hot path.
  Result<uint32_t> ClaimIn(uint32_t first, uint32_t n, int64_t deadline, uint32_t* seq, ErrorCode busy) {
    int64_t backoff_ns = 1000;
    for (uint32_t round = 0;; ++round) {
      const bool any_quarantined = quarantined_.load(std::memory_order_acquire) != 0;
      for (uint32_t i = 0; i < n; ++i) {
        if (any_quarantined && quarantine_[first + i].held.load(std::memory_order_acquire)) continue;
        if (TryClaim(*segment_.Slot(first + i).header, seq)) return first + i;
      }
      for (uint32_t i = 0; i < n; ++i) {
        if (Unpark(first + i, seq)) return first + i;
      }
      if (closing()) return ClosedError();
      if (role_ == Role::kGuest && host_shutting_down()) {
        return Error(ErrorCode::kShuttingDown, "host is shutting down");
      }
      // Liveness is a system call: asked as seldom for quarantined slots as for abandoned ones.
      if (ReclaimQuarantined(first, n, round % 64 == 63)) continue;
      if (round % 64 == 63 && ReclaimAbandonedIfServerDead(first, n)) continue;
      const int64_t now = platform::MonotonicNs();
      if (now >= deadline) {
        return Error(busy, n == 1 ? "slot " + std::to_string(first) + " stayed busy until the deadline"
                                  : "all " + std::to_string(n) + " slots stayed busy until the deadline");
      }
      if (round < 16) {
        platform::YieldThread();
      } else {
        platform::SleepNs((std::min)(backoff_ns, deadline - now));
        backoff_ns = std::min<int64_t>(backoff_ns * 2, 1000000);
      }
    }
  }

  // T10 for the slots a dead server left ABANDONED. The words are read before liveness, and each CAS expects
  // exactly the word read: a slot that a guest attaching after the liveness check serves and sees abandoned
  // again carries a newer seq, so it is left alone (SPECIFICATION.md §6.1, the same order as T9).
  bool ReclaimAbandonedIfServerDead(uint32_t first, uint32_t n) {
    if (role_ != Role::kHost) return false;
    bool any_abandoned = false;
    for (uint32_t i = 0; i < n && !any_abandoned; ++i) {
      any_abandoned =
          wire::CtlIs(segment_.Slot(first + i).header->ctl.load(std::memory_order_relaxed), SlotState::kAbandoned);
    }
    if (!any_abandoned) return false;
    std::unique_ptr<uint32_t[]> seen(new uint32_t[n]);
    for (uint32_t i = 0; i < n; ++i) seen[i] = segment_.Slot(first + i).header->ctl.load(std::memory_order_seq_cst);
    if (PeerAlive()) return false;
    bool freed = false;
    for (uint32_t i = 0; i < n; ++i) {
      if (!wire::CtlIs(seen[i], SlotState::kAbandoned)) continue;
      const uint32_t seq = wire::CtlSeq(seen[i]);
      freed |= Transition(*segment_.Slot(first + i).header, SlotState::kAbandoned, seq, SlotState::kFree, seq);
    }
    return freed;
  }

  static void ResetBlock(wire::CounterBlock& b) noexcept {
    for (auto& c : b.c) c.store(0, std::memory_order_relaxed);
  }

  Segment segment_;
  platform::File link_;                      // guest: the connection to the host
  std::atomic<bool> guest_present_{false};   // host: a guest holds the seat
  std::atomic<uint64_t> guest_sessions_{0};  // host: guests attached so far
  Role role_;
  int64_t default_timeout_ns_;
  SpinPolicy spin_;
  std::atomic<bool> closing_{false};
  std::atomic<bool> detached_{false};
  static constexpr uint32_t kParked = 0x80000000u;  // parked_[i]: 0, or kParked | the held slot's seq
  const uint64_t id_;
  struct alignas(64) ParkedWord {  // one cache line each: callers of different slots share no line
    std::atomic<uint32_t> word{0};
  };
  std::unique_ptr<ParkedWord[]> parked_;
  struct QuarantinedSlot {
    std::atomic<bool> held{false};
    std::atomic<uint32_t> word{0};     // the word that made this side give the slot up
    std::atomic<uint64_t> session{0};  // PeerSession() then
  };
  std::unique_ptr<QuarantinedSlot[]> quarantine_;
  std::atomic<uint32_t> quarantined_{0};  // how many are held: claims skip the array while 0
  std::mutex reclaim_mu_;
  wire::CounterBlock* blocks_ = nullptr;                // this side's counter blocks, by slot
  std::unique_ptr<wire::CounterBlock[]> local_blocks_;  // they, when the segment has no counters region
  std::unique_ptr<LatencyHistogram> latency_;           // set by EnableLatencyHistogram()
  TransferTable transfers_;                             // what this side's servers hold of large messages
};

}  // namespace detail
}  // namespace shm

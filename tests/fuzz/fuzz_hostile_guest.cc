// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: a malicious guest against a real DirectHost.
//
// Each input is a script. The host under test is real and running: Init() creates the segment, Start() runs
// its guest-call worker, and a caller thread keeps making host calls (copying and zero-copy) with
// millisecond timeouts. The script plays the guest: it attaches as a real guest would (detail::AttachOnce:
// it holds the guest seat, so the host believes a guest is alive, and gets the segment mapped read-write),
// then writes arbitrary header fields, sizes, types, states and sequence numbers, answers host requests with
// forged responses, publishes forged guest calls, rings the doorbell, closes its connection and attaches
// again (a guest "dying" mid-call and a successor taking the seat; a header it has scribbled on may make the
// successor's attach fail, which leaves the seat empty), and lets time pass.
//
// The host must never crash, never read or write outside a slot's buffers (checked explicitly below, since
// ASan does not see inside a shared mapping), and every call must end by its deadline (plus slack).
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shm/shm.h"
#include "shm/wire/counters.h"

namespace {

using shm::wire::SlotHeader;
constexpr uint32_t kHostSlots = 2, kGuestSlots = 2, kSlots = kHostSlots + kGuestSlots, kPayload = 128;
constexpr int64_t kSlackNs = 2'000'000'000;  // a call may end this much after its deadline on a loaded machine

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "fuzz_hostile_guest: %s\n", what);
  std::abort();
}

void Wake(std::atomic<uint32_t>* w) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

struct Input {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  uint8_t U8() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{U8()} << (8 * i);
    return v;
  }
};

// Values that sit on the edges of what a reader must reject.
uint32_t Interesting(Input& in) {
  static const uint32_t kValues[] = {0,
                                     1,
                                     2,
                                     3,
                                     10,
                                     11,
                                     127,
                                     128,
                                     kPayload,
                                     kPayload + 1,
                                     0u - kPayload,
                                     0u - kPayload - 1,
                                     0x80000000u,
                                     0x7FFFFFFFu,
                                     0xFFFFFFFFu,
                                     64};
  const uint8_t pick = in.U8();
  return pick < 16 ? kValues[pick] : in.U32();
}

/// Whether [p, p + n) lies in slot `index`'s request or response buffer (`request` is the request buffer's
/// start), or, for at most 32 bytes, in the inline area of its header (SPECIFICATION.md §8.1).
bool InItsArea(const uint8_t* p, size_t n, const uint8_t* request, uint32_t index, bool response) {
  const uint8_t* lo = request + (response ? kPayload : 0);
  if (n <= kPayload && p >= lo && p + n <= lo + kPayload) return true;
  const shm::wire::Geometry g{kHostSlots, kGuestSlots, kPayload, kPayload};
  const uint8_t* area = request - shm::wire::RequestBufferOffset(g, index) + shm::wire::kSegmentHeaderSize +
                        uint64_t{shm::wire::kSlotHeaderSize} * index + offsetof(shm::wire::SlotHeader, inline_data);
  return n <= shm::wire::kInlineSize && p >= area && p + n <= area + shm::wire::kInlineSize;
}

/// Makes host calls until told to stop; checks every deadline and every returned bound.
void CallerLoop(shm::DirectHost* host, std::atomic<bool>* stop, uint32_t seed) {
  std::vector<uint8_t> resp, req(kPayload, 0x5A);
  for (uint32_t i = 0; !stop->load(std::memory_order_relaxed); ++i) {
    seed = seed * 1103515245u + 12345u;
    const auto timeout = std::chrono::microseconds(500 + (seed >> 8) % 3000);
    const int64_t t0 = shm::platform::MonotonicNs();
    if (i % 3 == 2) {
      auto slot = host->GetZeroCopySlot(timeout);
      if (slot) {
        const shm::MutableBytes buf = slot->RequestBuffer();
        if (buf.size() != kPayload) Fail("zero-copy request buffer has the wrong size");
        auto r = slot->Send((seed & 1) ? -17 : 17, shm::MsgType::FLATBUFFER, timeout);
        if (r) {
          const shm::Bytes got = slot->Response();
          if (got.size() > kPayload ||
              (got.size() > 0 && !InItsArea(got.data(), got.size(), buf.data(), slot->index(), true))) {
            Fail("zero-copy response outside its area");
          }
        }
      }
    } else {
      shm::CallOptions o;
      o.timeout = timeout;
      o.end_aligned = (seed & 2) != 0;
      auto r =
          (i % 3 == 0)
              ? host->Send(shm::Bytes(req.data(), (seed >> 4) % (kPayload + 1)), shm::MsgType::NORMAL, resp, o)
              : host->SendToSlot((seed >> 3) % kHostSlots, shm::Bytes(req.data(), 8), shm::MsgType::APP_START, resp, o);
      if (r && resp.size() > kPayload) Fail("answer larger than the response buffer");
    }
    if (shm::platform::MonotonicNs() - t0 > std::chrono::nanoseconds(timeout).count() + kSlackNs)
      Fail("a host call overran its deadline");
  }
}

/// The guest-call handler: checks that the request it is given lies inside its area (InItsArea), then
/// answers with a size and type taken from the (hostile) request, so the host's own answer checks run too.
shm::Reply Handler(const shm::Message& m, shm::MutableBytes out) {
  if (out.size() != kPayload) Fail("handler got a response buffer of the wrong size");
  if (m.slot < kHostSlots || m.slot >= kSlots) Fail("handler ran for a slot that is not a guest slot");
  if (m.data.size() > kPayload ||
      (m.data.size() > 0 && !InItsArea(m.data.data(), m.data.size(), out.data() - kPayload, m.slot, false))) {
    Fail("handler was given a request outside its area");
  }
  uint32_t sum = 0;
  for (uint8_t b : m.data) sum = sum * 31 + b;  // read every byte it was given
  int32_t size = 0;
  if (m.data.size() >= 4) std::memcpy(&size, m.data.data(), 4);
  const auto type = static_cast<shm::MsgType>(m.data.size() >= 5 ? m.data[4] : (sum & 0xFF));
  std::memset(out.data(), 0xA5, kPayload);
  return shm::Reply{size, type};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::atomic<uint32_t> counter{0};
  static const bool quiet = [] {
    shm::SetLogSink(nullptr);  // handler failures are expected; keep the fuzzer's output readable
    return true;
  }();
  (void)quiet;
  Input in{data, size};
  const std::string name = "fuzz-hostile-" + std::to_string(getpid()) + "-" + std::to_string(counter++);

  shm::HostConfig config;
  config.name = name;
  config.host_slots = kHostSlots;
  config.guest_slots = kGuestSlots;
  config.payload_size = kPayload;
  config.guest_payload_size = kPayload;
  config.default_timeout = std::chrono::milliseconds(5);
  shm::DirectHost host;
  if (auto r = host.Init(config); !r) Fail(("Init failed: " + r.error().ToString()).c_str());

  // The hostile guest's own view: the guest seat and a writable mapping, received like any guest's.
  auto attached =
      shm::detail::AttachOnce(name, shm::wire::AttachRole::kGuest, shm::platform::DeadlineAfter(10'000'000'000));
  if (!attached) Fail(("attach failed: " + attached.error().ToString()).c_str());
  const shm::detail::Segment segment = std::move(attached->segment);
  shm::platform::File seat = std::move(attached->link);
  const shm::wire::Geometry g{kHostSlots, kGuestSlots, kPayload, kPayload};
  const size_t seg_size = shm::wire::SegmentSize(g);
  // The memory is the segment and its counters region after it (SPECIFICATION.md §5.4).
  if (segment.size() != seg_size + shm::wire::CountersSize(g)) Fail("the segment has an unexpected size");
  auto* base = reinterpret_cast<uint8_t*>(&segment.header());
  auto* seg = &segment.header();
  auto slot = [&](uint32_t i) {
    return reinterpret_cast<SlotHeader*>(base + shm::wire::kSegmentHeaderSize + shm::wire::kSlotHeaderSize * i);
  };

  if (auto r = host.Start(Handler); !r) Fail("Start failed");
  std::atomic<bool> stop{false};
  std::thread caller(CallerLoop, &host, &stop, static_cast<uint32_t>(size));

  const uint64_t buffers = shm::wire::BuffersOffset(g);
  while (!in.empty()) {
    switch (in.U8() % 10) {
      case 0: {  // any slot header field := any value
        SlotHeader* h = slot(in.U8() % kSlots);
        std::atomic<uint32_t>* fields[] = {&h->ctl,       &h->req_type,  &h->req_size,
                                           &h->resp_type, &h->resp_size, &h->resp_error};
        const uint8_t f = in.U8() % 6;
        fields[f]->store(f == 0 ? in.U32() : Interesting(in), std::memory_order_seq_cst);
        Wake(&h->ctl);
        break;
      }
      case 1: {  // answer a host request, with forged fields and a chosen (maybe wrong) seq and state
        const int64_t until = shm::platform::MonotonicNs() + 2'000'000;
        const uint8_t how = in.U8();
        const uint32_t resp_type = Interesting(in), resp_size = Interesting(in), resp_error = in.U8();
        for (bool done = false; !done && shm::platform::MonotonicNs() < until;) {
          for (uint32_t i = 0; i < kHostSlots && !done; ++i) {
            SlotHeader* h = slot(i);
            uint32_t cur = h->ctl.load();
            if (shm::wire::CtlState(cur) != 2) continue;  // REQUEST
            const uint32_t seq = shm::wire::CtlSeq(cur);
            const uint32_t serving = shm::wire::MakeCtl(shm::wire::SlotState::kServing, seq);
            if ((how & 1) && !h->ctl.compare_exchange_strong(cur, serving)) continue;
            h->resp_type.store(resp_type);
            h->resp_size.store(resp_size);
            h->resp_error.store(resp_error);
            std::memset(base + shm::wire::RequestBufferOffset(g, i) + kPayload, how, kPayload);
            std::memset(h->inline_data, how, sizeof(h->inline_data));  // where answers of <= 32 bytes lie
            const uint32_t state = (how & 2) ? 4 : (how >> 2) % 8;
            const uint32_t next_seq = (how & 0x20) ? seq + (how >> 6) : seq;
            h->ctl.store(state | ((next_seq & shm::wire::kSeqMask) << shm::wire::kSeqShift));
            Wake(&h->ctl);
            done = true;
          }
          if (!done) std::this_thread::yield();
        }
        break;
      }
      case 2: {  // publish a forged guest call and ring the doorbell
        const uint32_t i = kHostSlots + in.U8() % kGuestSlots;
        SlotHeader* h = slot(i);
        const uint32_t cur = h->ctl.load();
        const uint32_t req_size = Interesting(in), req_type = Interesting(in);
        const uint8_t fill = in.U8(), seq_skew = in.U8();
        h->req_size.store(req_size);
        h->req_type.store(req_type);
        uint8_t* req = base + shm::wire::RequestBufferOffset(g, i);
        std::memset(req, fill, kPayload);
        std::memcpy(req, &req_size, 4);                             // the handler answers with these bytes as its size
        std::memset(h->inline_data, fill, sizeof(h->inline_data));  // ... when the request lies in the header
        std::memcpy(h->inline_data, &req_size, 4);
        h->ctl.store(shm::wire::MakeCtl(shm::wire::SlotState::kRequest, shm::wire::CtlSeq(cur) + 1 + (seq_skew & 3)));
        seg->doorbell.fetch_add(shm::wire::kDoorbellIncrement);
        Wake(&seg->doorbell);
        break;
      }
      case 3:  // the doorbell := any value
        seg->doorbell.store(in.U32());
        Wake(&seg->doorbell);
        break;
      case 4: {  // any 32-bit word of the segment header (magic, geometry, host_state, ...) := any value
        auto* w = reinterpret_cast<std::atomic<uint32_t>*>(base + 4 * (in.U8() % 64));
        w->store(Interesting(in));
        break;
      }
      case 5: {  // scribble on the buffers
        const uint64_t off = buffers + in.U32() % (seg_size - buffers);
        const size_t len = std::min<uint64_t>(in.U8(), seg_size - off);
        std::memset(base + off, in.U8(), len);
        break;
      }
      case 6:  // let the host run
        std::this_thread::sleep_for(std::chrono::microseconds(10 * in.U8()));
        break;
      case 7:  // the guest "dies" (its connection closes) or "comes back" (attaches again, taking the seat)
        if (seat.valid()) {
          seat.Close();
        } else {
          auto again = shm::detail::AttachOnce(name, shm::wire::AttachRole::kGuest,
                                               shm::platform::DeadlineAfter(10'000'000'000));
          if (again) seat = std::move(again->link);  // the new mapping goes; the first one stays in use
        }
        break;
      case 8: {  // take back a guest slot the host answered: free it, or republish it at once
        SlotHeader* h = slot(kHostSlots + in.U8() % kGuestSlots);
        uint32_t cur = h->ctl.load();
        if (shm::wire::CtlState(cur) == 4) {
          const bool again = in.U8() & 1;
          const uint32_t seq = shm::wire::CtlSeq(cur) + (again ? 1 : 0);
          h->ctl.compare_exchange_strong(
              cur, shm::wire::MakeCtl(again ? shm::wire::SlotState::kRequest : shm::wire::SlotState::kFree, seq));
          if (again) Wake(&seg->doorbell);
        }
        break;
      }
      case 9: {  // flip one control word between two values, racing the host
        SlotHeader* h = slot(in.U8() % kSlots);
        const uint32_t a = in.U32(), b = in.U32();
        for (int k = 0, n = in.U8(); k < n; ++k) {
          h->ctl.store((k & 1) ? b : a);
          Wake(&h->ctl);
        }
        break;
      }
    }
  }

  // Shutdown ends an in-flight call at once (kClosed) rather than at its deadline.
  stop.store(true);
  host.Shutdown();
  caller.join();
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
// shm-bench — the library under test: host calls (copying Send and zero-copy slots) and guest calls.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "bench.h"
#include "shm/shm.h"

namespace bench {
namespace {

constexpr shm::MsgType kStopType = static_cast<shm::MsgType>(static_cast<uint32_t>(shm::MsgType::APP_START) + 1);

uint32_t PayloadCapacity(const Options& o) { return static_cast<uint32_t>(std::max<uint64_t>(o.payload, 64)); }

/// The server's handler: echo the request (bulk: read every word, answer their sum in 8 bytes). The Go guest
/// of the go-* cases (go/cmd/shm-bench-guest) answers the same way: change both together.
shm::Handler EchoHandler(bool bulk) {
  return [bulk](const shm::Message& m, shm::MutableBytes out) -> shm::Reply {
    if (bulk) {
      const uint64_t s = SumWords(m.data.data(), m.data.size());
      std::memcpy(out.data(), &s, 8);
      return shm::Reply{8, shm::MsgType::NORMAL};
    }
    if (m.data.size() > out.size()) return shm::Reply::Failure();
    if (!m.data.empty()) std::memcpy(out.data(), m.data.data(), m.data.size());
    return shm::Reply{static_cast<int32_t>(m.data.size()), shm::MsgType::NORMAL};
  };
}

/// Per-thread request source and answer buffer, each on its own cache lines.
struct alignas(64) ThreadState {
  std::vector<uint8_t> src;
  std::vector<uint8_t> resp;
  uint32_t calls = 0;
};

/// Shared by the host caller and the guest caller: the copying or zero-copy round trip on one thread.
class ShmCallerBase : public Caller {
 protected:
  void Prepare(const Options& o) {
    n_ = static_cast<size_t>(o.payload);
    bulk_ = o.mode == "bulk";
    zero_copy_ = o.transport == "shm-zc" || o.transport == "go-zc";
    threads_.resize(static_cast<size_t>(std::max(1, o.threads)));
    for (auto& t : threads_) {
      t.src.resize(n_ + 1);
      FillPattern(t.src.data(), n_);
      t.resp.reserve(std::max<size_t>(n_, 8));
    }
    want_sum_ = SumWords(threads_[0].src.data(), n_);
  }

  template <typename SendCopy>
  bool RoundTrip(int t, SendCopy&& send_copy) {
    ThreadState& ts = threads_[static_cast<size_t>(t)];
    const uint8_t tag = static_cast<uint8_t>(++ts.calls);
    const uint8_t* data = nullptr;
    size_t got = 0;
    if (zero_copy_) {
      shm::ZeroCopySlot& slot = slots_[static_cast<size_t>(t)];
      shm::MutableBytes buf = slot.RequestBuffer();
      if (n_) {
        std::memcpy(buf.data(), ts.src.data(), n_);  // building the request in place
        if (!bulk_) buf[0] = tag;
      }
      auto r = slot.Send(static_cast<int32_t>(n_));
      if (!r) return Fail(r.error().ToString());
      shm::Bytes resp = slot.Response();  // read in place
      data = resp.data();
      got = resp.size();
    } else {
      if (n_ && !bulk_) ts.src[0] = tag;
      auto r = send_copy(shm::Bytes(ts.src.data(), n_), ts.resp);
      if (!r) return Fail(r.error().ToString());
      data = ts.resp.data();
      got = ts.resp.size();
    }
    if (bulk_) {
      uint64_t s = 0;
      if (got != 8) return Fail("bulk answer has the wrong size");
      std::memcpy(&s, data, 8);
      return s == want_sum_ || Fail("bulk checksum differs");
    }
    return EchoOk(data, got, n_, tag, ts.src.data()) || Fail("echo differs");
  }

  bool Fail(std::string what) {
    error_ = std::move(what);
    return false;
  }

  size_t n_ = 0;
  bool bulk_ = false;
  bool zero_copy_ = false;
  uint64_t want_sum_ = 0;
  std::vector<ThreadState> threads_;
  std::vector<shm::ZeroCopySlot> slots_;
};

/// The host calls the guest (every mode but guestcall).
class ShmHostCaller final : public ShmCallerBase {
 public:
  std::string Open(const Options& o) override {
    Prepare(o);
    shm::HostConfig c;
    c.name = o.name;
    c.host_slots = static_cast<uint32_t>(threads_.size());
    c.guest_slots = o.mode == "idle" ? 1 : 0;  // idle: the host's guest-call worker is idle too
    c.payload_size = PayloadCapacity(o);
    if (auto r = host_.Init(c); !r) return "host Init: " + r.error().ToString();
    const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
    while (!host_.GuestAttached()) {
      if (shm::platform::MonotonicNs() > deadline) return "no guest attached within 10 s";
      SleepNs(1'000'000);
    }
    if (o.mode == "idle") {
      if (auto r = host_.Start(EchoHandler(false)); !r) return "host Start: " + r.error().ToString();
    }
    if (zero_copy_) {
      for (size_t i = 0; i < threads_.size(); ++i) {
        auto s = host_.GetZeroCopySlot();
        if (!s) return "GetZeroCopySlot: " + s.error().ToString();
        slots_.push_back(std::move(*s));
      }
    }
    return "";
  }
  bool Call(int t) override {
    return RoundTrip(
        t, [this](shm::Bytes req, std::vector<uint8_t>& resp) { return host_.Send(req, shm::MsgType::NORMAL, resp); });
  }
  void Close() override {
    slots_.clear();
    host_.Shutdown();  // the guest's workers exit on shutdown
  }
  int64_t SleepGapNs() override {
    // Long enough for the guest's spin budget to have expired: the larger of the host's learned budget and the
    // library's ceiling (the guest learns its own budget, bounded by the same ceiling), twice, plus 1 ms.
    const int64_t budget = std::max<int64_t>(host_.spin_budget_ns(), shm::detail::SpinPolicy::kMaxBudgetNs);
    return 2 * budget + 1'000'000;
  }
  std::string Facts() override { return "host spin budget " + std::to_string(host_.spin_budget_ns() / 1000) + " us"; }

 private:
  shm::DirectHost host_;
};

/// The guest calls the host (guestcall mode).
class ShmGuestCaller final : public ShmCallerBase {
 public:
  std::string Open(const Options& o) override {
    Prepare(o);
    shm::GuestConfig c;
    c.name = o.name;
    if (auto r = guest_.Connect(c); !r) return "guest Connect: " + r.error().ToString();
    if (zero_copy_) {
      for (size_t i = 0; i < threads_.size(); ++i) {
        auto s = guest_.AcquireGuestSlot();
        if (!s) return "AcquireGuestSlot: " + s.error().ToString();
        slots_.push_back(std::move(*s));
      }
    }
    return "";
  }
  bool Call(int t) override {
    return RoundTrip(t, [this](shm::Bytes req, std::vector<uint8_t>& resp) {
      return guest_.SendGuestCall(req, shm::MsgType::NORMAL, resp);
    });
  }
  void Close() override {
    slots_.clear();
    std::vector<uint8_t> ignored;
    (void)guest_.SendGuestCall(shm::Bytes(), kStopType, ignored, {std::chrono::seconds(2)});
    guest_.Close();
  }

 private:
  shm::DirectGuest guest_;
};

/// The large-* modes (bench.h): DirectHost::Call with the request read from the caller's buffer (written chunk
/// by chunk into the slot) and the answer copied straight into the caller's buffer, on one host slot of
/// `capacity` bytes. Messages larger than the slot travel as transfers (SPECIFICATION.md §8.5).
class ShmLargeCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    o_ = o;
    shape_ = ShapeOf(o);
    src_.resize(shape_.req);
    FillPattern(src_.data(), shape_.req);
    dst_.resize(shape_.resp);
    FillPattern(dst_.data(), shape_.resp);  // touched before the window
    shm::HostConfig c;
    c.name = o.name;
    c.host_slots = 1;
    c.guest_slots = 0;
    c.payload_size = static_cast<uint32_t>(o.capacity);
    if (auto r = host_.Init(c); !r) return "host Init: " + r.error().ToString();
    const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
    while (!host_.GuestAttached()) {
      if (shm::platform::MonotonicNs() > deadline) return "no guest attached within 10 s";
      SleepNs(1'000'000);
    }
    return "";
  }
  bool Call(int) override {
    src_[0] = static_cast<uint8_t>(++calls_);
    auto r = host_.Call(shm::Source::Of(shm::Bytes(src_.data(), src_.size())), shm::MsgType::NORMAL,
                        shm::Sink::InBuffer(shm::MutableBytes(dst_.data(), dst_.size())));
    if (!r) return Fail(r.error().ToString());
    return LargeAnswerOk(o_, dst_.data(), static_cast<size_t>(r->size), src_.data()) || Fail("answer differs");
  }
  void Close() override { host_.Shutdown(); }
  std::string Facts() override {
    return "slot " + std::to_string(o_.capacity / 1024) + " KiB; host spin budget " +
           std::to_string(host_.spin_budget_ns() / 1000) + " us";
  }

 private:
  bool Fail(std::string what) {
    error_ = std::move(what);
    return false;
  }
  Options o_;
  LargeShape shape_;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_, dst_;
  shm::DirectHost host_;
};

/// The guest's handler of the large-* modes: a large request is assembled in `whole` (the receive buffer, kept
/// across calls, so that an echo can answer from it after the handler has returned); a large answer is read
/// by the library from that buffer or from the pattern.
shm::Handler LargeHandler(const Options& o, std::vector<uint8_t>& pattern) {
  return [o, &pattern](const shm::Message& m, shm::MutableBytes out) -> shm::Reply {
    const LargeShape shape = ShapeOf(o);
    if (m.data.size() != shape.req) return shm::Reply::Failure();
    uint8_t small[kLargeSmallSide];
    const uint8_t* answer = LargeAnswer(o, m.data.data(), m.data.size(), pattern.data(), small);
    if (shape.resp <= out.size()) {
      std::memcpy(out.data(), answer, shape.resp);
      return shm::Reply{static_cast<int32_t>(shape.resp), shm::MsgType::NORMAL};
    }
    return shm::Reply::Large(shm::Source::Of(shm::Bytes(answer, shape.resp)));
  };
}

/// The guest serves the host's calls until the host shuts down.
class ShmGuestServer final : public Server {
 public:
  int Run(const Options& o) override {
    shm::DirectGuest guest;
    shm::GuestConfig c;
    c.name = o.name;
    const bool large = IsLargeMode(o.mode);
    const LargeShape shape = large ? ShapeOf(o) : LargeShape{};
    std::vector<uint8_t> whole(shape.req), pattern(o.mode == "large-resp" ? shape.resp : 0);
    FillPattern(whole.data(), whole.size());  // touched before the window
    FillPattern(pattern.data(), pattern.size());
    if (large) {
      c.transfers.receive_buffer = [&whole](uint64_t size, shm::MsgType, uint32_t) {
        return size <= whole.size() ? shm::MutableBytes(whole.data(), static_cast<size_t>(size)) : shm::MutableBytes();
      };
    }
    if (auto r = guest.Connect(c); !r) {
      fprintf(stderr, "shm guest: %s\n", r.error().ToString().c_str());
      return 2;
    }
    if (auto r = guest.Start(large ? LargeHandler(o, pattern) : EchoHandler(o.mode == "bulk")); !r) return 2;
    while (!g_stop.load()) {
      auto r = guest.Wait(std::chrono::milliseconds(200));
      if (r || r.error().code() != shm::ErrorCode::kTimeout) break;
    }
    guest.Close();
    return 0;
  }
};

/// The host serves guest calls on its worker until the guest sends the stop message.
class ShmHostServer final : public Server {
 public:
  int Run(const Options& o) override {
    shm::DirectHost host;
    shm::HostConfig c;
    c.name = o.name;
    c.host_slots = 1;
    c.guest_slots = static_cast<uint32_t>(std::max(1, o.threads));
    c.payload_size = PayloadCapacity(o);
    if (auto r = host.Init(c); !r) {
      fprintf(stderr, "shm host: %s\n", r.error().ToString().c_str());
      return 2;
    }
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    shm::Handler echo = EchoHandler(o.mode == "bulk");
    auto r = host.Start([&](const shm::Message& m, shm::MutableBytes out) -> shm::Reply {
      if (m.type == kStopType) {
        std::lock_guard<std::mutex> lock(mu);
        done = true;
        cv.notify_all();
        return shm::Reply{0, shm::MsgType::NORMAL};
      }
      return echo(m, out);
    });
    if (!r) return 2;
    std::unique_lock<std::mutex> lock(mu);
    while (!done && !g_stop.load()) cv.wait_for(lock, std::chrono::milliseconds(200));
    lock.unlock();
    host.Shutdown();
    return 0;
  }
};

}  // namespace

std::unique_ptr<Caller> MakeShmCaller(const Options& o) {
  if (IsLargeMode(o.mode)) return std::make_unique<ShmLargeCaller>();
  if (o.mode == "guestcall") return std::make_unique<ShmGuestCaller>();
  return std::make_unique<ShmHostCaller>();
}

std::unique_ptr<Server> MakeShmServer(const Options& o) {
  if (o.mode == "guestcall") return std::make_unique<ShmHostServer>();
  return std::make_unique<ShmGuestServer>();
}

}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// shm-bench — iceoryx 2.0 request/response (untyped client and server), both sides busy-polling.
// Built only when find_package(iceoryx_posh) succeeds; the orchestrator starts and stops iox-roudi itself.
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "bench.h"
#include "iceoryx_posh/popo/untyped_client.hpp"
#include "iceoryx_posh/popo/untyped_server.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

namespace bench {
namespace {

iox::capro::ServiceDescription Service(const std::string& name) {
  return iox::capro::ServiceDescription(iox::capro::IdString_t(iox::cxx::TruncateToCapacity, "shm-bench"),
                                        iox::capro::IdString_t(iox::cxx::TruncateToCapacity, "rr"),
                                        iox::capro::IdString_t(iox::cxx::TruncateToCapacity, name.c_str()));
}

void InitRuntime(const char* role) {
  const std::string n = std::string("shm-bench-") + role + "-" + std::to_string(getpid());
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, n.c_str()));
}

class IceoryxCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    large_ = IsLargeMode(o.mode);
    if (large_) {
      if (o.payload > kIceoryxLargest) {
        return "n/a: the iceoryx baseline's largest chunk (shm-bench's RouDi memory pools, roudi.cc) holds " +
               std::to_string(kIceoryxLargest >> 20) + " MiB; " + std::to_string(o.payload >> 20) +
               " MiB would need a pool that reserves several times that in shared memory for the whole run";
      }
      o_ = o;
      shape_ = ShapeOf(o);
      n_ = shape_.req;
    }
    src_.resize(n_ + 1);
    FillPattern(src_.data(), n_);
    InitRuntime("caller");
    client_ = std::make_unique<iox::popo::UntypedClient>(Service(o.name));
    const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
    while (client_->getConnectionState() != iox::ConnectionState::CONNECTED) {
      if (shm::platform::MonotonicNs() > deadline) return "iceoryx client did not connect within 10 s";
      SleepNs(1'000'000);
    }
    return "";
  }
  bool Call(int) override {
    const uint8_t tag = static_cast<uint8_t>(++calls_);
    if (large_) src_[0] = tag;  // LargeAnswerOk reads the tag there
    auto loaned = client_->loan(static_cast<uint32_t>(n_), alignof(uint64_t));
    if (loaned.has_error()) return Fail("loan failed");
    auto* req = static_cast<uint8_t*>(loaned.value());
    if (n_) {
      std::memcpy(req, src_.data(), n_);  // building the request in the loaned chunk
      req[0] = tag;
    }
    if (client_->send(req).has_error()) return Fail("send failed");
    for (;;) {
      auto taken = client_->take();
      if (!taken.has_error()) {
        const void* resp = taken.value();
        const auto* chunk = iox::mepoo::ChunkHeader::fromUserPayload(resp);
        const bool ok =
            large_ ? LargeAnswerOk(o_, static_cast<const uint8_t*>(resp), chunk->userPayloadSize(), src_.data())
                   : EchoOk(static_cast<const uint8_t*>(resp), chunk->userPayloadSize(), n_, tag, src_.data());
        client_->releaseResponse(resp);
        return ok || Fail("echo differs");
      }
      shm::platform::CpuRelax();
    }
  }
  void Close() override { client_.reset(); }

 private:
  bool Fail(const char* what) {
    error_ = what;
    return false;
  }
  std::unique_ptr<iox::popo::UntypedClient> client_;
  bool large_ = false;
  Options o_;
  LargeShape shape_;
  size_t n_ = 0;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_;
};

class IceoryxServer final : public Server {
 public:
  int Run(const Options& o) override {
    InitRuntime("server");
    iox::popo::UntypedServer server(Service(o.name));
    // large-*: the answer of bench.h's shapes (large-resp answers the pattern; the others as the echo does).
    const bool large = IsLargeMode(o.mode) && o.payload <= kIceoryxLargest;
    const LargeShape shape = large ? ShapeOf(o) : LargeShape{};
    std::vector<uint8_t> pattern(o.mode == "large-resp" ? shape.resp : 0);
    FillPattern(pattern.data(), pattern.size());
    while (!g_stop.load(std::memory_order_relaxed)) {
      auto taken = server.take();
      if (taken.has_error()) {
        shm::platform::CpuRelax();
        continue;
      }
      const void* req = taken.value();
      const auto* header = iox::popo::RequestHeader::fromPayload(req);
      const uint32_t size = iox::mepoo::ChunkHeader::fromUserPayload(req)->userPayloadSize();
      const uint8_t* answer = static_cast<const uint8_t*>(req);
      uint32_t answer_size = size;
      uint8_t small[kLargeSmallSide];
      if (large) {
        answer = LargeAnswer(o, answer, size, pattern.data(), small);
        answer_size = static_cast<uint32_t>(shape.resp);
      }
      auto loaned = server.loan(header, answer_size, alignof(uint64_t));
      if (!loaned.has_error()) {
        if (answer_size) std::memcpy(loaned.value(), answer, answer_size);
        (void)server.send(loaned.value());
      }
      server.releaseRequest(req);
    }
    return 0;
  }
};

}  // namespace

bool HaveIceoryx() { return true; }
std::unique_ptr<Caller> MakeIceoryxCaller() { return std::make_unique<IceoryxCaller>(); }
std::unique_ptr<Server> MakeIceoryxServer() { return std::make_unique<IceoryxServer>(); }

}  // namespace bench

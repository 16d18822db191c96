// SPDX-License-Identifier: Apache-2.0
// shm-bench — a pair of Boost.Interprocess message_queues (request queue and response queue, one message each).
// Built only when Boost's headers are found.
#include <algorithm>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"

namespace bench {
namespace {

namespace bip = boost::interprocess;

std::string RequestQueue(const std::string& name) { return name + "-req"; }
std::string ResponseQueue(const std::string& name) { return name + "-resp"; }

class BoostCaller final : public Caller {
 public:
  std::string Open(const Options& o) override {
    n_ = static_cast<size_t>(o.payload);
    src_.resize(n_ + 1);
    dst_.resize(n_ + 1);
    FillPattern(src_.data(), n_);
    name_ = o.name;
    try {
      RemoveBoostQueues(name_);
      const size_t max = std::max<size_t>(n_, 1);
      req_ = std::make_unique<bip::message_queue>(bip::create_only, RequestQueue(name_).c_str(), 1, max);
      resp_ = std::make_unique<bip::message_queue>(bip::create_only, ResponseQueue(name_).c_str(), 1, max);
    } catch (const std::exception& e) {
      return std::string("message_queue: ") + e.what();
    }
    return "";
  }
  bool Call(int) override {
    const uint8_t tag = static_cast<uint8_t>(++calls_);
    if (n_) src_[0] = tag;
    try {
      req_->send(src_.data(), n_, 0);
      bip::message_queue::size_type got = 0;
      unsigned int prio = 0;
      resp_->receive(dst_.data(), dst_.size(), got, prio);
      return EchoOk(dst_.data(), static_cast<size_t>(got), n_, tag, src_.data()) || Fail("echo differs");
    } catch (const std::exception& e) {
      return Fail(e.what());
    }
  }
  void Close() override {
    req_.reset();
    resp_.reset();
    RemoveBoostQueues(name_);
  }

 private:
  bool Fail(const std::string& what) {
    error_ = what;
    return false;
  }
  std::string name_;
  size_t n_ = 0;
  uint32_t calls_ = 0;
  std::vector<uint8_t> src_, dst_;
  std::unique_ptr<bip::message_queue> req_, resp_;
};

class BoostServer final : public Server {
 public:
  int Run(const Options& o) override {
    std::unique_ptr<bip::message_queue> req, resp;
    const int64_t deadline = shm::platform::MonotonicNs() + 10'000'000'000;
    for (;;) {  // the caller creates the queues
      try {
        req = std::make_unique<bip::message_queue>(bip::open_only, RequestQueue(o.name).c_str());
        resp = std::make_unique<bip::message_queue>(bip::open_only, ResponseQueue(o.name).c_str());
        break;
      } catch (const std::exception&) {
        if (shm::platform::MonotonicNs() > deadline || g_stop.load()) return 2;
        SleepNs(1'000'000);
      }
    }
    std::vector<uint8_t> buf(std::max<size_t>(static_cast<size_t>(o.payload), 1));
    try {
      while (!g_stop.load()) {
        bip::message_queue::size_type got = 0;
        unsigned int prio = 0;
        const auto until = boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(100);
        if (!req->timed_receive(buf.data(), buf.size(), got, prio, until)) continue;
        resp->send(buf.data(), got, 0);
      }
    } catch (const std::exception&) {
      return 0;  // the caller removed the queues
    }
    return 0;
  }
};

}  // namespace

bool HaveBoost() { return true; }
void RemoveBoostQueues(const std::string& name) {
  bip::message_queue::remove(RequestQueue(name).c_str());
  bip::message_queue::remove(ResponseQueue(name).c_str());
}
std::unique_ptr<Caller> MakeBoostCaller() { return std::make_unique<BoostCaller>(); }
std::unique_ptr<Server> MakeBoostServer() { return std::make_unique<BoostServer>(); }

}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// A fake host for attach tests: it takes a segment name, holds memory of chosen bytes and size, and answers
// every hello with a chosen reply: the memory sealed or not, with zero, one or two descriptors, a malformed
// record. It plays the hostile or broken host a guest must survive (SPECIFICATION.md §4.2).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shm/platform/platform.h"
#include "shm/wire/layout.h"

namespace shm_test {

struct FakeReply {
  uint32_t status = 0;  // wire::AttachStatus
  uint32_t detail = 0;
  uint32_t reserved = 0;
  size_t size = shm::wire::kReplySize;  // bytes of the record sent (a wrong size is malformed)
  int descriptors = 1;                  // how many descriptors of the memory travel with it
  bool seal = true;                     // seal the memory against resizing
};

class FakeHost {
 public:
  /// Take `name` and hold memory of `file_size` bytes starting with `bytes`.
  FakeHost(const std::string& name, const std::vector<uint8_t>& bytes, uint64_t file_size, FakeReply reply)
      : reply_(reply) {
    auto l = shm::platform::ListenRendezvous(name);
    if (!l) {
      error_ = l.error().ToString();
      return;
    }
    listener_ = std::move(*l);
    const int fd = ::memfd_create(("shm/" + name).c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(file_size)) != 0) {
      error_ = "memfd";
      return;
    }
    memory_ = shm::platform::File(fd);
    const size_t n = std::min<size_t>(bytes.size(), file_size);
    if (n > 0 && ::pwrite(fd, bytes.data(), n, 0) != static_cast<ssize_t>(n)) error_ = "pwrite";
    if (reply.seal && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) error_ = "seal";
    thread_ = std::thread([this] { Serve(); });
  }
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;
  ~FakeHost() {
    stop_.store(true);
    ::shutdown(listener_.fd(), SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  int hellos() const { return hellos_.load(); }

 private:
  void Serve() {
    std::vector<shm::platform::File> kept;  // connections stay open: the guest must not see end of file
    while (!stop_.load()) {
      if (!shm::platform::WaitReadable(listener_, shm::platform::DeadlineAfter(100000000))) continue;
      auto c = shm::platform::AcceptConnection(listener_);
      if (!c || !c->valid()) continue;
      if (!shm::platform::WaitReadable(*c, shm::platform::DeadlineAfter(5000000000))) continue;
      shm::wire::Hello hello;
      auto rec = shm::platform::ReceiveRecord(*c, &hello, sizeof hello);
      if (!rec || rec->size == 0) continue;
      hellos_.fetch_add(1);
      uint8_t record[64] = {};
      shm::wire::AttachReply r;
      r.status = reply_.status;
      r.host_pid = static_cast<uint32_t>(::getpid());
      r.detail = reply_.detail;
      r.reserved = reply_.reserved;
      std::memcpy(record, &r, sizeof r);
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)] = {};
      iovec iov{record, reply_.size};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      if (reply_.descriptors > 0) {
        const int fds[2] = {memory_.fd(), memory_.fd()};
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * static_cast<size_t>(reply_.descriptors));
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * static_cast<size_t>(reply_.descriptors));
        std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * static_cast<size_t>(reply_.descriptors));
      }
      (void)::sendmsg(c->fd(), &msg, MSG_NOSIGNAL);
      kept.push_back(std::move(*c));
    }
  }

  FakeReply reply_;
  shm::platform::File listener_;
  shm::platform::File memory_;
  std::string error_;
  std::atomic<bool> stop_{false};
  std::atomic<int> hellos_{0};
  std::thread thread_;
};

}  // namespace shm_test

// SPDX-License-Identifier: Apache-2.0
// shm-bench: the list of cases, and which of them run on this build.
#include "orchestrator.h"

namespace bench {
namespace orchestrator {

std::vector<Case> AllCases(bool with_iceoryx, bool with_boost, bool with_go, bool quick) {
  std::vector<Case> cs;
  // The floor designs, then spin-floor: not run, but chosen per run from the designs before it (ChooseFloor).
  // The inline designs only where the payload fits in their control line, and only back to back.
  auto floors = [&cs](const std::string& group, const std::string& mode, uint64_t p) {
    for (const auto& t : kFloorDesigns) cs.push_back({group, t, mode, p, 1});
    if (group == "busy" && p <= kFloorInlineMax) {
      for (const auto& t : kInlineDesigns) cs.push_back({group, t, mode, p, 1});
    }
    cs.push_back({group, "spin-floor", mode, p, 1});
  };
  std::vector<std::string> busy = {"futex-floor", "shm-copy", "shm-zc", "uds-seqpacket", "uds-stream", "pipe"};
  if (with_iceoryx) busy.push_back("iceoryx");
  if (with_boost) busy.push_back("boost-mq");
  // Every transport at kPayloads; at the other sizes of the small-payload table only shm and the floors.
  std::vector<uint64_t> payloads = kPayloads;
  payloads.insert(payloads.end(), kSmallPayloads.begin(), kSmallPayloads.end());
  std::sort(payloads.begin(), payloads.end());
  payloads.erase(std::unique(payloads.begin(), payloads.end()), payloads.end());
  for (uint64_t p : payloads) {
    const bool every = std::find(kPayloads.begin(), kPayloads.end(), p) != kPayloads.end();
    floors("busy", "busy", p);
    for (const auto& t : every ? busy : std::vector<std::string>{"shm-copy", "shm-zc"}) {
      cs.push_back({"busy", t, "busy", p, 1});
      // Next to the C++ guest they are compared with. 1 MiB echo adds nothing that the bulk case does not show.
      if (with_go && every && t == "shm-zc" && p < (1u << 20)) {
        for (const char* g : {"go-copy", "go-zc"}) cs.push_back({"busy", g, "busy", p, 1});
      }
    }
  }
  for (const char* t : {"shm-copy", "shm-zc"}) {
    for (int n : {1, 2, 4}) cs.push_back({"threads", t, "busy", 64, n});
  }
  for (const char* t : {"futex-floor", "shm-copy", "shm-zc", "go-copy", "go-zc", "uds-seqpacket", "pipe"}) {
    if (with_go || !IsGoGuest(t)) cs.push_back({"sleep", t, "sleep", 64, 1});
  }
  // One CPU-bound process competes with the pair for the machine's cores: what a busy machine does to each transport.
  floors("contended", "busy", 64);
  for (const char* t : {"futex-floor", "shm-copy", "shm-zc", "uds-seqpacket"}) {
    cs.push_back({"contended", t, "busy", 64, 1});
  }
  cs.push_back({"idle", "shm-copy", "idle", 64, 1});
  for (const char* t : {"shm-copy", "shm-zc"}) cs.push_back({"guestcall", t, "guestcall", 64, 1});
  cs.push_back({"bulk", "memcpy", "bulk", 1u << 20, 1});
  floors("bulk", "bulk", 1u << 20);
  for (const char* t : {"shm-copy", "shm-zc", "go-zc"}) {
    if (with_go || !IsGoGuest(t)) cs.push_back({"bulk", t, "bulk", 1u << 20, 1});
  }
  // Messages larger than a slot, three shapes (bench.h): shm (C++ and Go guest) and the chunked floor at each
  // slot capacity, beside memcpy, a stream socket and iceoryx (which reports n/a beyond kIceoryxLargest).
  for (const auto& g : kLargeGroups) {
    for (uint64_t p : kLargePayloads) {
      if (quick && p != kLargePayloads.front()) continue;
      cs.push_back({g, "memcpy", g, p, 1});
      for (uint64_t cap : kLargeCapacities) {
        for (const char* t : {"floor-chunk", "floor-chunk2", "shm-copy", "go-copy"}) {
          if (with_go || !IsGoGuest(t)) cs.push_back({g, t, g, p, 1, cap});
        }
      }
      cs.push_back({g, "uds-stream", g, p, 1});
      if (with_iceoryx) cs.push_back({g, "iceoryx", g, p, 1});
    }
  }
  return cs;
}

}  // namespace orchestrator
}  // namespace bench

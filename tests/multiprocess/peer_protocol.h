// SPDX-License-Identifier: Apache-2.0
// What the multi-process tests and their peer executable (shm_test_peer) agree on: request types with a
// special meaning to the peer's handler, and exit codes that say how the peer ended.
#pragma once

#include <cstdint>

#include "shm/error.h"
#include "shm/wire/protocol.h"

namespace shm_test {

// Request types the peer's guest handler treats specially. Every other type is echoed: same bytes, same
// alignment (start or end of the buffer), same type when it is a valid response type, else NORMAL.
constexpr uint32_t kTypeSlot = 200;       // reply: the slot index, as decimal text
constexpr uint32_t kTypeThrow = 201;      // the handler throws
constexpr uint32_t kTypeReplySize = 202;  // payload: a decimal int32; reply with that size, writing nothing
constexpr uint32_t kTypeReplyType = 203;  // payload: a decimal u32; reply with size 0 and that type
constexpr uint32_t kTypeFail = 204;       // the handler returns Reply::Failure()
constexpr uint32_t kTypeBlock = 205;      // print "ENTERED <slot> <payload>", wait for a stdin line, then echo
constexpr uint32_t kTypeCount = 206;      // reply: how many times the handler ran (this call included)
constexpr uint32_t kTypeBarrier = 207;    // payload "<round> <n>": wait until n calls of the round are inside
                                          // the handler (60 s at most), then reply "ok" (or "timeout")

constexpr shm::MsgType Type(uint32_t t) { return static_cast<shm::MsgType>(t); }

// Exit codes of shm_test_peer.
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitCheckFailed = 3;  // a result the peer verifies itself was wrong (printed on stdout)
constexpr int kExitErrorBase = 100;  // 100 + shm::ErrorCode of the library call that failed

constexpr int ExitCodeFor(shm::ErrorCode c) { return kExitErrorBase + static_cast<int>(c); }

}  // namespace shm_test

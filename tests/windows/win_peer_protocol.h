// SPDX-License-Identifier: Apache-2.0
// What win_test.cc and shm_win_peer agree on: request types that pick the peer handler's behaviour.
#pragma once

#include <cstdint>

namespace shm_win {

constexpr uint32_t kHang = 200;  ///< The guest's handler prints "SERVING" and never returns.
constexpr uint32_t kFail = 201;  ///< The handler fails: the caller gets SYSTEM_ERROR HandlerFailed.

}  // namespace shm_win

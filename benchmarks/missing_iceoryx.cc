// SPDX-License-Identifier: Apache-2.0
// shm-bench — stand-ins when iceoryx was not found at configure time: the iceoryx baseline is skipped.
#include "bench.h"

namespace bench {
bool HaveIceoryx() { return false; }
std::unique_ptr<Caller> MakeIceoryxCaller() { return nullptr; }
std::unique_ptr<Server> MakeIceoryxServer() { return nullptr; }
}  // namespace bench

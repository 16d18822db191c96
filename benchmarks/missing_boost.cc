// SPDX-License-Identifier: Apache-2.0
// shm-bench — stand-ins when Boost was not found at configure time: the message_queue baseline is skipped.
#include "bench.h"

namespace bench {
bool HaveBoost() { return false; }
void RemoveBoostQueues(const std::string&) {}
std::unique_ptr<Caller> MakeBoostCaller() { return nullptr; }
std::unique_ptr<Server> MakeBoostServer() { return nullptr; }
}  // namespace bench

// SPDX-License-Identifier: Apache-2.0
// shm — logging through a user-settable sink. The library never writes to stdout.
#pragma once

#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

namespace shm {

/// Severity of a log line, in increasing order; compare with < and >=.
enum class LogLevel {
  kDebug = 0,  ///< Detail for debugging the library.
  kInfo = 1,   ///< Events worth knowing (a guest attached, say).
  kWarn = 2,   ///< Something failed but the library goes on (a handler threw, a peer misbehaved).
  kError = 3,  ///< A failure the application should act on.
};

/// Receives every log line the library emits. Called from library threads (workers included); must be
/// thread-safe and must not call back into the library.
using LogSink = std::function<void(LogLevel, std::string_view)>;

namespace detail {
struct LogState {
  std::mutex mu;
  LogSink sink;
  bool set = false;
};
inline LogState& GetLogState() {
  static LogState s;
  return s;
}
}  // namespace detail

/// Replace the process-wide sink. An empty sink discards everything. Until the first call, warnings and errors
/// go to stderr. Thread-safe.
inline void SetLogSink(LogSink sink) {
  auto& s = detail::GetLogState();
  std::lock_guard<std::mutex> lock(s.mu);
  s.sink = std::move(sink);
  s.set = true;
}

/// Emit one line through the sink. Never on the success hot path. Thread-safe.
inline void Log(LogLevel level, std::string_view message) {
  auto& s = detail::GetLogState();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.set) {
    if (s.sink) s.sink(level, message);
    return;
  }
  if (level >= LogLevel::kWarn) {
    std::fprintf(stderr, "shm %s: %.*s\n", level == LogLevel::kWarn ? "warning" : "error",
                 static_cast<int>(message.size()), message.data());
  }
}

}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// shm — messages of any size: where a large message's bytes come from and where an answer's bytes go. A message
// larger than its slot travels in chunks (SPECIFICATION.md §8.5); these types let neither side hold it twice.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "shm/bytes.h"
#include "shm/platform/copy.h"
#include "shm/wire/protocol.h"

namespace shm {

/// The bytes of a message to send, produced on demand: the library calls `fill` for consecutive pieces, each
/// written straight into shared memory (a slot's buffer), so the message never needs to exist whole in the
/// sender's memory. Copyable value; what `fill` captures must stay valid until the call (or, for a handler's
/// Reply::Large, the transfer of the answer) ends.
struct Source {
  /// The message's size in bytes.
  uint64_t size = 0;
  /// Write bytes [offset, offset + into.size()) of the message into `into`, all of them. Return false to fail
  /// the call (the caller gets kInvalidArgs; a handler's answer becomes SYSTEM_ERROR HandlerFailed). Called
  /// in order of offset, from the thread that runs the call (or, for an answer, from a serving thread), never
  /// concurrently for one message. `into` is shared memory: write it, do not keep it.
  std::function<bool(uint64_t offset, MutableBytes into)> fill;

  /// The bytes of `bytes`, which must stay valid (and unchanged) while the Source is in use.
  static Source Of(Bytes bytes) {
    return Source{bytes.size(), [bytes](uint64_t offset, MutableBytes into) {
                    platform::CopyBytes(into.data(), bytes.data() + offset, into.size());
                    return true;
                  }};
  }
  /// A Source that owns its bytes (moved in): for answers that outlive the handler that built them.
  static Source Owning(std::vector<uint8_t> bytes) {
    auto kept = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
    return Source{kept->size(), [kept](uint64_t offset, MutableBytes into) {
                    platform::CopyBytes(into.data(), kept->data() + offset, into.size());
                    return true;
                  }};
  }
};

/// Where an answer's bytes go. The library calls `destination` once, with the answer's size and type, before
/// any byte arrives, and copies the answer straight from shared memory into what it returns (never zeroing
/// it). Copyable value.
struct Sink {
  /// Return memory for `size` bytes (at least `size`; the library writes the first `size`). A view shorter
  /// than `size` (or empty) refuses the answer: the call fails with kTooLarge. The memory must stay valid
  /// until the call returns.
  std::function<MutableBytes(uint64_t size, MsgType type)> destination;

  /// Into `out`, resized to the answer's size (a vector's resize zeroes what it adds: for memory that is not
  /// zeroed, give a destination of your own). `out` must outlive the call.
  static Sink Into(std::vector<uint8_t>& out) {
    return Sink{[&out](uint64_t size, MsgType) -> MutableBytes {
      if (size > out.max_size()) return MutableBytes();
      out.resize(static_cast<size_t>(size));
      return MutableBytes(out.data(), out.size());
    }};
  }
  /// Into `buffer`, the caller's own memory; an answer larger than it fails the call with kTooLarge.
  static Sink InBuffer(MutableBytes buffer) {
    return Sink{[buffer](uint64_t size, MsgType) { return size <= buffer.size() ? buffer : MutableBytes(); }};
  }
};

/// What a call received: the answer's type and size (its bytes are where the Sink said).
struct Received {
  MsgType type = MsgType::NORMAL;  ///< The answer's type.
  uint64_t size = 0;               ///< The answer's size in bytes.
};

}  // namespace shm

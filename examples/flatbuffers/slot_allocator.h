// SPDX-License-Identifier: Apache-2.0
// SlotAllocator: lets a flatbuffers::FlatBufferBuilder build directly in a slot buffer.
#pragma once

#include <flatbuffers/flatbuffers.h>
#include <shm/bytes.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>

namespace shm_example {

/// Thrown by SlotAllocator when the message being built does not fit the slot.
struct SlotFull : std::length_error {
  SlotFull() : std::length_error("the FlatBuffer does not fit the slot buffer") {}
};

/// Hands a FlatBufferBuilder one fixed buffer — a slot's request or response buffer — and never any other
/// memory. Construct the builder with BuilderFor(): its first allocation then asks for exactly the whole
/// buffer, so the builder writes downward from the buffer's end and the finished FlatBuffer lies end-aligned
/// in the slot (send it as a negative size, or with ZeroCopySlot::SendFlatBuffer).
///
/// Limit: a builder grows by reallocating, and a slot cannot grow. A message larger than the buffer (data plus
/// the builder's small scratch area for vtables) makes allocate/reallocate_downward throw SlotFull; the builder
/// is then unusable and must be discarded. Nothing is ever built on the heap.
/// One allocator serves one builder at a time; not thread-safe. The buffer must outlive the builder.
class SlotAllocator : public flatbuffers::Allocator {
 public:
  explicit SlotAllocator(shm::MutableBytes buffer) noexcept : buffer_(buffer) {}

  uint8_t* allocate(size_t size) override {
    if (in_use_ || size > buffer_.size()) throw SlotFull();
    in_use_ = true;
    return buffer_.data();
  }
  void deallocate(uint8_t*, size_t) override { in_use_ = false; }
  uint8_t* reallocate_downward(uint8_t*, size_t, size_t, size_t, size_t) override { throw SlotFull(); }

  /// A builder whose single allocation is the whole buffer (the alignment of slot buffers, a multiple of
  /// 64 bytes, satisfies the builder's own).
  flatbuffers::FlatBufferBuilder BuilderFor() { return flatbuffers::FlatBufferBuilder(buffer_.size(), this); }

  /// Whether a finished builder's buffer is where it must be: the last GetSize() bytes of the slot buffer.
  bool EndsAtSlotEnd(const flatbuffers::FlatBufferBuilder& fbb) const noexcept {
    return fbb.GetBufferPointer() + fbb.GetSize() == buffer_.data() + buffer_.size();
  }

 private:
  shm::MutableBytes buffer_;
  bool in_use_ = false;
};

}  // namespace shm_example

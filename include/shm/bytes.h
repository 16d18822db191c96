// SPDX-License-Identifier: Apache-2.0
// shm — byte views that keep a pointer and its length together.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shm {

/// A read-only view of bytes: pointer and size travel together. Does not own; the viewed memory must outlive
/// the view. A null pointer with a non-zero size is refused by every call that takes one (kInvalidArgs).
/// Trivially copyable; thread-compatible.
class Bytes {
 public:
  /// An empty view (null pointer, size 0).
  constexpr Bytes() noexcept = default;
  /// `size` bytes at `data`.
  constexpr Bytes(const uint8_t* data, size_t size) noexcept : data_(data), size_(size) {}
  /// `size` bytes at `data`, of any object type.
  Bytes(const void* data, size_t size) noexcept : data_(static_cast<const uint8_t*>(data)), size_(size) {}
  /// The characters of `s` (without a terminating NUL).
  Bytes(std::string_view s) noexcept  // NOLINT: implicit by design
      : data_(reinterpret_cast<const uint8_t*>(s.data())), size_(s.size()) {}
  /// The characters of `s`; valid until `s` changes or ends.
  Bytes(const std::string& s) noexcept : Bytes(std::string_view(s)) {}  // NOLINT
  /// The characters of the NUL-terminated string `s`, without the NUL.
  Bytes(const char* s) noexcept : Bytes(std::string_view(s)) {}  // NOLINT
  /// The elements of `v`; valid until `v` is resized or ends.
  Bytes(const std::vector<uint8_t>& v) noexcept : data_(v.data()), size_(v.size()) {}  // NOLINT
  /// The N bytes of `a`.
  template <size_t N>
  Bytes(const std::array<uint8_t, N>& a) noexcept : data_(a.data()), size_(N) {}  // NOLINT

  /// The first byte (null for a default-constructed view).
  constexpr const uint8_t* data() const noexcept { return data_; }
  /// The number of bytes.
  constexpr size_t size() const noexcept { return size_; }
  /// Whether size() is 0.
  constexpr bool empty() const noexcept { return size_ == 0; }
  /// Iteration: the first byte.
  constexpr const uint8_t* begin() const noexcept { return data_; }
  /// Iteration: one past the last byte.
  constexpr const uint8_t* end() const noexcept { return data_ + size_; }
  /// Byte `i`. Precondition: i < size() (not checked).
  constexpr uint8_t operator[](size_t i) const noexcept { return data_[i]; }
  /// The same bytes as characters; no copy.
  std::string_view as_string_view() const noexcept {
    return std::string_view(reinterpret_cast<const char*>(data_), size_);
  }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

/// A writable view of bytes (a slot's buffer, a handler's response buffer). Does not own.
/// Trivially copyable; thread-compatible.
class MutableBytes {
 public:
  /// An empty view (null pointer, size 0).
  constexpr MutableBytes() noexcept = default;
  /// `size` writable bytes at `data`.
  constexpr MutableBytes(uint8_t* data, size_t size) noexcept : data_(data), size_(size) {}
  /// The elements of `v`; valid until `v` is resized or ends.
  MutableBytes(std::vector<uint8_t>& v) noexcept : data_(v.data()), size_(v.size()) {}  // NOLINT

  /// The first byte (null for a default-constructed view).
  constexpr uint8_t* data() const noexcept { return data_; }
  /// The number of bytes.
  constexpr size_t size() const noexcept { return size_; }
  /// Iteration: the first byte.
  constexpr uint8_t* begin() const noexcept { return data_; }
  /// Iteration: one past the last byte.
  constexpr uint8_t* end() const noexcept { return data_ + size_; }
  /// Byte `i`, writable. Precondition: i < size() (not checked).
  constexpr uint8_t& operator[](size_t i) const noexcept { return data_[i]; }
  /// A read-only view of the same bytes.
  constexpr operator Bytes() const noexcept { return Bytes(data_, size_); }  // NOLINT

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace shm

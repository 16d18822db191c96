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
  constexpr Bytes() noexcept = default;
  constexpr Bytes(const uint8_t* data, size_t size) noexcept : data_(data), size_(size) {}
  Bytes(const void* data, size_t size) noexcept : data_(static_cast<const uint8_t*>(data)), size_(size) {}
  Bytes(std::string_view s) noexcept  // NOLINT: implicit by design
      : data_(reinterpret_cast<const uint8_t*>(s.data())), size_(s.size()) {}
  Bytes(const std::string& s) noexcept : Bytes(std::string_view(s)) {}  // NOLINT
  Bytes(const char* s) noexcept : Bytes(std::string_view(s)) {}         // NOLINT
  Bytes(const std::vector<uint8_t>& v) noexcept : data_(v.data()), size_(v.size()) {}  // NOLINT
  template <size_t N>
  Bytes(const std::array<uint8_t, N>& a) noexcept : data_(a.data()), size_(N) {}  // NOLINT

  constexpr const uint8_t* data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr const uint8_t* begin() const noexcept { return data_; }
  constexpr const uint8_t* end() const noexcept { return data_ + size_; }
  constexpr uint8_t operator[](size_t i) const noexcept { return data_[i]; }
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
  constexpr MutableBytes() noexcept = default;
  constexpr MutableBytes(uint8_t* data, size_t size) noexcept : data_(data), size_(size) {}
  MutableBytes(std::vector<uint8_t>& v) noexcept : data_(v.data()), size_(v.size()) {}  // NOLINT

  constexpr uint8_t* data() const noexcept { return data_; }
  constexpr size_t size() const noexcept { return size_; }
  constexpr uint8_t* begin() const noexcept { return data_; }
  constexpr uint8_t* end() const noexcept { return data_ + size_; }
  constexpr uint8_t& operator[](size_t i) const noexcept { return data_[i]; }
  constexpr operator Bytes() const noexcept { return Bytes(data_, size_); }  // NOLINT

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace shm

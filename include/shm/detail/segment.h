// SPDX-License-Identifier: Apache-2.0
// A mapped segment: creation by the host (magic last, then sealed), attachment by a guest from the descriptor
// the host handed it (seals checked before mapping, header validated from a copy), and the slot views both
// sides use.
#pragma once

#include <cstring>
#include <string>
#include <utility>

#include "shm/detail/slot.h"
#include "shm/error.h"
#include "shm/platform/platform.h"
#include "shm/wire/counters.h"
#include "shm/wire/layout.h"

namespace shm {
namespace detail {

/// Validate a copy of a segment header from memory of `file_size` bytes. `bytes` holds the first `n` bytes
/// (n may be short). Pure function: reads only its arguments, never the mapping. A zero magic is reported as
/// kBadMagic: a host hands out its segment only once magic is written.
inline Result<wire::Geometry> ValidateHeader(const uint8_t* bytes, size_t n, uint64_t file_size) {
  using wire::kSegmentHeaderSize;
  if (n < kSegmentHeaderSize || file_size < kSegmentHeaderSize) {
    return Error(ErrorCode::kTruncated, "segment file is " + std::to_string(file_size) + " bytes, smaller than its " +
                                            std::to_string(kSegmentHeaderSize) + "-byte header");
  }
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, bytes + off, 4);
    return v;
  };
  auto u64 = [&](size_t off) {
    uint64_t v;
    std::memcpy(&v, bytes + off, 8);
    return v;
  };
  const uint64_t magic = u64(offsetof(wire::SegmentHeader, magic));
  if (magic != wire::kMagic) return Error(ErrorCode::kBadMagic, "memory is not an shm segment (bad magic)");
  const uint32_t version = u32(offsetof(wire::SegmentHeader, version));
  if (version != wire::kVersion) {
    return Error(ErrorCode::kVersionMismatch, "segment speaks protocol version " + std::to_string(version) +
                                                  "; this library speaks " + std::to_string(wire::kVersion));
  }
  if (u32(offsetof(wire::SegmentHeader, header_size)) != kSegmentHeaderSize ||
      u32(offsetof(wire::SegmentHeader, slot_header_size)) != wire::kSlotHeaderSize ||
      u32(offsetof(wire::SegmentHeader, flags)) != 0) {
    return Error(ErrorCode::kBadGeometry, "segment header declares unknown header sizes or flags");
  }
  wire::Geometry g;
  g.host_slots = u32(offsetof(wire::SegmentHeader, host_slots));
  g.guest_slots = u32(offsetof(wire::SegmentHeader, guest_slots));
  g.host_payload = u32(offsetof(wire::SegmentHeader, host_payload));
  g.guest_payload = u32(offsetof(wire::SegmentHeader, guest_payload));
  if (!wire::GeometryValid(g)) {
    return Error(ErrorCode::kBadGeometry, "impossible geometry: " + std::to_string(g.host_slots) + " host slots, " +
                                              std::to_string(g.guest_slots) + " guest slots, payloads " +
                                              std::to_string(g.host_payload) + "/" + std::to_string(g.guest_payload));
  }
  if (wire::SegmentSize(g) > wire::kMaxSegmentSize) {
    return Error(ErrorCode::kBadGeometry, "geometry needs " + std::to_string(wire::SegmentSize(g)) +
                                              " bytes, over the " + std::to_string(wire::kMaxSegmentSize) +
                                              "-byte limit");
  }
  const uint64_t total = u64(offsetof(wire::SegmentHeader, total_size));
  if (total != wire::SegmentSize(g)) {
    return Error(ErrorCode::kBadGeometry, "header says " + std::to_string(total) + " bytes but its geometry needs " +
                                              std::to_string(wire::SegmentSize(g)));
  }
  if (file_size < total) {
    return Error(ErrorCode::kTruncated,
                 "segment file is " + std::to_string(file_size) + " bytes; its header claims " + std::to_string(total));
  }
  return g;
}

/// Whether a segment of validated geometry `g` in memory of `file_size` bytes has a counters region
/// (SPECIFICATION.md §5.4). `bytes` holds a copy of the first `n` bytes at offset total_size (n may be short).
/// Pure function, like ValidateHeader. A segment without one is valid: it just has no shared counters.
inline bool CountersPresent(const uint8_t* bytes, size_t n, const wire::Geometry& g, uint64_t file_size) noexcept {
  const uint64_t need = wire::SegmentSize(g) + wire::CountersSize(g);
  if (file_size < need || n < 32) return false;
  auto u32 = [&](size_t off) {
    uint32_t v;
    std::memcpy(&v, bytes + off, 4);
    return v;
  };
  uint64_t magic, size;
  std::memcpy(&magic, bytes + offsetof(wire::CountersHeader, magic), 8);
  std::memcpy(&size, bytes + offsetof(wire::CountersHeader, counters_size), 8);
  return magic == wire::kCountersMagic && u32(offsetof(wire::CountersHeader, version)) == wire::kCountersVersion &&
         u32(offsetof(wire::CountersHeader, header_size)) == wire::kCountersHeaderSize &&
         u32(offsetof(wire::CountersHeader, block_size)) == wire::kCounterBlockSize &&
         u32(offsetof(wire::CountersHeader, slot_count)) == g.host_slots + g.guest_slots &&
         size == wire::CountersSize(g);
}

/// A segment mapped into this process: the memfd and its mapping. Move-only; not thread-safe to move or
/// destroy while in use, but header() and Slot() may be used from any thread once built.
class Segment {
 public:
  Segment() = default;
  Segment(Segment&& o) noexcept { *this = std::move(o); }
  Segment& operator=(Segment&& o) noexcept {
    if (this != &o) {
      Reset();
      file_ = std::move(o.file_);
      base_ = std::exchange(o.base_, nullptr);
      size_ = std::exchange(o.size_, 0);
      geometry_ = o.geometry_;
      writable_ = o.writable_;
      has_counters_ = o.has_counters_;
    }
    return *this;
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() { Reset(); }

  /// Host: create the memory of segment `name`, build the layout, write magic last, seal it
  /// (SPECIFICATION.md §3 steps 3–5). The caller has taken the name first (the rendezvous).
  static Result<Segment> Create(const std::string& name, const wire::Geometry& g) {
    const uint64_t size = wire::SegmentSize(g) + wire::CountersSize(g);
    auto f = platform::CreateSharedMemory(platform::SegmentLabel(name), size);
    if (!f) return std::move(f).error();
    auto base = platform::Map(*f, size);
    if (!base) return std::move(base).error();
    Segment s;
    s.file_ = std::move(*f);
    s.base_ = *base;
    s.size_ = size;
    s.geometry_ = g;
    s.writable_ = true;
    s.has_counters_ = true;
    s.Initialise();
    if (auto r = platform::Seal(s.file_); !r) return std::move(r).error();
    return s;
  }

  /// Guest or observer: check, map and validate a descriptor received from the host (SPECIFICATION.md §4.2
  /// steps 4–5). Every error is final. `writable` false maps read-only (observers).
  static Result<Segment> FromDescriptor(platform::File f, bool writable) {
    auto file_size = platform::CheckSealedSize(f);
    if (!file_size) return std::move(file_size).error();
    if (*file_size < wire::kSegmentHeaderSize) {
      return Error(ErrorCode::kTruncated, "segment is " + std::to_string(*file_size) + " bytes, smaller than its " +
                                              std::to_string(wire::kSegmentHeaderSize) + "-byte header");
    }
    if (*file_size > wire::kMaxSegmentSize) {
      return Error(ErrorCode::kBadGeometry, "segment is " + std::to_string(*file_size) + " bytes, over the " +
                                                std::to_string(wire::kMaxSegmentSize) + "-byte limit");
    }
    // The seals fix the size: the whole mapping stays backed for as long as it exists.
    auto base = platform::Map(f, *file_size, writable);
    if (!base) return std::move(base).error();
    Segment s;
    s.file_ = std::move(f);
    s.base_ = *base;
    s.size_ = *file_size;
    s.writable_ = writable;
    // SYNC POINT READ: magic (acquire, through the mapping) before any other field is read. Pairs with
    // Initialise()'s release store; the host sends the descriptor only after it.
    if (s.header().magic.load(std::memory_order_acquire) != wire::kMagic) {
      return Error(ErrorCode::kBadMagic, "the host sent memory that is not an shm segment (bad magic)");
    }
    // Copy the header once; validate and use only the copy (the host can still write the original).
    uint8_t header[wire::kSegmentHeaderSize];
    for (size_t i = 0; i < sizeof header; i += 4) {
      const uint32_t w = reinterpret_cast<const std::atomic<uint32_t>*>(static_cast<const uint8_t*>(s.base_) + i)
                             ->load(std::memory_order_relaxed);
      std::memcpy(header + i, &w, 4);
    }
    auto g = ValidateHeader(header, sizeof header, *file_size);
    if (!g) return std::move(g).error();
    s.geometry_ = *g;
    // The counters region after the segment, if the host made one: its header copied once and checked.
    uint8_t counters[32] = {};
    if (*file_size >= wire::SegmentSize(*g) + sizeof counters) {
      const auto* src = static_cast<const uint8_t*>(s.base_) + wire::SegmentSize(*g);
      for (size_t i = 0; i < sizeof counters; i += 4) {
        const uint32_t w = reinterpret_cast<const std::atomic<uint32_t>*>(src + i)->load(std::memory_order_relaxed);
        std::memcpy(counters + i, &w, 4);
      }
    }
    s.has_counters_ = CountersPresent(counters, sizeof counters, *g, *file_size);
    return s;
  }

  wire::SegmentHeader& header() const noexcept { return *static_cast<wire::SegmentHeader*>(base_); }
  const wire::Geometry& geometry() const noexcept { return geometry_; }
  /// The memfd (the host hands it to guests).
  const platform::File& file() const noexcept { return file_; }
  bool writable() const noexcept { return writable_; }
  uint64_t size() const noexcept { return size_; }
  bool valid() const noexcept { return base_ != nullptr; }
  uint32_t slot_count() const noexcept { return geometry_.host_slots + geometry_.guest_slots; }
  /// Whether the memfd has a valid counters region after the segment (SPECIFICATION.md §5.4).
  bool has_counters() const noexcept { return has_counters_; }
  /// The counters region's header. Precondition: has_counters().
  wire::CountersHeader& counters_header() const noexcept {
    return *reinterpret_cast<wire::CountersHeader*>(static_cast<uint8_t*>(base_) + wire::SegmentSize(geometry_));
  }
  /// The counter blocks of one side, indexed by slot (host slots first). Precondition: has_counters().
  wire::CounterBlock* counter_blocks(bool host_side) const noexcept {
    auto* base = static_cast<uint8_t*>(base_);
    return reinterpret_cast<wire::CounterBlock*>(
        base + (host_side ? wire::HostBlockOffset(geometry_, 0) : wire::GuestBlockOffset(geometry_, 0)));
  }

  /// Slot `index` (host slots first). Precondition: index < slot_count().
  SlotView Slot(uint32_t index) const noexcept {
    auto* base = static_cast<uint8_t*>(base_);
    SlotView v;
    v.header =
        reinterpret_cast<wire::SlotHeader*>(base + wire::kSegmentHeaderSize + uint64_t{wire::kSlotHeaderSize} * index);
    v.capacity = wire::SlotCapacity(geometry_, index);
    v.request = base + wire::RequestBufferOffset(geometry_, index);
    v.response = v.request + v.capacity;
    v.index = index;
    return v;
  }

  /// Unmap and close the memfd. The memory itself goes when its last mapping or descriptor does.
  void Reset() noexcept {
    platform::Unmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
    file_.Close();
  }

 private:
  // The memory is new and zero-filled; write every field explicitly anyway, then magic last.
  void Initialise() noexcept {
    auto& h = header();
    h.host_pid.store(platform::ProcessId(), std::memory_order_relaxed);
    h.version.store(wire::kVersion, std::memory_order_relaxed);
    h.header_size.store(wire::kSegmentHeaderSize, std::memory_order_relaxed);
    h.slot_header_size.store(wire::kSlotHeaderSize, std::memory_order_relaxed);
    h.host_slots.store(geometry_.host_slots, std::memory_order_relaxed);
    h.guest_slots.store(geometry_.guest_slots, std::memory_order_relaxed);
    h.host_payload.store(geometry_.host_payload, std::memory_order_relaxed);
    h.guest_payload.store(geometry_.guest_payload, std::memory_order_relaxed);
    h.flags.store(0, std::memory_order_relaxed);
    h.total_size.store(wire::SegmentSize(geometry_), std::memory_order_relaxed);
    h.host_state.store(static_cast<uint32_t>(wire::HostState::kRunning), std::memory_order_relaxed);
    h.guest_pid.store(0, std::memory_order_relaxed);
    h.guest_session.store(0, std::memory_order_relaxed);
    h.doorbell.store(0, std::memory_order_relaxed);
    for (uint32_t i = 0; i < slot_count(); ++i) {
      SlotView s = Slot(i);
      s.header->ctl.store(wire::MakeCtl(wire::SlotState::kFree, 0), std::memory_order_relaxed);
      s.header->req_type.store(0, std::memory_order_relaxed);
      s.header->req_size.store(0, std::memory_order_relaxed);
      s.header->resp_type.store(0, std::memory_order_relaxed);
      s.header->resp_size.store(0, std::memory_order_relaxed);
      s.header->resp_error.store(0, std::memory_order_relaxed);
      s.header->wake_stamp_ns.store(0, std::memory_order_relaxed);
    }
    // The counters region's header (the blocks are zero, as new memory is). Plain information for readers:
    // published with the rest by the release store of magic below.
    wire::CountersHeader& c = counters_header();
    c.version.store(wire::kCountersVersion, std::memory_order_relaxed);
    c.header_size.store(wire::kCountersHeaderSize, std::memory_order_relaxed);
    c.block_size.store(wire::kCounterBlockSize, std::memory_order_relaxed);
    c.slot_count.store(slot_count(), std::memory_order_relaxed);
    c.counters_size.store(wire::CountersSize(geometry_), std::memory_order_relaxed);
    c.host_since_ns.store(static_cast<uint64_t>(platform::MonotonicNs()), std::memory_order_relaxed);
    c.guest_attached.store(0, std::memory_order_relaxed);
    c.guest_since_ns.store(0, std::memory_order_relaxed);
    c.magic.store(wire::kCountersMagic, std::memory_order_relaxed);
    // SYNC POINT WRITE: magic. Pairs with the guest's acquire load of magic through its mapping.
    h.magic.store(wire::kMagic, std::memory_order_release);
  }

  platform::File file_;
  void* base_ = nullptr;
  uint64_t size_ = 0;
  wire::Geometry geometry_;
  bool writable_ = false;
  bool has_counters_ = false;
};

}  // namespace detail
}  // namespace shm

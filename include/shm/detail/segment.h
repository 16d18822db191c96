// A mapped segment: creation by the host (lock first, magic last), attachment by a guest (validate before
// mapping), and the slot views both sides use.
#pragma once

#include <cstring>
#include <string>
#include <utility>

#include "shm/error.h"
#include "shm/platform/platform.h"
#include "shm/wire/layout.h"
#include "shm/detail/slot.h"

namespace shm {
namespace detail {

/// Validate a segment header read from a file of `file_size` bytes. `bytes` holds the first `n` bytes of the
/// file (n may be short). Pure function: reads only its arguments, never the mapping. The header must be
/// ready (magic non-zero); a zero magic is reported as kNotFound ("still initialising").
inline Result<wire::Geometry> ValidateHeader(const uint8_t* bytes, size_t n, uint64_t file_size) {
  using wire::kSegmentHeaderSize;
  if (n < kSegmentHeaderSize || file_size < kSegmentHeaderSize) {
    return Error(ErrorCode::kTruncated, "segment file is " + std::to_string(file_size) +
                                            " bytes, smaller than its " + std::to_string(kSegmentHeaderSize) +
                                            "-byte header");
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
  if (magic == 0) return Error(ErrorCode::kNotFound, "segment is still being initialised");
  if (magic != wire::kMagic) return Error(ErrorCode::kBadMagic, "file is not an shm segment (bad magic)");
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
    return Error(ErrorCode::kBadGeometry,
                 "impossible geometry: " + std::to_string(g.host_slots) + " host slots, " +
                     std::to_string(g.guest_slots) + " guest slots, payloads " + std::to_string(g.host_payload) +
                     "/" + std::to_string(g.guest_payload));
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
    return Error(ErrorCode::kTruncated, "segment file is " + std::to_string(file_size) + " bytes; its header claims " +
                                            std::to_string(total));
  }
  return g;
}

/// A segment file mapped into this process. Move-only; not thread-safe to move or destroy while in use, but
/// header() and Slot() may be used from any thread once built.
class Segment {
 public:
  Segment() = default;
  Segment(Segment&& o) noexcept { *this = std::move(o); }
  Segment& operator=(Segment&& o) noexcept {
    if (this != &o) {
      Reset();
      file_ = std::move(o.file_);
      path_ = std::move(o.path_);
      base_ = std::exchange(o.base_, nullptr);
      size_ = std::exchange(o.size_, 0);
      geometry_ = o.geometry_;
      owner_ = std::exchange(o.owner_, false);
    }
    return *this;
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment() { Reset(); }

  /// Host: take the name (host lock), build the layout, write magic last. See SPECIFICATION.md §Creation.
  static Result<Segment> Create(const std::string& name, const wire::Geometry& g, uint32_t mode) {
    const std::string path = platform::SegmentPath(name);
    const uint64_t size = wire::SegmentSize(g);
    for (int attempt = 0; attempt < 64; ++attempt) {
      auto f = platform::OpenOrCreate(path, mode);
      if (!f) return std::move(f).error();
      auto locked = platform::TryLockByte(*f, platform::kHostLockByte);
      if (!locked) return std::move(locked).error();
      if (!*locked) return HolderError(name, *f);
      // We hold the name's lock. If the file we locked was unlinked meanwhile (its host just shut down), the
      // name now means another file: start over.
      auto current = platform::IsCurrentFile(*f, path);
      if (!current) return std::move(current).error();
      if (!*current) continue;
      auto old_size = platform::FileSize(*f);
      if (!old_size) return std::move(old_size).error();
      if (*old_size != 0) {
        // Left by a dead host (its lock is free). Guests of that host may still map it: give them their
        // orphaned file and make a fresh one rather than rewrite memory under them.
        platform::Unlink(path);
        continue;
      }
      if (auto r = platform::SetMode(*f, mode); !r) return std::move(r).error();
      if (auto r = platform::Resize(*f, size); !r) {
        platform::Unlink(path);
        return std::move(r).error();
      }
      auto base = platform::Map(*f, size);
      if (!base) {
        platform::Unlink(path);
        return std::move(base).error();
      }
      Segment s;
      s.file_ = std::move(*f);
      s.path_ = path;
      s.base_ = *base;
      s.size_ = size;
      s.geometry_ = g;
      s.owner_ = true;
      s.Initialise();
      return s;
    }
    return Error(ErrorCode::kSystem, "could not take segment " + name + ": it kept being replaced");
  }

  /// Guest: one attempt to open, validate and map a live host's segment. kNotFound means "not there (yet)":
  /// the caller retries until its deadline. Every other error is final.
  static Result<Segment> Attach(const std::string& name) {
    const std::string path = platform::SegmentPath(name);
    auto f = platform::OpenExisting(path);
    if (!f) return std::move(f).error();
    auto alive = platform::ByteLockedByOther(*f, platform::kHostLockByte);
    if (!alive) return std::move(alive).error();
    if (!*alive) return Error(ErrorCode::kNotFound, "segment " + name + " has no live host");
    // Read the header with pread, not through a mapping: a short file must give an error, never SIGBUS.
    uint8_t header[wire::kSegmentHeaderSize];
    std::memset(header, 0, sizeof header);
    auto n = platform::ReadAt(*f, header, sizeof header, 0);
    if (!n) return std::move(n).error();
    auto file_size = platform::FileSize(*f);
    if (!file_size) return std::move(file_size).error();
    uint64_t magic;
    std::memcpy(&magic, header, sizeof magic);
    if (magic == 0) return Error(ErrorCode::kNotFound, "segment " + name + " is still being initialised");
    auto g = ValidateHeader(header, *n, *file_size);
    if (!g) return std::move(g).error();
    const uint64_t size = wire::SegmentSize(*g);
    auto base = platform::Map(*f, size);
    if (!base) return std::move(base).error();
    Segment s;
    s.file_ = std::move(*f);
    s.path_ = path;
    s.base_ = *base;
    s.size_ = size;
    s.geometry_ = *g;
    s.owner_ = false;
    // SYNC POINT READ: magic (acquire, through the mapping) before any other field is used.
    if (s.header().magic.load(std::memory_order_acquire) != wire::kMagic) {
      return Error(ErrorCode::kBadMagic, "segment " + name + " changed while it was being attached");
    }
    return s;
  }

  wire::SegmentHeader& header() const noexcept { return *static_cast<wire::SegmentHeader*>(base_); }
  const wire::Geometry& geometry() const noexcept { return geometry_; }
  const platform::File& file() const noexcept { return file_; }
  const std::string& path() const noexcept { return path_; }
  uint64_t size() const noexcept { return size_; }
  bool valid() const noexcept { return base_ != nullptr; }
  uint32_t slot_count() const noexcept { return geometry_.host_slots + geometry_.guest_slots; }

  /// Slot `index` (host slots first). Precondition: index < slot_count().
  SlotView Slot(uint32_t index) const noexcept {
    auto* base = static_cast<uint8_t*>(base_);
    SlotView v;
    v.header = reinterpret_cast<wire::SlotHeader*>(base + wire::kSegmentHeaderSize +
                                                   uint64_t{wire::kSlotHeaderSize} * index);
    v.capacity = wire::SlotCapacity(geometry_, index);
    v.request = base + wire::RequestBufferOffset(geometry_, index);
    v.response = v.request + v.capacity;
    v.index = index;
    return v;
  }

  /// Unmap; for the host also remove the name (if it is still ours) before the lock goes with the descriptor.
  void Reset() noexcept {
    if (owner_ && file_.valid()) {
      auto current = platform::IsCurrentFile(file_, path_);
      if (current && *current) platform::Unlink(path_);
    }
    platform::Unmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
    owner_ = false;
    file_.Close();
  }

 private:
  static Error HolderError(const std::string& name, const platform::File& f) {
    uint32_t pid = 0;
    auto n = platform::ReadAt(f, &pid, sizeof pid, offsetof(wire::SegmentHeader, host_pid));
    std::string who = (n && *n == sizeof pid && pid != 0) ? "live host pid " + std::to_string(pid)
                                                          : "another live host (still starting)";
    return Error(ErrorCode::kHostAlreadyRunning, "segment " + name + " is held by " + who);
  }

  // The file is new and zero-filled; write every field explicitly anyway, then magic last.
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
    h.total_size.store(size_, std::memory_order_relaxed);
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
    // SYNC POINT WRITE: magic. Pairs with the guest's read of magic (pread, then the mapping's acquire loads).
    h.magic.store(wire::kMagic, std::memory_order_release);
  }

  platform::File file_;
  std::string path_;
  void* base_ = nullptr;
  uint64_t size_ = 0;
  wire::Geometry geometry_;
  bool owner_ = false;
};

}  // namespace detail
}  // namespace shm

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: shm-inspect's reading of a segment (tools/shm-inspect/snapshot.h) and its output
// (render.h), on memory the fuzzer crafts: any bytes of any size, or a valid header of a geometry it picks
// (so the slot headers and the counters region behind it are reached) with its bytes laid over the rest.
//
// Input (a short input is padded with zeros):
//   [0]    u8  flags: bit 0 build a valid header (else the memory is the raw bytes); bit 1 add a valid counters
//              region header; bit 2 the patch bytes go over the counters region (else over the slot headers,
//              at offset 256); bit 3 cut the memory to `cut` bytes
//   [1]    u8  host slots - 1, mod 8      [2] u8 guest slots, mod 5
//   [3]    u8  host payload / 64 - 1, mod 4   [4] u8 guest payload / 64 - 1, mod 4
//   [5..7) u16 cut
//   [7..]      the raw bytes, or the patch
//
// Checked: Parse never reads outside the memory (it is allocated at its exact size, so ASan sees any
// overrun) and never crashes; what it accepts is consistent (a valid geometry, a layout and counters region
// within the memory, one SlotInfo per slot); the text and JSON renderings never crash, are deterministic, and
// the JSON is balanced and has no raw control characters.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "render.h"
#include "snapshot.h"

namespace {

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_inspect: %s\n", what.c_str());
  std::abort();
}

namespace w = shm::wire;

void Put32(uint8_t* m, uint64_t size, uint64_t off, uint32_t v) {
  if (off + 4 <= size) std::memcpy(m + off, &v, 4);
}
void Put64(uint8_t* m, uint64_t size, uint64_t off, uint64_t v) {
  if (off + 8 <= size) std::memcpy(m + off, &v, 8);
}

// Whether a JSON text is balanced in {} and [] outside strings, with no raw control characters.
bool JsonShapeOk(const std::string& j) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (unsigned char c : j) {
    if (c < 0x20) return false;
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (depth < 0) return false;
  }
  return depth == 0 && !in_string;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t head[7] = {};
  std::memcpy(head, data, size < sizeof head ? size : sizeof head);
  const uint8_t flags = head[0];
  const uint8_t* rest = size > sizeof head ? data + sizeof head : nullptr;
  const size_t rest_n = size > sizeof head ? size - sizeof head : 0;

  w::Geometry g;
  g.host_slots = 1u + head[1] % 8u;
  g.guest_slots = head[2] % 5u;
  g.host_payload = 64u * (1u + head[3] % 4u);
  g.guest_payload = g.guest_slots == 0 ? 0 : 64u * (1u + head[4] % 4u);
  uint16_t cut;
  std::memcpy(&cut, head + 5, 2);

  uint64_t mem_size = rest_n;
  if (flags & 1) mem_size = w::SegmentSize(g) + ((flags & 2) ? w::CountersSize(g) : 0);
  if (flags & 8) mem_size = cut;
  // Exactly mem_size bytes (8-byte aligned, as a mapping is): ASan reports any read past them.
  void* raw = nullptr;
  if (mem_size != 0 && ::posix_memalign(&raw, 8, static_cast<size_t>(mem_size)) != 0) return 0;
  auto* mem = static_cast<uint8_t*>(raw);
  if (mem != nullptr) std::memset(mem, 0, static_cast<size_t>(mem_size));

  if (flags & 1) {
    const uint64_t total = w::SegmentSize(g);
    Put64(mem, mem_size, offsetof(w::SegmentHeader, magic), w::kMagic);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, version), w::kVersion);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, header_size), w::kSegmentHeaderSize);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, slot_header_size), w::kSlotHeaderSize);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, host_slots), g.host_slots);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, guest_slots), g.guest_slots);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, host_payload), g.host_payload);
    Put32(mem, mem_size, offsetof(w::SegmentHeader, guest_payload), g.guest_payload);
    Put64(mem, mem_size, offsetof(w::SegmentHeader, total_size), total);
    if (flags & 2) {
      Put64(mem, mem_size, total + offsetof(w::CountersHeader, magic), w::kCountersMagic);
      Put32(mem, mem_size, total + offsetof(w::CountersHeader, version), w::kCountersVersion);
      Put32(mem, mem_size, total + offsetof(w::CountersHeader, header_size), w::kCountersHeaderSize);
      Put32(mem, mem_size, total + offsetof(w::CountersHeader, block_size), w::kCounterBlockSize);
      Put32(mem, mem_size, total + offsetof(w::CountersHeader, slot_count), g.host_slots + g.guest_slots);
      Put64(mem, mem_size, total + offsetof(w::CountersHeader, counters_size), w::CountersSize(g));
    }
    const uint64_t at = (flags & 4) ? total + w::kCountersHeaderSize : w::kSegmentHeaderSize;
    for (size_t i = 0; i < rest_n && at + i < mem_size; ++i) mem[at + i] = rest[i];
  } else if (mem != nullptr && rest_n != 0) {
    std::memcpy(mem, rest, static_cast<size_t>(mem_size < rest_n ? mem_size : rest_n));
  }

  const shm_inspect::Snapshot s = shm_inspect::Parse(mem, mem_size);
  if (s.header_ok) {
    const w::Geometry& pg = s.geometry;
    if (!w::GeometryValid(pg)) Fail("Parse accepted an invalid geometry");
    if (w::SegmentSize(pg) > mem_size) Fail("Parse accepted a layout larger than the memory");
    if (s.slots.size() != pg.host_slots + pg.guest_slots) Fail("one SlotInfo per slot");
    if (s.counters && w::SegmentSize(pg) + w::CountersSize(pg) > mem_size) {
      Fail("Parse accepted a counters region past the memory");
    }
  } else if (!s.slots.empty()) {
    Fail("slots of an invalid segment");
  }
  shm_inspect::HostView h;
  h.alive = h.answered = true;
  h.pid = 1;
  h.guest_connections = flags >> 4;
  shm_inspect::WatchInfo wi;
  wi.interval_s = 1;
  wi.in_state_ns.assign(s.slots.size(), 5);
  const std::string text = shm_inspect::RenderText("fuzz", h, s, 123456789, &wi);
  const std::string json = shm_inspect::RenderJson("fuzz", h, s, 123456789);
  if (!JsonShapeOk(json)) Fail("unbalanced JSON: " + json);
  if (shm_inspect::RenderJson("fuzz", h, shm_inspect::Parse(mem, mem_size), 123456789) != json) {
    Fail("JSON of the same bytes differs");
  }
  (void)text;
  std::free(raw);
  return 0;
}

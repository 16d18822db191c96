// SPDX-License-Identifier: Apache-2.0
// FlatBuffers host: builds each request directly in a zero-copy slot's request buffer (no copy, no heap
// buffer) and reads the guest's FlatBuffer answer in place. Usage: flatbuffers_host [name]
#include <flatbuffers/flatbuffers.h>
#include <shm/shm.h>

#include <cstdio>
#include <utility>
#include <vector>

#include "quote_generated.h"
#include "slot_allocator.h"

namespace ex = shm_example;

int main(int argc, char** argv) {
  auto fail = [](const char* what) {
    std::fprintf(stderr, "host: %s\n", what);
    return 1;
  };
  shm::HostConfig config;
  config.name = argc > 1 ? argv[1] : "shm-flatbuffers";
  config.payload_size = 4096;  // small, to show below what happens when a message does not fit
  shm::DirectHost host;
  if (auto r = host.Init(config); !r) return fail(r.error().ToString().c_str());
  auto held = host.GetZeroCopySlot();  // kept for every call below; the destructor gives it back
  if (!held) return fail(held.error().ToString().c_str());
  shm::ZeroCopySlot slot = std::move(*held);

  for (uint64_t id = 1; id <= 3; ++id) {
    // The builder's only memory is the slot's request buffer: the finished request ends at its end.
    ex::SlotAllocator allocator(slot.RequestBuffer());
    flatbuffers::FlatBufferBuilder fbb = allocator.BuilderFor();
    const double prices[] = {101.5, 99.25 + static_cast<double>(id), 100.75};
    auto symbol = fbb.CreateString("ACME");
    auto price_vector = fbb.CreateVector(prices, 3);
    fbb.Finish(ex::CreateQuoteRequest(fbb, id, symbol, static_cast<int32_t>(100 * id), price_vector));
    if (!allocator.EndsAtSlotEnd(fbb)) return fail("the builder left the slot buffer");
    if (auto r = slot.SendFlatBuffer(static_cast<int32_t>(fbb.GetSize())); !r) {
      return fail(r.error().ToString().c_str());
    }

    // The answer is read where the guest built it. Verify before reading: the guest is untrusted input.
    const shm::Bytes answer = slot.Response();
    flatbuffers::Verifier verifier(answer.data(), answer.size());
    if (slot.ResponseType() != shm::MsgType::FLATBUFFER || !verifier.VerifyBuffer<ex::QuoteResponse>()) {
      return fail("the guest's answer is not a valid QuoteResponse");
    }
    const auto* quote = flatbuffers::GetRoot<ex::QuoteResponse>(answer.data());
    std::printf("host: quote %llu: best %.2f, total %.2f (%s), request %u bytes, answer %zu bytes\n",
                static_cast<unsigned long long>(quote->id()), quote->best(), quote->total(),
                quote->note() ? quote->note()->c_str() : "", fbb.GetSize(), answer.size());
  }

  // The limit: a request larger than the slot is refused while it is built; it never moves to the heap.
  try {
    ex::SlotAllocator allocator(slot.RequestBuffer());
    flatbuffers::FlatBufferBuilder fbb = allocator.BuilderFor();
    const std::vector<double> many(1000, 1.0);   // 8000 bytes of prices
    auto price_vector = fbb.CreateVector(many);  // throws SlotFull
    fbb.Finish(ex::CreateQuoteRequest(fbb, 4, fbb.CreateString("ACME"), 1, price_vector));
    return fail("a request larger than the slot was built");
  } catch (const ex::SlotFull& e) {
    std::printf("host: a request with 1000 prices was refused: %s (%u bytes)\n", e.what(), slot.capacity());
  }
  return 0;  // ~ZeroCopySlot releases the slot; ~DirectHost tells the guest to shut down
}

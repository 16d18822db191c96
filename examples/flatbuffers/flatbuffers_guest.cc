// SPDX-License-Identifier: Apache-2.0
// FlatBuffers guest: verifies each QuoteRequest in place and builds the QuoteResponse directly in the slot's
// response buffer. Usage: flatbuffers_guest [name]
#include <flatbuffers/flatbuffers.h>
#include <shm/shm.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "quote_generated.h"
#include "slot_allocator.h"

namespace ex = shm_example;

// Runs on the guest's worker threads; uses only its arguments, so it is thread-safe.
shm::Reply Quote(const shm::Message& m, shm::MutableBytes out) {
  // The request is read in place. Verify it first: the host is untrusted input. (A host that breaks the
  // protocol could even rewrite it after verification; with such a peer, copy it out before verifying.)
  flatbuffers::Verifier verifier(m.data.data(), m.data.size());
  if (m.type != shm::MsgType::FLATBUFFER || !ex::VerifyQuoteRequestBuffer(verifier)) {
    return shm::Reply::Failure();  // the host's call fails with kRemote / kHandlerFailed
  }
  const ex::QuoteRequest* request = ex::GetQuoteRequest(m.data.data());
  double best = 0;
  if (request->prices() && request->prices()->size() > 0) {
    best = *std::min_element(request->prices()->begin(), request->prices()->end());
  }
  try {
    ex::SlotAllocator allocator(out);  // the builder writes straight into the response buffer
    flatbuffers::FlatBufferBuilder fbb = allocator.BuilderFor();
    const std::string note = "lowest of " + std::to_string(request->prices() ? request->prices()->size() : 0) +
                             " prices for " + (request->symbol() ? request->symbol()->str() : "?");
    auto note_offset = fbb.CreateString(note);
    fbb.Finish(ex::CreateQuoteResponse(fbb, request->id(), best, best * request->quantity(), note_offset));
    if (!allocator.EndsAtSlotEnd(fbb)) return shm::Reply::Failure();
    // Negative size: the answer is the last GetSize() bytes of the response buffer, where the builder left it.
    return shm::Reply{-static_cast<int32_t>(fbb.GetSize()), shm::MsgType::FLATBUFFER};
  } catch (const ex::SlotFull&) {
    return shm::Reply::Failure();
  }
}

int main(int argc, char** argv) {
  auto fail = [](const shm::Error& e) {
    std::fprintf(stderr, "guest: %s\n", e.ToString().c_str());
    return 1;
  };
  shm::GuestConfig config;
  config.name = argc > 1 ? argv[1] : "shm-flatbuffers";
  shm::DirectGuest guest;
  if (auto r = guest.Connect(config); !r) return fail(r.error());
  if (auto r = guest.Start(Quote); !r) return fail(r.error());
  if (auto r = guest.Wait(); !r) return fail(r.error());  // Ok when the host shuts down
  std::printf("guest: host shut down\n");
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
// Result<T>, Error and their names; the MsgType rules for requests and responses.
#include "shm/error.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "shm/wire/protocol.h"

namespace {

using shm::Error;
using shm::ErrorCode;
using shm::MsgType;
using shm::Result;
using shm::wire::WireError;

// ---- Error ------------------------------------------------------------------------------------------------------

TEST(Error, CarriesCodeMessageRemoteAndErrno) {
  const Error e(ErrorCode::kRemote, "peer said no", WireError::kHandlerFailed, 0);
  EXPECT_EQ(e.code(), ErrorCode::kRemote);
  EXPECT_EQ(e.message(), "peer said no");
  EXPECT_EQ(e.remote(), WireError::kHandlerFailed);
  EXPECT_EQ(e.sys_errno(), 0);
  EXPECT_EQ(e.ToString(), "Remote: peer said no");

  const Error s(ErrorCode::kSystem, "open failed", WireError::kNone, 13);
  EXPECT_EQ(s.sys_errno(), 13);
  EXPECT_EQ(s.remote(), WireError::kNone);
  EXPECT_EQ(s.ToString(), "System: open failed");
}

TEST(Error, DefaultsToNoRemoteCodeAndNoErrno) {
  const Error e(ErrorCode::kTimeout, "late");
  EXPECT_EQ(e.remote(), WireError::kNone);
  EXPECT_EQ(e.sys_errno(), 0);
}

TEST(Error, EveryErrorCodeHasItsOwnName) {
  const std::vector<std::pair<ErrorCode, std::string>> names = {
      {ErrorCode::kInvalidArgs, "InvalidArgs"},
      {ErrorCode::kHostAlreadyRunning, "HostAlreadyRunning"},
      {ErrorCode::kGuestAlreadyConnected, "GuestAlreadyConnected"},
      {ErrorCode::kNotFound, "NotFound"},
      {ErrorCode::kBadMagic, "BadMagic"},
      {ErrorCode::kVersionMismatch, "VersionMismatch"},
      {ErrorCode::kBadGeometry, "BadGeometry"},
      {ErrorCode::kTruncated, "Truncated"},
      {ErrorCode::kTimeout, "Timeout"},
      {ErrorCode::kNoFreeSlot, "NoFreeSlot"},
      {ErrorCode::kSlotBusy, "SlotBusy"},
      {ErrorCode::kSlotLost, "SlotLost"},
      {ErrorCode::kPeerDead, "PeerDead"},
      {ErrorCode::kHostGone, "HostGone"},
      {ErrorCode::kShuttingDown, "ShuttingDown"},
      {ErrorCode::kClosed, "Closed"},
      {ErrorCode::kRemote, "Remote"},
      {ErrorCode::kProtocol, "Protocol"},
      {ErrorCode::kTooLarge, "TooLarge"},
      {ErrorCode::kBufferTooSmall, "BufferTooSmall"},
      {ErrorCode::kPermissionDenied, "PermissionDenied"},
      {ErrorCode::kSystem, "System"},
  };
  std::set<std::string> seen;
  for (const auto& [code, name] : names) {
    EXPECT_EQ(shm::ToString(code), name);
    EXPECT_TRUE(seen.insert(name).second) << name << " is used twice";
  }
  // The table above lists every code: the enum is dense from 1 to kSystem.
  EXPECT_EQ(static_cast<uint32_t>(ErrorCode::kSystem), names.size());
  EXPECT_STREQ(shm::ToString(static_cast<ErrorCode>(0)), "Unknown");
  EXPECT_STREQ(shm::ToString(static_cast<ErrorCode>(names.size() + 1)), "Unknown");
  EXPECT_STREQ(shm::ToString(static_cast<ErrorCode>(0xFFFFFFFFu)), "Unknown");
}

TEST(Error, EveryWireErrorHasItsOwnName) {
  const std::vector<std::pair<WireError, std::string>> names = {
      {WireError::kNone, "None"},
      {WireError::kRequestTooLarge, "RequestTooLarge"},
      {WireError::kResponseTooLarge, "ResponseTooLarge"},
      {WireError::kReservedType, "ReservedType"},
      {WireError::kHandlerFailed, "HandlerFailed"},
      {WireError::kShuttingDown, "ShuttingDown"},
      {WireError::kNoHandler, "NoHandler"},
      {WireError::kPeerRestarted, "PeerRestarted"},
      {WireError::kStreamInvalid, "StreamInvalid"},
      {WireError::kTooManyTransfers, "TooManyTransfers"},
  };
  std::set<std::string> seen;
  for (const auto& [code, name] : names) {
    EXPECT_EQ(shm::wire::ToString(code), name);
    EXPECT_TRUE(seen.insert(name).second) << name << " is used twice";
  }
  // A code from a newer peer is named, not trusted.
  EXPECT_STREQ(shm::wire::ToString(static_cast<WireError>(names.size())), "Unknown");
  EXPECT_STREQ(shm::wire::ToString(static_cast<WireError>(0xFFFFFFFFu)), "Unknown");
}

// ---- Result<T> --------------------------------------------------------------------------------------------------

TEST(Result, HoldsAValue) {
  Result<int> r = 42;
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(static_cast<bool>(r));
  EXPECT_EQ(r.value(), 42);
  EXPECT_EQ(*r, 42);
  r.value() = 7;
  EXPECT_EQ(*r, 7);
}

TEST(Result, HoldsAnError) {
  Result<int> r = Error(ErrorCode::kTimeout, "too slow");
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(static_cast<bool>(r));
  EXPECT_EQ(r.error().code(), ErrorCode::kTimeout);
  EXPECT_EQ(r.error().message(), "too slow");
}

TEST(Result, ArrowReachesTheValue) {
  Result<std::string> r = std::string("hello");
  EXPECT_EQ(r->size(), 5u);
  const Result<std::string>& c = r;
  EXPECT_EQ(c->front(), 'h');
  EXPECT_EQ(*c, "hello");
}

TEST(Result, CopiesValueAndError) {
  Result<std::string> v = std::string("payload");
  Result<std::string> v2 = v;
  EXPECT_EQ(*v, "payload");
  EXPECT_EQ(*v2, "payload");
  Result<std::string> e = Error(ErrorCode::kClosed, "gone");
  Result<std::string> e2 = e;
  EXPECT_EQ(e.error().message(), "gone");
  EXPECT_EQ(e2.error().code(), ErrorCode::kClosed);
}

TEST(Result, MovesValueAndError) {
  Result<std::unique_ptr<int>> v = std::make_unique<int>(5);
  Result<std::unique_ptr<int>> moved = std::move(v);
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(**moved, 5);
  std::unique_ptr<int> taken = std::move(moved).value();
  EXPECT_EQ(*taken, 5);

  Result<std::unique_ptr<int>> e = Error(ErrorCode::kProtocol, "broken");
  Result<std::unique_ptr<int>> e2 = std::move(e);
  ASSERT_FALSE(e2.ok());
  Error err = std::move(e2).error();
  EXPECT_EQ(err.code(), ErrorCode::kProtocol);
  EXPECT_EQ(err.message(), "broken");
}

TEST(Result, AssignmentSwitchesBetweenValueAndError) {
  Result<std::string> r = std::string("first");
  r = Error(ErrorCode::kNoFreeSlot, "busy");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNoFreeSlot);
  r = std::string("second");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "second");
  Result<std::string> other = Error(ErrorCode::kTooLarge, "big");
  r = other;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "big");
  EXPECT_EQ(other.error().message(), "big");
  const Result<std::string>& same = r;
  r = same;  // self-assignment keeps the content
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "big");
}

TEST(Result, VoidResultIsOkOrAnError) {
  Result<void> ok = shm::Ok();
  EXPECT_TRUE(ok.ok());
  EXPECT_TRUE(static_cast<bool>(ok));
  Result<void> def;
  EXPECT_TRUE(def.ok());
  Result<void> bad = Error(ErrorCode::kShuttingDown, "stopping");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kShuttingDown);
  Result<void> copy = bad;
  EXPECT_EQ(copy.error().message(), "stopping");
  Error moved = std::move(bad).error();
  EXPECT_EQ(moved.message(), "stopping");
  copy = shm::Ok();
  EXPECT_TRUE(copy.ok());
}

// ---- Message types ----------------------------------------------------------------------------------------------

TEST(MsgTypeRules, RequestTypesAreExactlyTheUserOnes) {
  for (uint32_t v = 0; v < 256; ++v) {
    const bool expected = v == 0 || v == 1 || v == 10 || v == 11 || v >= 128;
    EXPECT_EQ(shm::IsUserRequestType(static_cast<MsgType>(v)), expected) << "type " << v;
  }
  EXPECT_TRUE(shm::IsUserRequestType(static_cast<MsgType>(256)));
  EXPECT_TRUE(shm::IsUserRequestType(static_cast<MsgType>(0xFFFFFFFFu)));
}

TEST(MsgTypeRules, ResponseTypesAreExactlyTheUserOnes) {
  for (uint32_t v = 0; v < 256; ++v) {
    const bool expected = v == 0 || v == 10 || v == 11 || v >= 128;
    EXPECT_EQ(shm::IsUserResponseType(static_cast<MsgType>(v)), expected) << "type " << v;
  }
  EXPECT_TRUE(shm::IsUserResponseType(static_cast<MsgType>(0xFFFFFFFFu)));
}

TEST(MsgTypeRules, ProtocolTypesAreReserved) {
  for (MsgType t : {MsgType::HEARTBEAT_RESP, MsgType::SHUTDOWN, MsgType::SYSTEM_ERROR}) {
    EXPECT_FALSE(shm::IsUserRequestType(t)) << static_cast<uint32_t>(t);
    EXPECT_FALSE(shm::IsUserResponseType(t)) << static_cast<uint32_t>(t);
  }
  EXPECT_TRUE(shm::IsUserRequestType(MsgType::HEARTBEAT_REQ));
  EXPECT_FALSE(shm::IsUserResponseType(MsgType::HEARTBEAT_REQ));
  for (MsgType t : {MsgType::NORMAL, MsgType::FLATBUFFER, MsgType::GUEST_CALL, MsgType::APP_START}) {
    EXPECT_TRUE(shm::IsUserRequestType(t)) << static_cast<uint32_t>(t);
    EXPECT_TRUE(shm::IsUserResponseType(t)) << static_cast<uint32_t>(t);
  }
}

}  // namespace

// SPDX-License-Identifier: Apache-2.0
// shm — request/response messaging between processes through shared memory. Umbrella header.
//
//   #include <shm/shm.h>
//   shm::DirectHost host;  host.Init({"demo"});   ...  host.Send("ping", shm::MsgType::NORMAL, reply);
//   shm::DirectGuest guest; guest.Connect({"demo"}); guest.Start(handler); guest.Wait();
//
// See README.md for the API tour and SPECIFICATION.md for the wire protocol.
#pragma once

/// \namespace shm
/// The public API: DirectHost and DirectGuest, ZeroCopySlot, the configurations, Error and Result, the byte
/// views, the handler types and logging. Each type states its thread safety and ownership.
///
/// \namespace shm::wire
/// The wire protocol of SPECIFICATION.md in C++: layouts, constants and codes both peers agree on. Values read
/// from a peer through these layouts are untrusted until validated.

#include "shm/bytes.h"
#include "shm/config.h"
#include "shm/error.h"
#include "shm/guest.h"
#include "shm/handler.h"
#include "shm/host.h"
#include "shm/log.h"
#include "shm/transfer.h"
#include "shm/version.h"
#include "shm/wire/layout.h"
#include "shm/wire/protocol.h"
#include "shm/zero_copy_slot.h"

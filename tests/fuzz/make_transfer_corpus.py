#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpus of fuzz_transfer (tests/fuzz/corpus/fuzz_transfer/): scripts in the target's input
format (see fuzz_transfer.cc) for complete transfers of several sizes with each receive_buffer mode, every hostile
chunk of the Go table (go/transfer_test.go), large answers fetched whole, failing and hostile CHUNK_NEXTs,
max_transfers, sweeps and the caller side's checks. Each file is named by the SHA-1 of its bytes, as libFuzzer
names the inputs it adds. Usage: tests/fuzz/make_transfer_corpus.py [<dir>]"""
import hashlib
import os
import struct
import sys

C = 128
LIMIT = 9 * C + 37
MAX = 1 << 40

# Codes of the target's pickers.
RAW64, RAW32 = 0xFF, 0xFF
IN_ID, IN_TOTAL, IN_RECEIVED, IN_ID1, OUT_ID, OUT_SENT, OUT_TOTAL = 16, 17, 18, 19, 20, 21, 22
USUAL = 14  # PickSize: the size a well-behaved peer gives
SIZE = {0: 0, 1: 1, C - 1: 2, C: 3, C + 1: 4, -1: 5, -C: 6, -(1 << 31): 7, (1 << 31) - 1: 8, 15: 9, 16: 10, 17: 11,
        -16: 12, 2 * C: 13}
TYPE = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 127: 7, 128: 8, 129: 9, 10: 10, 11: 11, 2500: 15}
HOOK_EMPTY, HOOK_EXACT, HOOK_SHORT, HOOK_LARGER, HOOK_THROW = range(5)


def u64(v):
    return bytes([RAW64]) + struct.pack("<Q", v % (1 << 64))


def size(v):
    return bytes([SIZE[v]]) if v in SIZE else bytes([0xFF]) + struct.pack("<i", v)


def typ(v):
    return bytes([TYPE[v]]) if v in TYPE else bytes([RAW32]) + struct.pack("<I", v)


def chunk(slot, sid, total, offset, t=0, sz=None, seed=7, hook=HOOK_EMPTY):
    """op 0: a CHUNK with these fields; size None: the chunking rule's."""
    return bytes([0, slot]) + u64(sid) + u64(total) + u64(offset) + typ(t) + b"\0" + \
        (bytes([USUAL]) if sz is None else size(sz)) + bytes([seed, hook])


def good(slot, total=None, seed=9, hook=HOOK_EMPTY, app=False):
    """op 1: the slot's next chunk; `total` starts a new message (when the slot holds none)."""
    b = bytes([1, slot, seed, hook])
    if total is not None:
        spread = total - C - 1
        b += struct.pack("<H", spread) + bytes([1 if app else 0])
    return b


def whole(slot, total, hook=HOOK_EMPTY, seed=9):
    n = -(-total // C)
    return good(slot, total, seed, hook) + b"".join(good(slot, None, seed, hook) for _ in range(n - 1))


def nxt(slot, sid_code, off_code, sz=16):
    return bytes([2, slot]) + sid_code + off_code + size(sz)


def good_next(slot):
    return bytes([3, slot])


def drop(slot):
    return bytes([4, slot])


def sweep(first, n, all_):
    return bytes([5, 0, first, n, 1 if all_ else 0])


def answer(slot, total, type_idx=0, seed=3, fail=0xFF):
    """op 6: StartAnswer of `total` bytes; fail < 8 fails at chunk `fail` (| 0x40: by throwing)."""
    return bytes([6, slot]) + u64(total) + bytes([type_idx, seed, fail])


def caller(max_code, first_good, sid, total, t=0, first_size=None, chunks=()):
    """op 7: a large answer's first chunk, then chunk descriptors: 'good', or (type, ) for a good header with
    another answer type, or 'skip' for a chunk one ahead of the expected one."""
    b = bytes([7, 0, max_code, 1 if first_good else 0]) + u64(sid) + u64(total) + b"\0"
    if not first_good:
        b += u64(0)
    b += typ(t) + struct.pack("<I", 0)
    if not first_good:
        b += bytes([USUAL]) if first_size is None else size(first_size)
    for k in chunks:
        if k == "good":
            b += bytes([1])
        elif k == "skip":  # the expected chunk's header with its offset one chunk ahead
            b += bytes([0, 4, 1]) + struct.pack("<I", 0) + bytes([USUAL])
        else:  # the expected chunk, answered with another type
            b += bytes([5]) + typ(k)
    return b


def seeds():
    out = []
    for total in (C + 1, 2 * C, 3 * C - 5, 3 * C, LIMIT):
        for hook in range(4):
            out.append(whole(0, total, hook))
    out.append(whole(1, 3 * C, HOOK_THROW) + whole(1, 3 * C))
    # The Go table's hostile chunks (each followed by a continuation and a whole transfer).
    after = chunk(0, 1, 3 * C, C) + whole(0, 3 * C + 7)
    hostile = [
        [chunk(0, 0, 3 * C, 0)],
        [chunk(0, 1, C, 0)],
        [chunk(0, 1, MAX + 1, 0)],
        [chunk(0, 1, LIMIT + 1, 0)],
        [chunk(0, 1, 3 * C, 0, t=5)],
        [chunk(0, 1, 3 * C, 0, t=1)],
        [chunk(0, 1, 3 * C, 0, t=127)],
        [chunk(0, 1, 3 * C, 0, sz=C - 1)],
        [chunk(0, 1, 3 * C, 0, sz=-C)],
        [chunk(0, 1, 3 * C, 0, sz=C + 1)],
        [chunk(0, 1, 3 * C, 0, sz=0)],
        [chunk(0, 1, 3 * C, 0, sz=-(1 << 31))],
        [chunk(0, 1, 3 * C, C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, 3 * C, sz=C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, (1 << 64) - 1 - C // 2, sz=C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 4 * C, C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, C, t=2500)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, C), chunk(0, 1, 3 * C, C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, 0)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, C // 2)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 1, 3 * C, 2 * C)],
        [chunk(0, 1, 3 * C, 0), chunk(0, 2, 3 * C, C)],
        [chunk(0, 1, 3 * C - 5, 0), chunk(0, 1, 3 * C - 5, C), chunk(0, 1, 3 * C - 5, 2 * C, sz=C)],
    ]
    out += [b"".join(steps) + after for steps in hostile]
    # Large answers: fetched whole; failing at a chunk; hostile CHUNK_NEXTs; a new request in the middle.
    for total in (C + 1, 3 * C - 5, 5 * C):
        out.append(answer(0, total) + good_next(0) * 6 + nxt(0, bytes([OUT_ID]), bytes([OUT_SENT])))
    out.append(answer(0, 4 * C, fail=2) + good_next(0) * 3)
    out.append(answer(0, 4 * C, fail=0x41) + good_next(0) * 3)
    out.append(answer(1, 4 * C, 3) + nxt(1, u64(12345), bytes([OUT_SENT])) + good_next(1))
    out.append(answer(1, 4 * C) + nxt(1, bytes([OUT_ID]), u64(2 * C)) + good_next(1))
    out.append(answer(1, 4 * C) + nxt(1, bytes([OUT_ID]), bytes([OUT_SENT]), 15) + good_next(1))
    out.append(answer(1, 4 * C) + good_next(1) + nxt(1, bytes([OUT_ID]), u64(C)))
    out.append(answer(2, 4 * C) + chunk(2, 1, 3 * C, 0) + good_next(2) + drop(2) + good(2))
    out.append(answer(2, MAX, 4) + good_next(2) * 4 + sweep(0, 3, True) + good_next(2))
    # max_transfers (2) across the three slots; sweeps.
    out.append(good(0, 3 * C) + good(1, 3 * C) + good(2, 3 * C) + good(0) + good(0) + good(2, 3 * C) + good(2))
    out.append(good(0, 5 * C) + good(1, 2 * C) + sweep(0, 1, True) + good(0, 3 * C) + good(1) + sweep(0, 3, False))
    # The caller side: a whole answer, a hostile first chunk, a chunk of another type.
    out.append(caller(5, True, 42, 3 * C - 5, 128, chunks=("good", "good")))
    out.append(caller(5, True, 42, 5 * C, chunks=("good", 2, "good")))
    out.append(caller(3, True, 42, 5 * C))  # too large for max_size 3C
    out.append(caller(5, False, 42, 3 * C, first_size=C - 1))
    out.append(caller(5, True, 0, 3 * C, chunks=("good",)))
    out.append(caller(5, True, 42, 5 * C, chunks=("good", "skip", "good")))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "fuzz_transfer")
    os.makedirs(target, exist_ok=True)
    for s in seeds():
        with open(os.path.join(target, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{len(seeds())} seeds in {target}")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# No system calls on the hot path: a host and a guest process (shm_test_peer pingpong) exchange messages
# under `strace -f -c`; the futex calls counted over the whole run (start-up and shutdown included) must stay
# under 1 per 100 messages. Two busy peers spin instead of sleeping, so futex calls come only from start-up,
# shutdown, and the times the scheduler takes a peer's CPU away.
#
# Noise can only add system calls, never remove them, so one clean run proves the hot path makes none: the
# check passes on the first of up to 3 runs under the bound. If every run misses it while the peers were
# preempted often (another load took their CPUs: the count of involuntary context switches), the machine
# was too busy to measure and the check reports itself skipped (exit 77, which ctest shows as "Skipped");
# otherwise it fails.
#
# Usage: syscall_check.sh <path to shm_test_peer> [messages]   Exit: 0 pass, 1 fail, 77 skipped.
set -euo pipefail
peer=$1
messages=${2:-100000}
limit=$((messages / 100))
busy_preemptions=50  # preemptions of the two peers during one exchange that mark the machine as busy

if ! command -v strace >/dev/null; then
  echo "strace is not installed: skipped"
  exit 77
fi
if ! strace -f -o /dev/null true 2>/dev/null; then
  echo "strace cannot trace here (ptrace not permitted): skipped"
  exit 77
fi

summary=$(mktemp)
output=$(mktemp)
name="shm-mp-syscalls-$$"
trap 'rm -f "$summary" "$output" "/dev/shm/$name"' EXIT
start=$SECONDS
quiet_runs=0
for attempt in 1 2 3; do
  if [ "$attempt" -gt 1 ] && [ $((SECONDS - start)) -gt 150 ]; then break; fi
  strace -f -c -o "$summary" "$peer" pingpong --name "$name" --count "$messages" --max-seconds 90 >"$output"
  # Rows are "% time, seconds, usecs/call, calls, [errors], syscall": the calls column is the 4th.
  futex=$(awk '$NF == "futex" { print $4 }' "$summary")
  futex=${futex:-0}
  total=$(awk '$NF == "total" { print $4 }' "$summary")
  result=$(grep '^PINGPONG' "$output" || true)
  preemptions=$(echo "$result" | sed -nE 's/.*preemptions=([0-9]+).*/\1/p')
  echo "run ${attempt}: ${result}"
  echo "run ${attempt}: futex_calls=${futex} all_syscalls=${total:-?} limit=${limit}"
  if [[ "$result" != PINGPONG\ * ]]; then
    echo "run ${attempt}: the exchange did not complete"
  elif [ "$futex" -lt "$limit" ]; then
    cat "$summary"
    echo "PASS: ${futex} futex calls for ${messages} messages"
    exit 0
  fi
  if [ -n "$preemptions" ] && [ "$preemptions" -lt "$busy_preemptions" ]; then quiet_runs=$((quiet_runs + 1)); fi
done
cat "$summary"
if [ "$quiet_runs" -eq 0 ]; then
  echo "SKIPPED: every run was disturbed (the peers were preempted ${busy_preemptions}+ times): the machine is too busy"
  exit 77
fi
echo "FAIL: ${futex} futex calls for ${messages} messages (limit ${limit}) on a quiet machine: the hot path enters the kernel"
exit 1

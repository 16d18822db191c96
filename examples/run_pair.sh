#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Run an example host and its guest as two processes on a fresh segment. Fails unless both exit 0 and, if
# given, <expected> appears in their output.
# Usage: run_pair.sh <host-program> <guest-program> [expected]
set -uo pipefail
host=$1
guest=$2
expected=${3:-}
name="shm-example-$$-$(basename "${host}")"
out=$(mktemp)
trap 'rm -f "${out}"' EXIT
"${guest}" "${name}" >>"${out}" 2>&1 &
guest_pid=$!
"${host}" "${name}" >>"${out}" 2>&1
host_status=$?
wait "${guest_pid}"  # ends: the guest exits when the host shuts down or dies, or when its Connect expires
guest_status=$?
cat "${out}"
echo "host exit ${host_status}, guest exit ${guest_status}"
[ "${host_status}" -eq 0 ] && [ "${guest_status}" -eq 0 ] || exit 1
if [ -n "${expected}" ] && ! grep -qF -- "${expected}" "${out}"; then
  echo "expected output not found: ${expected}"
  exit 1
fi

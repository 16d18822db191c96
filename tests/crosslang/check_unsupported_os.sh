#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Go guest builds only for Linux and Windows, and says so: for another OS, `go vet` and `go build` must fail,
# and every compiler error must be the one unsupported.go raises (the identifier
# shm_supports_only_linux_and_windows), not the undefined helpers a missing //go:build line would expose.
# Usage (in go/, with the build's Go environment): check_unsupported_os.sh <go>
set -uo pipefail
go=$1
marker=shm_supports_only_linux_and_windows
failed=0
check() {  # GOOS, go arguments...
  local goos=$1
  shift
  local out status
  out=$(GOOS=${goos} "${go}" "$@" 2>&1)
  status=$?
  echo "--- GOOS=${goos} go $*: exit status ${status}"
  echo "${out}"
  # Compiler and vet errors look like "path/file.go:12:9: message".
  local errors others
  errors=$(echo "${out}" | grep -E '\.go:[0-9]+(:[0-9]+)?: ' || true)
  others=$(echo "${errors}" | grep -v "${marker}" | grep . || true)
  if [ "${status}" -eq 0 ]; then
    echo "FAIL: GOOS=${goos} go $* succeeded; the guest cannot work there"
    failed=1
  elif [ -n "${others}" ]; then
    echo "FAIL: GOOS=${goos} go $* reports errors other than ${marker}: a platform file lacks its //go:build line"
    failed=1
  elif ! echo "${errors}" | grep -q "${marker}"; then
    echo "FAIL: GOOS=${goos} go $* did not fail with ${marker} (is unsupported.go there?)"
    failed=1
  fi
}
check freebsd vet ./...
check darwin build ./...
[ "${failed}" -eq 0 ] && echo "other OSes get the one clear error"
exit "${failed}"

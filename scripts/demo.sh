#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The README's first command: install what is missing, build the release configuration in build/release (the
# same build directory scripts/test.sh uses) and run shm-demo — a host process and a guest process exchanging
# messages — passing any arguments on to it.
# Usage: scripts/demo.sh [--go] [shm-demo options], --go in any position     e.g. scripts/demo.sh --seconds 10 --zero-copy
#   --go   serve with the Go guest (go/cmd/shm-demo-guest) instead of the C++ one
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# Take demo.sh's own option wherever it stands; everything else goes to shm-demo unchanged.
go=false
pass=()
for arg in "$@"; do
  case "$arg" in
    --go) go=true ;;
    *) pass+=("$arg") ;;
  esac
done
guest=()
if $go; then
  cmake --build build/release -j "$(nproc)" --target shm-demo shm_go_programs
  guest=(--guest-cmd "$PWD/build/release/tests/crosslang/shm-demo-guest")
else
  cmake --build build/release -j "$(nproc)" --target shm-demo
fi
exec build/release/tools/shm-demo/shm-demo "${guest[@]}" "${pass[@]}"

#!/usr/bin/env bash
# The README's first command: install what is missing, build the release configuration in build/release (the
# same build directory scripts/test.sh uses) and run shm-demo — a host process and a guest process exchanging
# messages — passing any arguments on to it.
# Usage: scripts/demo.sh [shm-demo options]     e.g. scripts/demo.sh --seconds 10 --zero-copy
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/release -j "$(nproc)" --target shm-demo
exec build/release/tools/shm-demo/shm-demo "$@"

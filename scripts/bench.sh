#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reproduce BENCHMARKS.md: build shm-bench (RelWithDebInfo) in build-bench/, run every case 5 times
# (interleaved), and write results/results.md, results/raw.csv, results/summary.csv and results/rtt.png.
#
#   scripts/bench.sh                 # the full run (about 10 minutes on a 2-core VM)
#   scripts/bench.sh --quick         # one short run of every case (smoke test)
#   scripts/bench.sh --runs 9 ...    # any other shm-bench arguments are passed on
#
# Run it on a quiet machine: spinning peers are measured, so every other runnable process shows up in the
# numbers. The load average is recorded with each run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

# Benchmark-only dependencies: the baselines (iceoryx, Boost.Interprocess) and the chart.
packages=(iceoryx libiceoryx-posh-dev libboost-dev python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHM_BUILD_TESTS=OFF >/dev/null
cmake --build build-bench --target shm-bench -j "$(nproc)"

mkdir -p results
echo "uptime before: $(uptime)"
build-bench/benchmarks/shm-bench --runs 5 --out results "$@" | tee results/shm-bench.log
echo "uptime after: $(uptime)"
# The Debian python3-matplotlib is the one installed above; prefer the system interpreter that has it.
python=/usr/bin/python3
[ -x "$python" ] || python=python3
"$python" benchmarks/plot.py results

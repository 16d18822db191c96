#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Long libFuzzer run of one target under ASan+UBSan: scripts/fuzz.sh <target> <seconds> [--update-corpus]
#   targets: fuzz_hostile_guest, fuzz_attach, fuzz_inspect, fuzz_transfer (tests/fuzz/)
# Builds with clang in ${SHM_FUZZ_BUILD_DIR:-build/fuzz} (configured there if it has no CMake cache yet), starts
# from the committed corpus tests/fuzz/corpus/<target>/ (read only), writes new inputs and any crash, leak or
# timeout input under <build>/fuzz-work/<target>/, and prints a summary line: date, seconds, inputs run,
# crashes. --update-corpus then merges what was found into the committed corpus, minimized (-merge=1).
# Exit status: 0 when the run found nothing, 1 when it left a crash/leak/timeout input.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  echo "usage: $0 <fuzz_hostile_guest|fuzz_attach|fuzz_inspect|fuzz_transfer> <seconds> [--update-corpus]" >&2
  exit 2
fi
target=$1
seconds=$2
update=${3:-}
build=${SHM_FUZZ_BUILD_DIR:-build/fuzz}
if [ ! -f "${build}/CMakeCache.txt" ]; then
  cmake -S . -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
    -DSHM_SANITIZE=address,undefined >/dev/null
fi
cmake --build "${build}" --target "${target}" -j 2 >/dev/null
bin=$(find "${build}" -type f -name "${target}" -perm -u+x | head -n 1)
[ -n "${bin}" ] || { echo "no ${target} binary in ${build} (clang only)" >&2; exit 2; }

corpus=tests/fuzz/corpus/${target}
work=${build}/fuzz-work/${target}
mkdir -p "${corpus}" "${work}/new" "${work}/artifacts"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log=${work}/run-${started}.log
crashes_before=$(find "${work}/artifacts" -type f | wc -l)
# -timeout: an input running 30 s means a hang (every call in the targets has a millisecond deadline).
cmd=("${bin}" "-max_total_time=${seconds}" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
     "-artifact_prefix=${work}/artifacts/" "${work}/new" "${corpus}")
echo "${started}: ${cmd[*]}" | tee "${log}"
set +e
ASAN_OPTIONS=detect_leaks=1 "${cmd[@]}" >>"${log}" 2>&1
rc=$?
set -e
execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "${log}" | grep -Eo '[0-9]+$' | tail -n 1 || true)
rate=$(grep -Eo 'stat::average_exec_per_sec: +[0-9]+' "${log}" | grep -Eo '[0-9]+$' | tail -n 1 || true)
cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "${log}" | tail -n 1 || true)
crashes=$(( $(find "${work}/artifacts" -type f | wc -l) - crashes_before ))
echo "fuzz ${target}: started ${started}, ${seconds} s, ${execs:-?} inputs (${rate:-?}/s), ${cov:-cov ?}," \
     "${crashes} crash/leak/timeout inputs, libFuzzer exit ${rc}; log ${log}"

if [ "${update}" = "--update-corpus" ]; then
  merged=${work}/merged
  rm -rf "${merged}"
  mkdir -p "${merged}"
  "${bin}" -merge=1 -timeout=30 "${merged}" "${corpus}" "${work}/new" >>"${log}" 2>&1
  rm -f "${corpus}"/*
  cp "${merged}"/* "${corpus}"/
  echo "corpus ${corpus}: $(ls "${corpus}" | wc -l) inputs, $(du -sh "${corpus}" | cut -f1)"
fi
[ "${crashes}" -eq 0 ] && [ "${rc}" -eq 0 ]

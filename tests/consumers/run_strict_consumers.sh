#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The public headers as a consumer with strict warnings sees them. Usage:
#   run_strict_consumers.sh <source dir> <work dir> <g++> <clang++>
# 1. Every header under include/shm/ alone in its own translation unit (`#include <shm/x.h>`, an empty main),
#    with each compiler at -std=c++17 and -std=c++20: a header that needs an include it lacks, or that warns,
#    fails (92 compiles, about 90 s on 2 cores). SHM_STRICT_FULL=0 keeps c++20 to one translation unit that
#    includes every header (48 compiles), for a quick local run. Checked with -fsyntax-only, which runs the
#    whole front end (every warning below) but no code generation.
# 2. no_exceptions.cc (it includes shm/shm.h) built with -fno-exceptions by each compiler and run: a host and a
#    guest in one process make one call.
# Both compilers are required (scripts/deps.sh installs them): a missing one fails the test instead of skipping.
set -euo pipefail
src=$1 work=$2 gxx=$3 clangxx=$4
flags=(-Wall -Wextra -Wpedantic -Wconversion -Wsign-conversion -Wshadow -Werror)
for cxx in "${gxx}" "${clangxx}"; do
  if ! command -v "${cxx}" >/dev/null 2>&1; then
    echo "compiler '${cxx}' not found: run scripts/deps.sh" >&2
    exit 1
  fi
done
rm -rf "${work}"
mkdir -p "${work}/tu" "${work}/log"

# Another platform's layer compiles only there (the Windows build compiles platform/windows/ in every test).
headers=$(cd "${src}/include" && find shm -name '*.h' -not -path 'shm/platform/windows/*' | LC_ALL=C sort)
jobs_file="${work}/jobs"
: >"${jobs_file}"
alone_stds="c++17"
[ "${SHM_STRICT_FULL:-1}" = 1 ] && alone_stds="c++17 c++20"
every="${work}/tu/every_header.cc"
: >"${every}"
for h in ${headers}; do
  tu="${work}/tu/$(echo "${h}" | tr '/.' '__').cc"
  printf '#include <%s>\nint main() {}\n' "${h}" >"${tu}"
  printf '#include <%s>\n' "${h}" >>"${every}"
  for cxx in "${gxx}" "${clangxx}"; do
    for std in ${alone_stds}; do
      printf '%s %s %s\n' "${cxx}" "${std}" "${tu}" >>"${jobs_file}"
    done
  done
done
printf 'int main() {}\n' >>"${every}"
if [ "${SHM_STRICT_FULL:-1}" != 1 ]; then
  for cxx in "${gxx}" "${clangxx}"; do printf '%s c++20 %s\n' "${cxx}" "${every}" >>"${jobs_file}"; done
fi

# One job: compiler, standard, translation unit. Its diagnostics go to a log named after all three.
compile_one() {
  local cxx=$1 std=$2 tu=$3 log
  log="${WORK}/log/$(basename "${cxx}")-${std}-$(basename "${tu}" .cc).log"
  if ! "${cxx}" "-std=${std}" -fsyntax-only ${FLAGS} -I"${SRC}/include" "${tu}" >"${log}" 2>&1; then
    echo "FAIL: $(basename "${cxx}") -std=${std} $(basename "${tu}")"
    cat "${log}"
    return 1
  fi
}
export -f compile_one
export WORK="${work}" SRC="${src}" FLAGS="${flags[*]}"

t0=${SECONDS}
failed=0
n=$(wc -l <"${jobs_file}")
xargs -P "$(nproc)" -L 1 bash -c 'compile_one "$@"' _ <"${jobs_file}" || failed=1
echo "headers: ${n} compiles of $(echo "${headers}" | wc -w) headers (alone at ${alone_stds}) with 2 compilers" \
  "in $((SECONDS - t0)) s"

for cxx in "${gxx}" "${clangxx}"; do
  bin="${work}/no_exceptions-$(basename "${cxx}")"
  if ! "${cxx}" -std=c++17 -fno-exceptions "${flags[@]}" -I"${src}/include" \
      "${src}/tests/consumers/no_exceptions.cc" -o "${bin}" -pthread; then
    echo "FAIL: $(basename "${cxx}") -fno-exceptions: tests/consumers/no_exceptions.cc does not build"
    failed=1
    continue
  fi
  if ! "${bin}"; then
    echo "FAIL: no_exceptions built by $(basename "${cxx}") did not complete its call"
    failed=1
  fi
done
echo "strict consumers: $([ "${failed}" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - t0)) s"
exit "${failed}"

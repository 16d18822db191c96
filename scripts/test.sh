#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Build and run every test: a release build, an ASan+UBSan build and a TSan build, each running the whole
# ctest suite (unit, multi-process, stress, fuzz smoke, install, Go), and a Windows build (mingw-w64) whose
# tests run under Wine (unit, the Windows binding's process tests, C++ host against the Go guest for Windows,
# the demo). Usage: scripts/test.sh [--under-load]
#
# --under-load: the same, with CPU hogs on every core (stress-ng, one busy process per core) from start to end,
# and each build's suite run three times in a row; a test that fails in any run counts as a failure. CI runs
# on a machine that other processes share: this is how the suite is shown to pass when they load every core.
set -euo pipefail
cd "$(dirname "$0")/.."
under_load=0
case "${1:-}" in
  "") ;;
  --under-load) under_load=1 ;;
  *) echo "usage: scripts/test.sh [--under-load]" >&2; exit 2 ;;
esac
# The Windows stage cross-compiles with mingw-w64 (posix threads) and runs under Wine, without recommends.
windows_packages=(g++-mingw-w64-x86-64-posix wine64 wine)
if [ "${under_load}" -eq 1 ]; then scripts/deps.sh "${windows_packages[@]}" stress-ng; else scripts/deps.sh "${windows_packages[@]}"; fi
jobs=$(nproc)
passed=0
failed=0

# RELIABILITY.md's fault table names the commit it was generated at; changes to include/ after it make it stale.
# A warning, not a failure: the table is regenerated when the library's work settles (RELIABILITY.md says how).
table_warning() {
  local gen later
  gen=$(grep -oE 'at commit [0-9a-f]{7,40}' RELIABILITY.md 2>/dev/null | head -n 1 | awk '{print $3}') || true
  [ -n "${gen}" ] && git cat-file -e "${gen}^{commit}" 2>/dev/null || return 0
  later=$(git rev-list --count "${gen}..HEAD" -- include/ 2>/dev/null) || return 0
  if [ "${later}" -gt 0 ]; then
    echo "WARNING: RELIABILITY.md's fault table was generated at commit ${gen}; ${later} commits to include/" \
      "came after it, so it may not describe this library. Regenerate it (see RELIABILITY.md)."
  fi
}
table_warning

runs=1
summaries=()
hogs=""
wine_prefix=""
# Ends what this script started: the CPU hogs, and the Windows stage's wineserver and Wine prefix.
cleanup() {
  if [ -n "${hogs}" ]; then
    kill "${hogs}" 2>/dev/null || true
    wait "${hogs}" 2>/dev/null || true
    hogs=""
  fi
  windows_cleanup
}
windows_cleanup() {
  [ -n "${wine_prefix}" ] || return 0
  local server
  # Debian's Wine keeps a server directory per prefix (/tmp/wine-*/server-<dev>-<inode>) after the server exits.
  server=$(stat -c '%D %i' "${wine_prefix}" 2>/dev/null | { read -r dev ino && printf 'server-%s-%x' "${dev}" "${ino}"; }) || true
  WINEPREFIX="${wine_prefix}" wineserver -k 2>/dev/null || true
  WINEPREFIX="${wine_prefix}" wineserver -w 2>/dev/null || true
  rm -rf "${wine_prefix}"
  [ -n "${server}" ] && rm -rf /tmp/wine-*/"${server}" 2>/dev/null
  wine_prefix=""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ "${under_load}" -eq 1 ]; then
  runs=3
  # --timeout only ends hogs that outlive a killed script; the trap ends them when the script ends.
  stress-ng --cpu "${jobs}" --timeout 3h --quiet &
  hogs=$!
  echo "=== under load: stress-ng --cpu ${jobs} (pid ${hogs}); each build's suite runs ${runs} times ==="
fi
started=${SECONDS}

run_build() {  # name, extra cmake args...
  local name=$1
  shift
  echo "=== build ${name} ==="
  local b0=${SECONDS}
  cmake -S . -B "build/${name}" -G Ninja "$@" >/dev/null
  cmake --build "build/${name}" -j "${jobs}"
  summaries+=("${name}: built in $((SECONDS - b0)) s")
  local run
  for run in $(seq 1 "${runs}"); do
    local label=${name} log="build/${name}/ctest.log" t0=${SECONDS}
    if [ "${runs}" -gt 1 ]; then
      label="${name} (run ${run} of ${runs})"
      log="build/${name}/ctest-${run}.log"
    fi
    echo "=== test ${label} ==="
    if ctest --test-dir "build/${name}" --output-on-failure -j 2 --timeout 600 2>&1 | tee "${log}"; then :; fi
    local line
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "${log}" | tail -n 1 || true)
    if [ -z "${line}" ]; then
      echo "ctest for ${label} printed no summary"
      failed=$((failed + 1))
      summaries+=("${label}: no summary")
      continue
    fi
    local total bad
    total=$(echo "${line}" | sed -E 's/.*out of ([0-9]+).*/\1/')
    bad=$(echo "${line}" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
    passed=$((passed + total - bad))
    failed=$((failed + bad))
    summaries+=("${label}: $((total - bad)) passed, ${bad} failed, $((SECONDS - t0)) s")
  done
}
run_build release -DCMAKE_BUILD_TYPE=RelWithDebInfo

# Windows: cross-compiled with mingw-w64, every test run by ctest through Wine (CMAKE_CROSSCOMPILING_EMULATOR).
# One persistent wineserver and a fresh prefix booted before the build (GoogleTest's discovery runs the test
# programs at build time): without them each Wine process would start its own server, and ctest would wait
# for the pipes that the server and Wine's helper processes inherit.
run_windows() {
  wine_prefix=$(mktemp -d /tmp/shm-wine.XXXXXX)
  export WINEPREFIX="${wine_prefix}" WINEDEBUG=-all
  echo "=== Wine prefix ${WINEPREFIX} ==="
  wineserver -p >/dev/null 2>&1
  wine wineboot --init >/dev/null 2>&1
  # CLI11 (for shm-demo) is header-only; its folder alone, so that the host's other headers stay out of sight.
  mkdir -p build/windows/cli11
  ln -sfn /usr/include/CLI build/windows/cli11/CLI
  run_build windows -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DSHM_CLI11_INCLUDE_DIR="${PWD}/build/windows/cli11"
  windows_cleanup
  unset WINEPREFIX WINEDEBUG
}
run_windows
# The sanitizer builds leave out the benchmarks: the release build runs their tests, and they are a third of
# a sanitizer build's compile time.
run_build asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++ -DSHM_SANITIZE=address,undefined \
  -DSHM_BUILD_BENCHMARKS=OFF
run_build tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHM_SANITIZE=thread -DSHM_BUILD_BENCHMARKS=OFF
echo
printf '%s\n' "${summaries[@]}"
echo "builds and tests: $((SECONDS - started)) s"
if [ "${under_load}" -eq 1 ]; then
  if ! kill -0 "${hogs}" 2>/dev/null; then
    echo "the CPU hogs (stress-ng pid ${hogs}) ended before the tests did: not every run was under load"
    failed=$((failed + 1))
  fi
fi
table_warning
echo "all builds: ${passed} passed, ${failed} failed"
[ "${failed}" -eq 0 ]

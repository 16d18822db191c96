#!/usr/bin/env bash
# Build and run every test: a release build, an ASan+UBSan build and a TSan build, each running the whole
# ctest suite (unit, multi-process, stress, fuzz smoke, install, Go). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
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

run_build() {  # name, extra cmake args...
  local name=$1
  shift
  echo "=== build ${name} ==="
  cmake -S . -B "build/${name}" -G Ninja "$@" >/dev/null
  cmake --build "build/${name}" -j "${jobs}"
  echo "=== test ${name} ==="
  local log="build/${name}/ctest.log"
  if ctest --test-dir "build/${name}" --output-on-failure -j 2 --timeout 600 2>&1 | tee "${log}"; then :; fi
  local line
  line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "${log}" | tail -n 1 || true)
  if [ -z "${line}" ]; then
    echo "ctest for ${name} printed no summary"
    failed=$((failed + 1))
    return
  fi
  local total bad
  total=$(echo "${line}" | sed -E 's/.*out of ([0-9]+).*/\1/')
  bad=$(echo "${line}" | sed -E 's/.* ([0-9]+) tests failed.*/\1/')
  passed=$((passed + total - bad))
  failed=$((failed + bad))
}
run_build release -DCMAKE_BUILD_TYPE=RelWithDebInfo
run_build asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++ -DSHM_SANITIZE=address,undefined
run_build tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHM_SANITIZE=thread
echo
table_warning
echo "all builds: ${passed} passed, ${failed} failed"
[ "${failed}" -eq 0 ]

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# git ignores every build folder the README, the docs and the scripts name (build/<name>, build-<name>),
# results/tmp and what a hand-run `go build` leaves in go/, and ignores no file that is tracked.
# Usage: check_gitignore.sh <source-dir> [git]. Exits 77 (skipped) when the source is not a git work tree.
set -euo pipefail
source=$1
git=${2:-git}
cd "${source}"
if ! command -v "${git}" >/dev/null || ! "${git}" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "not a git work tree (or no git): nothing to check"
  exit 77
fi

# Build folders named anywhere in the docs and scripts, plus the ones their names are made of at run time.
mapfile -t named < <( (grep -ohE '(^|[^A-Za-z0-9_./${}-])build[-/][A-Za-z0-9_.-]*[A-Za-z0-9]' \
                          ./*.md go/README.md scripts/* 2>/dev/null | sed -E 's/^[^b]*//'
                        printf '%s\n' build/release build/asan build/tsan build/fuzz build-bench) | sort -u)
paths=()
for dir in "${named[@]}"; do
  paths+=("${dir}/CMakeCache.txt")
done
paths+=(results/tmp/run.csv go/shm-demo-guest go/shm-bench-guest go/crosspeer go/shm.test
        go/cmd/shm-demo-guest/shm-demo-guest go/cmd/shm-bench-guest/shm-bench-guest
        go/internal/crosspeer/crosspeer scripts/__pycache__/reliability_table.cpython-311.pyc)

failed=0
for p in "${paths[@]}"; do
  if ! "${git}" check-ignore -q --no-index "${p}"; then
    echo "FAIL: ${p} is not ignored"
    failed=1
  fi
done
echo "checked ${#paths[@]} paths of build output (${named[*]})"

tracked=$("${git}" ls-files --cached --ignored --exclude-standard)
if [ -n "${tracked}" ]; then
  echo "FAIL: tracked files that .gitignore would ignore:"
  echo "${tracked}"
  failed=1
fi
[ "${failed}" -eq 0 ] && echo "build output is ignored, sources are not"
exit "${failed}"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Format every tracked C++ file with the repository's .clang-format, or with --check only report (exit 1)
# the files that differ. Usage: scripts/format.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' | grep -v '/corpus/')
if [ "${1:-}" = "--check" ]; then
  exec clang-format --dry-run -Werror "${files[@]}"
fi
clang-format -i "${files[@]}"

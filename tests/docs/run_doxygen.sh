#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# docs.doxygen: build the API reference from the root Doxyfile into <output dir>, with every warning an error,
# so an undocumented public member (or a broken doc command) fails. Usage:
#   run_doxygen.sh <source dir> <output dir> <doxygen>
# scripts/deps.sh installs doxygen, so a missing one fails the test: it is never skipped.
set -euo pipefail
src=$1 out=$2 doxygen=$3
if ! command -v "${doxygen}" >/dev/null 2>&1; then
  echo "doxygen ('${doxygen}') not found: run scripts/deps.sh, which installs it" >&2
  exit 1
fi
rm -rf "${out}"
mkdir -p "${out}"
cd "${src}"
log="${out}/warnings.log"
# The Doxyfile names no output directory, so the build directory is given here and nothing lands in the source
# tree. WARN_LOGFILE keeps every warning for the summary below; the exit status comes from FAIL_ON_WARNINGS.
status=0
{ cat Doxyfile; echo "OUTPUT_DIRECTORY = ${out}"; echo "WARN_LOGFILE = ${log}"; } | "${doxygen}" - || status=$?
if [ "${status}" -ne 0 ] || [ -s "${log}" ]; then
  echo "docs.doxygen: doxygen $("${doxygen}" --version) reported (exit status ${status}):"
  sed "s|${src}/||" "${log}"
  exit 1
fi
echo "docs.doxygen: no warnings; the reference is in ${out}/html/index.html"

#!/usr/bin/env bash
# Install shm from <build-dir> into a fresh prefix, then configure, build and run tests/install/consumer (which
# uses find_package(shm CONFIG REQUIRED) and builds examples/minimal as well) against that prefix only.
# Usage: run_install_test.sh <build-dir> <source-dir> <work-dir> [cmake] [c++ compiler]
set -euo pipefail
build=$1
source=$2
work=$3
cmake=${4:-cmake}
cxx=${5:-c++}

rm -rf "${work}"
mkdir -p "${work}"
prefix="${work}/prefix"

echo "--- cmake --install into ${prefix}"
"${cmake}" --install "${build}" --prefix "${prefix}"
test -f "${prefix}/include/shm/shm.h"
config=$(find "${prefix}" -name shmConfig.cmake)
test -n "${config}"

echo "--- configure and build the consumer"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# Search only the prefix: no package registry, no system prefixes that might hold another shm.
"${cmake}" -S "${source}/tests/install/consumer" -B "${work}/consumer" "${generator[@]}" \
  -DCMAKE_CXX_COMPILER="${cxx}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="${prefix}" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DSHM_EXAMPLES_DIR="${source}/examples"
found=$(sed -n 's/^shm_DIR:PATH=//p' "${work}/consumer/CMakeCache.txt")
case "${found}" in
  "${prefix}"/*) echo "shm found in ${found}" ;;
  *) echo "FAIL: shm_DIR is '${found}', not inside ${prefix}"; exit 1 ;;
esac
"${cmake}" --build "${work}/consumer"

echo "--- run the consumer: a host and a guest process"
"${work}/consumer/consumer"

echo "--- run examples/minimal built against the installed package"
"${source}/examples/run_pair.sh" "${work}/consumer/minimal_host" "${work}/consumer/minimal_guest" \
  'host: guest answered "echo: hello"'
echo "install test passed"

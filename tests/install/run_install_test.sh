#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configure shm with its tests and tools off, as a packager would, so none of their dependencies (GoogleTest,
# Go, FlatBuffers, iceoryx, Boost) can be needed; install it into a fresh prefix; then use the installed
# package the two ways a user can:
#   - find_package(shm): configure, build and run tests/install/consumer (and examples/minimal) against it;
#   - pkg-config: compile tests/install/consumer/main.cc with `pkg-config --cflags --libs shm` and run it.
# Both must find only the prefix, and the versions CMake, pkg-config and the headers report must agree.
# Usage: run_install_test.sh <source-dir> <work-dir> [cmake] [c++ compiler] [pkg-config]
set -euo pipefail
source=$1
work=$2
cmake=${3:-cmake}
cxx=${4:-c++}
pkg_config=${5:-pkg-config}

rm -rf "${work}"
mkdir -p "${work}"
prefix="${work}/prefix"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

echo "--- configure shm with tests and tools off, their packages disabled"
disabled=()
for package in GTest FlatBuffers iceoryx_posh Boost; do
  disabled+=("-DCMAKE_DISABLE_FIND_PACKAGE_${package}=ON")
done
"${cmake}" -S "${source}" -B "${work}/build" "${generator[@]}" --no-warn-unused-cli \
  -DCMAKE_CXX_COMPILER="${cxx}" -DSHM_BUILD_TESTS=OFF -DSHM_BUILD_TOOLS=OFF "${disabled[@]}"
# Nothing may even have looked for a test or tool dependency (find_package or find_program leave cache entries).
looked=$(grep -iE '^(GTest|GMock|benchmark|FlatBuffers|iceoryx|Boost|SHM_GO|SHM_GOFMT|SHM_FLATC|SHM_GIT)[A-Za-z_]*:' \
           "${work}/build/CMakeCache.txt" || true)
if [ -n "${looked}" ]; then
  echo "FAIL: configuring without tests and tools looked for their dependencies:"
  echo "${looked}"
  exit 1
fi

echo "--- cmake --install into ${prefix}"
"${cmake}" --install "${work}/build" --prefix "${prefix}"
test -f "${prefix}/include/shm/shm.h"
test -f "${prefix}/include/shm/version.h"
# Header-only and ARCH_INDEPENDENT: the package files belong in share/, nothing in an architecture's lib/.
for f in share/cmake/shm/shmConfig.cmake share/cmake/shm/shmConfigVersion.cmake share/cmake/shm/shmTargets.cmake \
         share/pkgconfig/shm.pc; do
  test -f "${prefix}/${f}" || { echo "FAIL: ${prefix}/${f} is not installed"; exit 1; }
done
misplaced=$(cd "${prefix}" && find . -path './lib*' -type f)
if [ -n "${misplaced}" ]; then
  echo "FAIL: files installed under lib/ for a header-only package: ${misplaced}"
  exit 1
fi

echo "--- find_package(shm): configure and build the consumer"
# Search only the prefix: no package registry, no system prefixes that might hold another shm.
"${cmake}" -S "${source}/tests/install/consumer" -B "${work}/consumer" "${generator[@]}" \
  -DCMAKE_CXX_COMPILER="${cxx}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="${prefix}" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DSHM_EXAMPLES_DIR="${source}/examples" | tee "${work}/consumer.log"
found=$(sed -n 's/^shm_DIR:PATH=//p' "${work}/consumer/CMakeCache.txt")
case "${found}" in
  "${prefix}"/share/cmake/shm) echo "shm found in ${found}" ;;
  *) echo "FAIL: shm_DIR is '${found}', not ${prefix}/share/cmake/shm"; exit 1 ;;
esac
cmake_version=$(sed -n 's/^-- consumer: shm \([0-9.]*\) found.*/\1/p' "${work}/consumer.log")
"${cmake}" --build "${work}/consumer"

echo "--- run the consumer: a host and a guest process"
"${work}/consumer/consumer" | tee "${work}/consumer.out"

echo "--- run examples/minimal built against the installed package"
"${source}/examples/run_pair.sh" "${work}/consumer/minimal_host" "${work}/consumer/minimal_guest" \
  'host: guest answered "echo: hello"'

echo "--- pkg-config: compile the consumer with \`pkg-config --cflags --libs shm\`"
command -v "${pkg_config}" >/dev/null || { echo "FAIL: no pkg-config (scripts/deps.sh installs it)"; exit 1; }
# PKG_CONFIG_LIBDIR replaces the default search path: only the prefix is searched.
export PKG_CONFIG_LIBDIR="${prefix}/share/pkgconfig"
unset PKG_CONFIG_PATH
pc_version=$("${pkg_config}" --modversion shm)
for kind in cflags libs; do
  flags=$("${pkg_config}" --${kind} shm)
  case " ${flags} " in *" -pthread "*) ;; *) echo "FAIL: no -pthread in --${kind}: ${flags}"; exit 1 ;; esac
done
read -r -a pc_flags <<<"$("${pkg_config}" --cflags --libs shm)"
echo "pkg-config: shm ${pc_version}: ${pc_flags[*]}"
include_dir=""
for flag in "${pc_flags[@]}"; do
  case "${flag}" in -I*) include_dir=${flag#-I} ;; esac
done
if [ -z "${include_dir}" ] || [ "$(cd "${include_dir}" && pwd -P)" != "$(cd "${prefix}/include" && pwd -P)" ]; then
  echo "FAIL: pkg-config's include directory '${include_dir}' is not ${prefix}/include"
  exit 1
fi
"${cxx}" -std=c++17 -Wall -Wextra -Werror -o "${work}/pc_consumer" "${source}/tests/install/consumer/main.cc" \
  "${pc_flags[@]}"
"${work}/pc_consumer" | tee "${work}/pc_consumer.out"

echo "--- versions: find_package, pkg-config and the headers"
header_version=$(sed -n 's/^consumer: shm \([0-9.]*\),.*/\1/p' "${work}/pc_consumer.out")
echo "find_package: ${cmake_version:-none}; pkg-config: ${pc_version}; SHM_VERSION_STRING: ${header_version:-none}"
if [ -z "${header_version}" ] || [ "${cmake_version}" != "${pc_version}" ] || [ "${pc_version}" != "${header_version}" ]; then
  echo "FAIL: the installed package reports different versions"
  exit 1
fi
echo "install test passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install what building and testing shm needs on Debian 12. Installs only what is missing, so it is quick
# (and needs no root) on a machine that already has everything. Extra package names given as arguments are
# installed the same way (scripts/test.sh --under-load asks for stress-ng).
set -euo pipefail
packages=(cmake ninja-build g++ clang libgtest-dev libgmock-dev libbenchmark-dev
          libflatbuffers-dev flatbuffers-compiler libcli11-dev golang-go libclang-rt-14-dev strace linux-perf
          pkg-config clang-format clang-tidy doxygen spin tmux "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

// SPDX-License-Identifier: Apache-2.0
// The translation unit ctest lint.clang_tidy checks: every public header, through shm/shm.h, under the checks
// of the repository's .clang-tidy.
#include <shm/shm.h>

int main() { return 0; }

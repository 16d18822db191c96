# SPDX-License-Identifier: Apache-2.0
# Cross-compile for 64-bit Windows with Debian's mingw-w64 (posix thread model: std::thread and std::mutex need
# it), and run what is built under Wine: ctest runs every test through CMAKE_CROSSCOMPILING_EMULATOR.
#   cmake -S . -B build/windows -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(CMAKE_C_COMPILER x86_64-w64-mingw32-gcc-posix)
set(CMAKE_CXX_COMPILER x86_64-w64-mingw32-g++-posix)
set(CMAKE_RC_COMPILER x86_64-w64-mingw32-windres)
set(CMAKE_FIND_ROOT_PATH /usr/x86_64-w64-mingw32)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(CMAKE_CROSSCOMPILING_EMULATOR wine)
# Static: no libstdc++-6.dll, libwinpthread-1.dll or libgcc_s_seh-1.dll to ship (or for Wine to find).
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

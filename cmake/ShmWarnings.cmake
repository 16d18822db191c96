# SPDX-License-Identifier: Apache-2.0
# shm_target(<target>): the project's own compile settings — warnings as errors, and the sanitizers chosen
# with -DSHM_SANITIZE=... . Applies to tests, tools, examples and benchmarks, never to consumers of shm::shm.
function(shm_target target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion -Werror)
  target_link_libraries(${target} PRIVATE shm::shm)
  if(SHM_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${SHM_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${SHM_SANITIZE})
  endif()
endfunction()

# SPDX-License-Identifier: Apache-2.0
# Runs a tool with arguments it must refuse, and fails unless it exits non-zero and says why on stderr.
#   cmake -DCOMMAND="<program>|<arg>|<arg>..." -DEXPECT="<regex the error output must match>" -P expect_refusal.cmake
# The arguments are separated by "|" so that a test can pass them through add_test unchanged.
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
if(rc EQUAL 0)
  message(FATAL_ERROR "accepted arguments it should refuse (exit 0): ${COMMAND}\n${out}")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "refused (exit ${rc}) but the message does not match '${EXPECT}':\n${err}")
endif()
message(STATUS "refused as expected (exit ${rc}): ${err}")

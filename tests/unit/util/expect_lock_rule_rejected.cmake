# Compiles lock_rule_violation.cc with clang -Wthread-safety -Werror twice:
# without HOLD_LOCK it must succeed, with HOLD_LOCK it must fail with a
# thread-safety diagnostic about AioWaitBhOneshot.
set(flags -std=c++20 -fsyntax-only -Wthread-safety -Werror -I${INCLUDE_DIR})
execute_process(COMMAND ${COMPILER} ${flags} ${SOURCE}
  RESULT_VARIABLE ok_result ERROR_VARIABLE ok_errors)
if(NOT ok_result EQUAL 0)
  message(FATAL_ERROR "the correct variant does not compile:\n${ok_errors}")
endif()
execute_process(COMMAND ${COMPILER} ${flags} -DHOLD_LOCK ${SOURCE}
  RESULT_VARIABLE bad_result ERROR_VARIABLE bad_errors)
if(bad_result EQUAL 0)
  message(FATAL_ERROR "calling AioWaitBhOneshot while holding the lock compiled: the rule is not enforced")
endif()
if(NOT bad_errors MATCHES "cannot call function 'AioWaitBhOneshot' while mutex")
  message(FATAL_ERROR "the variant holding the lock failed, but not through -Wthread-safety:\n${bad_errors}")
endif()
message(STATUS "rejected as expected:\n${bad_errors}")

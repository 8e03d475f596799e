# kvmini_add_test(): one GoogleTest binary registered with ctest, plus the
# labels that decide where it runs:
#   unit        host-process tests (normal build and ASan+UBSan build)
#   concurrency tests that also run under TSan
#   kvm         tiny guests on the local /dev/kvm (normal build)
#   guest       Linux guests; scripts/test.sh runs them inside tests/rig
#   rig         self-tests of the rig
# Each label gets a build target "tests-<label>" so a sanitizer build
# compiles only what it runs.
include(GoogleTest)

function(kvmini_add_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
  foreach(label IN LISTS ARG_LABELS)
    set_property(GLOBAL APPEND PROPERTY KVMINI_TEST_TARGETS_${label} ${name})
    set_property(GLOBAL APPEND PROPERTY KVMINI_TEST_LABELS ${label})
  endforeach()
endfunction()

# Registers an existing target as needed by tests of the given labels
# (for script-driven tests that run a binary, e.g. kvmini itself).
function(kvmini_label_target target)
  foreach(label IN LISTS ARGN)
    set_property(GLOBAL APPEND PROPERTY KVMINI_TEST_TARGETS_${label} ${target})
    set_property(GLOBAL APPEND PROPERTY KVMINI_TEST_LABELS ${label})
  endforeach()
endfunction()

function(kvmini_finish_test_groups)
  get_property(labels GLOBAL PROPERTY KVMINI_TEST_LABELS)
  list(REMOVE_DUPLICATES labels)
  foreach(label IN LISTS labels)
    get_property(targets GLOBAL PROPERTY KVMINI_TEST_TARGETS_${label})
    list(REMOVE_DUPLICATES targets)
    add_custom_target(tests-${label} DEPENDS ${targets})
  endforeach()
endfunction()

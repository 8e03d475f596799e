# Warnings are errors everywhere; clang additionally checks lock annotations.
add_compile_options(-Wall -Wextra -Werror -Wno-unused-parameter)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  add_compile_options(-Wthread-safety -Werror=thread-safety)
endif()
# GCC 12's -O3 flow analysis reports out-of-bounds memcpy/memset inside
# std::vector growth that cannot happen (known false positives); keep them
# as warnings so a Release build of a clean tree still succeeds.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12)
  add_compile_options(-Wno-error=array-bounds -Wno-error=stringop-overflow)
endif()

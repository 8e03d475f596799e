# Static linking for a faster start-up and a smaller resident set
# (docs/ARCHITECTURE.md, "Start-up order and the sandbox"): the dynamic
# loader's mapping and relocation of shared C++ libraries was the largest
# part of kvmini's time before main() and of its memory before the guest
# runs. Sanitizer builds keep the shared libraries (they are what
# scripts/test.sh has always tested, and nothing there measures start-up).
#
# KVMINI_STATIC_ABSL: Abseil's static archives instead of its shared
# libraries, when the installed package has them (Debian's libabsl-dev
# ships both); otherwise kvmini loads about 40 libabsl_*.so files.
# Abseil's exported CMake targets are SHARED IMPORTED; each one's location
# is pointed at the matching .a next to its .so. CMake orders imported
# libraries by their INTERFACE_LINK_LIBRARIES, which is the order static
# archives need. Applies to every target (tests too), so that no binary
# mixes the two. Include after find_package(absl).
#
# KVMINI_LEAN_LINK: kvmini_lean_link(kvmini ...) makes that executable a
# static PIE when every library it needs has a static archive (liburing's
# and libseccomp's are then linked everywhere: C libraries, one copy each),
# otherwise links just the C++ run-time (libstdc++, libgcc) into it; and
# drops the sections nothing references (--gc-sections; each libstdc++
# function has its own). Tests keep the shared C++ run-time, which their
# shared C++ dependencies use.
option(KVMINI_STATIC_ABSL "Link Abseil statically when its static archives are installed" ON)
option(KVMINI_LEAN_LINK "Link kvmini statically (a static PIE where possible) without unused sections" ON)

function(kvmini_use_static_absl)
  if(NOT KVMINI_STATIC_ABSL)
    return()
  endif()
  if(NOT KVMINI_SANITIZE STREQUAL "")
    message(STATUS "KVMINI_STATIC_ABSL: sanitizer build, linking Abseil's shared libraries")
    return()
  endif()
  get_directory_property(imported IMPORTED_TARGETS)
  set(retargeted)
  set(archives)
  foreach(target IN LISTS imported)
    if(NOT target MATCHES "^absl::")
      continue()
    endif()
    get_target_property(type ${target} TYPE)
    if(NOT type STREQUAL "SHARED_LIBRARY")
      continue()
    endif()
    get_target_property(configurations ${target} IMPORTED_CONFIGURATIONS)
    foreach(configuration IN LISTS configurations)
      get_target_property(location ${target} IMPORTED_LOCATION_${configuration})
      string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${location}")
      if(archive STREQUAL location OR NOT EXISTS "${archive}")
        # One archive missing: keep every library shared rather than mix.
        message(STATUS "KVMINI_STATIC_ABSL: no ${archive}; linking Abseil's shared libraries")
        return()
      endif()
      list(APPEND retargeted "${target}|${configuration}")
      list(APPEND archives "${archive}")
    endforeach()
  endforeach()
  if(NOT retargeted)
    message(STATUS "KVMINI_STATIC_ABSL: no shared Abseil targets found; nothing to change")
    return()
  endif()
  foreach(entry archive IN ZIP_LISTS retargeted archives)
    string(REPLACE "|" ";" parts "${entry}")
    list(GET parts 0 target)
    list(GET parts 1 configuration)
    set_target_properties(${target} PROPERTIES IMPORTED_LOCATION_${configuration} "${archive}")
    set_property(TARGET ${target} PROPERTY IMPORTED_SONAME_${configuration})
  endforeach()
  list(LENGTH archives count)
  message(STATUS "KVMINI_STATIC_ABSL: linking ${count} Abseil static archives")
endfunction()

kvmini_use_static_absl()

# Points pkg-config's imported `target` at the static archives of its
# libraries; leaves it alone and sets `result` false if one is missing.
function(kvmini_use_static_archives target result)
  set(${result} FALSE PARENT_SCOPE)
  if(NOT TARGET ${target})
    return()
  endif()
  get_target_property(libraries ${target} INTERFACE_LINK_LIBRARIES)
  set(archives)
  foreach(library IN LISTS libraries)
    if(library MATCHES "\\.so$")
      string(REGEX REPLACE "\\.so$" ".a" archive "${library}")
      if(NOT EXISTS "${archive}")
        return()
      endif()
      list(APPEND archives "${archive}")
    else()
      list(APPEND archives "${library}")
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES INTERFACE_LINK_LIBRARIES "${archives}")
  set(${result} TRUE PARENT_SCOPE)
endfunction()

# `shared_c_libraries`: the pkg-config imported targets of the C libraries
# the target links (they must be GLOBAL to be seen here).
function(kvmini_lean_link target shared_c_libraries)
  if(NOT KVMINI_LEAN_LINK OR NOT KVMINI_SANITIZE STREQUAL "")
    return()
  endif()
  target_link_options(${target} PRIVATE -Wl,--gc-sections)
  include(CheckCXXSourceRuns)
  set(probe "#include <string>\nint main() { return std::string(\"x\").size() - 1; }")
  # A static PIE keeps address-space randomization. Checked by running: some
  # driver flag combinations link a static PIE that crashes at once.
  set(CMAKE_REQUIRED_LINK_OPTIONS -static-pie)
  check_cxx_source_runs("${probe}" KVMINI_HAVE_STATIC_PIE)
  if(KVMINI_HAVE_STATIC_PIE)
    set(all_static TRUE)
    foreach(library IN LISTS shared_c_libraries)
      kvmini_use_static_archives(${library} found)
      if(NOT found)
        set(all_static FALSE)
        message(STATUS "KVMINI_LEAN_LINK: ${library} has no static archive")
      endif()
    endforeach()
    if(all_static)
      # libstdc++ and libgcc come in statically as well.
      target_link_options(${target} PRIVATE -static-pie)
      message(STATUS "KVMINI_LEAN_LINK: ${target} is a static PIE")
      return()
    endif()
  endif()
  set(CMAKE_REQUIRED_LINK_OPTIONS -static-libstdc++ -static-libgcc)
  check_cxx_source_runs("${probe}" KVMINI_HAVE_STATIC_LIBSTDCXX)
  if(KVMINI_HAVE_STATIC_LIBSTDCXX)
    target_link_options(${target} PRIVATE -static-libstdc++ -static-libgcc)
    message(STATUS "KVMINI_LEAN_LINK: ${target} links the C++ run-time statically")
  endif()
endfunction()

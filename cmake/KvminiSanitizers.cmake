# Sanitizer builds used by scripts/test.sh (see docs/TESTING.md).
if(KVMINI_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=all)
elseif(KVMINI_SANITIZE STREQUAL "thread")
  # Debian's Abseil is not built with TSan, so util::Mutex tells TSan about
  # its lock and unlock itself (KVMINI_TSAN_ANNOTATE).
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
  add_compile_definitions(KVMINI_TSAN_ANNOTATE=1)
elseif(NOT KVMINI_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KVMINI_SANITIZE must be empty, 'address' or 'thread', not '${KVMINI_SANITIZE}'")
endif()

# Coverage instrumentation for libFuzzer in every library the fuzzers link.
if(KVMINI_BUILD_FUZZERS)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

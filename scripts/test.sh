#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up as in quickstart.sh, then
#   1. build/normal (gcc): every test except Linux-guest ones;
#   2. the Linux-guest tests (label guest), each in its own rig boot;
#   3. build/asan (clang, ASan+UBSan, -Wthread-safety): labels unit and kvm, then
#      the libFuzzer targets for ~20 s each (label fuzz);
#   4. build/tsan (clang, TSan, -Wthread-safety): label concurrency.
# Exits non-zero on any failure; the last line is a ctest-style summary of
# all phases.
set -uo pipefail
source "$(dirname "$0")/setup.sh"
cd "$KVMINI_ROOT"

kvmini_install_packages
mkdir -p build

# Line tables only: enough for sanitizer and crash stack traces, and much
# cheaper to compile and link than full debug info on a 2-core CI machine.
build_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG"
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")

total_passed=0
total_failed=0
failed_phases=()

# run_ctest PHASE DIR ctest-args...: runs ctest, adds its counts to the totals.
run_ctest() {
  local phase=$1 dir=$2; shift 2
  local log="$KVMINI_ROOT/build/$phase.ctest.log"
  kvmini_say "tests: $phase"
  ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$log"
  local status=${PIPESTATUS[0]}
  count_results "$phase" "$log" "$status"
}

# count_results PHASE LOG STATUS: reads ctest's summary line from LOG.
count_results() {
  local phase=$1 log=$2 status=$3 summary passed failed total
  summary=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
  if [ -z "$summary" ]; then
    if grep -q 'No tests were found' "$log"; then
      echo "$phase: no tests found" >&2
      total_failed=$((total_failed + 1)); failed_phases+=("$phase (no tests)")
      return
    fi
    total_failed=$((total_failed + 1)); failed_phases+=("$phase (ctest did not finish)")
    return
  fi
  failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")
  total=$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$summary")
  passed=$((total - failed))
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  if [ "$failed" -ne 0 ] || [ "$status" -ne 0 ]; then
    failed_phases+=("$phase")
    [ "$failed" -eq 0 ] && total_failed=$((total_failed + 1))
  fi
}

build_or_fail() {
  local phase=$1; shift
  if ! kvmini_build "$@"; then
    total_failed=$((total_failed + 1)); failed_phases+=("$phase (build failed)")
    return 1
  fi
}

# 1. Normal build, everything but Linux guests.
if build_or_fail normal build/normal "${build_flags[@]}"; then
  run_ctest normal build/normal -LE guest -j "$KVMINI_JOBS"

  # 2. Linux guests, through an outer machine when the host lacks hardware
  #    virtualization (tests/rig/run-with-kvm decides).
  if [ -x tests/rig/run-with-kvm ] && [ -n "$(ctest --test-dir build/normal -N -L guest | grep -E '^ +Test +#')" ]; then
    for flavour in cloud generic; do
      kvmini_say "guest image: $flavour"
      guest-images/build.sh --flavour "$flavour" build/guest/$flavour \
        || { total_failed=$((total_failed + 1)); failed_phases+=("guest image $flavour"); }
    done
    # QEMU TCG running nested SVM now and then freezes or resets the whole
    # outer machine (the rig failing, status 125, not a test) or makes a
    # nested guest triple-fault. run-guest-tests goes on in a fresh outer
    # machine after a rig failure, runs a failed test once more at the end
    # (FLAKY if it passes then, failed if not) and lists all of it.
    kvmini_say "tests: guest (each through tests/rig/run-with-kvm)"
    tests/rig/run-guest-tests build/normal 2>&1 | tee build/guest.ctest.log
    guest_status=${PIPESTATUS[0]}
    count_results guest build/guest.ctest.log "$guest_status"
  fi
fi

# 3. ASan+UBSan, clang (also checks the lock annotations): the unit and kvm tests,
#    then each libFuzzer target for a short bounded time.
if build_or_fail asan build/asan -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    "${build_flags[@]}" -DKVMINI_SANITIZE=address -DKVMINI_BUILD_FUZZERS=ON \
    -- tests-unit tests-kvm tests-fuzz; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest asan build/asan -L 'unit|kvm' -j "$KVMINI_JOBS"
  run_ctest fuzz build/asan -L fuzz -j "$KVMINI_JOBS"
fi

# 4. TSan, clang.
if build_or_fail tsan build/tsan -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    "${build_flags[@]}" -DKVMINI_SANITIZE=thread -- tests-concurrency; then
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    run_ctest tsan build/tsan -L concurrency -j "$KVMINI_JOBS"
fi

echo
if [ ${#failed_phases[@]} -ne 0 ]; then
  echo "FAILED phases: ${failed_phases[*]}"
fi
all=$((total_passed + total_failed))
percent=100
[ "$all" -gt 0 ] && percent=$((total_passed * 100 / all))
echo "all phases: $total_passed passed, $total_failed failed"
echo "$percent% tests passed, $total_failed tests failed out of $all"
[ ${#failed_phases[@]} -eq 0 ] && [ "$all" -gt 0 ]

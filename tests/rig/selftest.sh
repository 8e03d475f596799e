#!/usr/bin/env bash
# Self-tests of tests/rig/run-with-kvm, one case per ctest test (see
# CMakeLists.txt): selftest.sh CASE WORK_DIR. Each case asserts what its
# name says and fails with a message otherwise. Cases that boot the outer
# machine print the rig's overhead line ("outer machine ready in ...").
set -uo pipefail

RIG="$(cd "$(dirname "$0")" && pwd)/run-with-kvm"
RIG_FAILURE=125
case_name=${1:?usage: selftest.sh CASE WORK_DIR}
work=${2:?usage: selftest.sh CASE WORK_DIR}
rm -rf "$work" && mkdir -p "$work" || exit 1
work=$(cd "$work" && pwd)

fail() {
  echo "FAIL ($case_name): $*" >&2
  exit 1
}

# expect_status WANT GOT WHAT
expect_status() {
  [ "$2" -eq "$1" ] || fail "$3: exit status $2, expected $1"
}

# expect_in FILE TEXT WHAT
expect_in() {
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$3: '$2' missing from the rig's messages"; }
}

show_overhead() {
  grep -h "outer machine ready in" "$@" || true
}

# process_gone PID: true when PID no longer runs (gone, or a zombie that
# only waits for its new parent to reap it).
process_gone() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" = Z ]
}

# start_watched ARGS...: runs the rig in the background (rig_pid) and
# records every child it starts (qemu, apt-get, or the command when run
# directly) in $work/children until it exits.
start_watched() {
  : > "$work/children"
  "$RIG" "$@" > "$work/out" 2> "$work/err" &
  rig_pid=$!
  (
    while ! process_gone "$rig_pid"; do
      pgrep -P "$rig_pid" >> "$work/children"
      sleep 0.1
    done
  ) &
  watcher_pid=$!
}

# finish_watched: waits for the rig; sets status.
finish_watched() {
  wait "$rig_pid"
  status=$?
  wait "$watcher_pid"
}

# wait_for_child PATTERN: until the rig runs a child whose command line
# matches PATTERN (at most 120 s).
wait_for_child() {
  for _ in $(seq 1200); do
    pgrep -P "$rig_pid" -f "$1" > /dev/null && return 0
    process_gone "$rig_pid" && break
    sleep 0.1
  done
  cat "$work/err" >&2
  fail "the rig never started a child matching '$1'"
}

expect_no_leftovers() {
  local cache=$1 child
  for child in $(sort -u "$work/children"); do
    for _ in $(seq 50); do process_gone "$child" && break; sleep 0.1; done
    process_gone "$child" || fail "process $child the rig started is still running: $(ps -o args= -p "$child")"
  done
  if [ -d "$cache/jobs" ] && [ -n "$(ls -A "$cache/jobs")" ]; then
    fail "job folders left behind in $cache/jobs: $(ls "$cache/jobs")"
  fi
  [ -z "$(ls -d "$cache"/.build-* 2>/dev/null)" ] || fail "build folders left behind in $cache"
}

default_cache() {
  echo "${KVMINI_RIG_CACHE:-$(cd "$(dirname "$RIG")/../.." && pwd)/build/rig-cache}"
}

# private_cache: a cache folder of this case's own, filled with hard links
# to the default cache's entry, so the job folders it checks are only this
# case's (a developer's rig run may share the default cache meanwhile).
private_cache() {
  local default
  default=$(default_cache)
  "$RIG" --prepare 2> "$work/prepare" || { cat "$work/prepare" >&2; fail "cannot fill the default cache"; }
  mkdir -p "$work/cache"
  cp -al "$default"/linux-image-* "$work/cache/" && cp "$default/resolved.json" "$work/cache/" \
    || fail "cannot link the default cache entry into $work/cache"
  echo "$work/cache"
}

case "$case_name" in
  exit-status)
    "$RIG" -- sh -c 'echo from-the-command; exit 7' > "$work/out" 2> "$work/err"
    status=$?
    show_overhead "$work/err"
    expect_status 7 "$status" "sh -c 'exit 7'"
    grep -qx from-the-command "$work/out" || fail "the command's output did not come back: $(cat "$work/out")"
    ;;

  inside)
    # One boot checks what the command sees; the host then checks what it
    # left behind.
    KVMINI_SELFTEST_QUOTED="it's \$HOME and \"quotes\"" KVMINI_SELFTEST_CWD="$PWD" NOT_PASSED_BY_RIG=1 \
      "$RIG" --env EXTRA_BY_FLAG --env SET_BY_FLAG=given -- \
      "$0" inside-probe "$work/probe" > "$work/out" 2> "$work/err"
    status=$?
    cat "$work/out"
    show_overhead "$work/err"
    expect_status 0 "$status" "the probe inside"
    [ "$(cat "$work/probe/written-inside.txt" 2>/dev/null)" = "written inside" ] \
      || fail "a file written inside under the build tree is not visible on the host"
    [ -s "$work/probe/ctest/Testing/Temporary/LastTest.log" ] \
      || fail "ctest run inside left no Testing/Temporary/LastTest.log on the host"
    [ "$(cat "$work/probe/ctest/from-ctest.txt" 2>/dev/null)" = from-ctest ] \
      || fail "a test run by ctest inside could not write under the build tree"
    ;;

  inside-probe)
    # Runs inside the rig (called by the case above).
    bad=0
    check() { if eval "$1"; then echo "ok: $2"; else echo "NOT OK: $2"; bad=1; fi; }
    check '[ -c /dev/kvm ]' "/dev/kvm exists"
    if [ "${KVMINI_RIG_INSIDE:-}" = 1 ]; then
      check 'grep -qw svm /proc/cpuinfo' "the CPU shows svm"
      check '[ "$(stat -f -c %T "$TMPDIR")" = tmpfs ]' "\$TMPDIR ($TMPDIR) is a tmpfs"
      check '[ -z "${NOT_PASSED_BY_RIG:-}" ]' "unlisted variables are not passed"
    else
      check 'grep -qwE "svm|vmx" /proc/cpuinfo' "the CPU shows svm or vmx"
    fi
    check '[ "$PWD" = "$KVMINI_SELFTEST_CWD" ]' "same working directory as the caller"
    want='it'"'"'s $HOME and "quotes"'
    check '[ "${KVMINI_SELFTEST_QUOTED:-}" = "$want" ]' "KVMINI_* passed, quoting intact"
    check '[ "${SET_BY_FLAG:-}" = given ]' "--env NAME=VALUE sets NAME"
    check '[ -z "${EXTRA_BY_FLAG+x}" ]' "--env NAME of an unset NAME leaves it unset"
    check 'mkfifo "$TMPDIR/fifo-$$" && rm "$TMPDIR/fifo-$$"' "a FIFO can be made in \$TMPDIR"
    check 'python3 -c "import os, socket; s = socket.socket(socket.AF_UNIX); s.bind(os.environ[\"TMPDIR\"] + \"/sock-$$\")" && rm "$TMPDIR/sock-$$"' \
      "a unix socket can be bound in \$TMPDIR"
    check 'echo "written inside" > "$work/written-inside.txt"' "write a file under the build tree"
    # Bulk writes through 9p: with the default cache=loose the kernel
    # writes pages back one by one at sync, the slow part.
    start=$(date +%s.%N)
    check 'dd if=/dev/zero of="$work/throughput.bin" bs=1M count=8 status=none && sync' \
      "write 8 MiB under the build tree and sync"
    end=$(date +%s.%N)
    rate=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", 8 / (e - s) }')
    echo "rig-selftest: writing under the build tree (dd + sync): $rate MiB/s"
    # The floor catches a broken set-up (a tiny msize, a write path gone
    # synchronous per byte), not a slow day: a 2-core machine with load 19
    # still gave 0.34 MiB/s.
    check "awk -v r=$rate 'BEGIN { exit !(r >= 0.1) }'" "writes through 9p reach at least 0.1 MiB/s"
    rm -f "$work/throughput.bin"
    # ctest as scripts/test.sh runs it inside: reads a build tree, writes
    # its logs and the tests' files into it.
    mkdir -p "$work/ctest"
    cat > "$work/ctest/CTestTestfile.cmake" <<EOF
add_test(kvm_device "/bin/sh" "-c" "test -c /dev/kvm")
add_test(writes_build_tree "/bin/sh" "-c" "echo from-ctest > '$work/ctest/from-ctest.txt'")
EOF
    check 'ctest --test-dir "$work/ctest" --output-on-failure' "ctest runs inside"
    exit "$bad"
    ;;

  direct)
    # Inside the outer machine /dev/kvm is AMD-V, so a rig started there
    # takes the direct path: that is where the direct path is tested on a
    # host without hardware virtualization. On a host with it, this case
    # runs the probe directly.
    "$RIG" -- "$0" direct-probe "$work/probe" > "$work/out" 2> "$work/err"
    status=$?
    cat "$work/out"
    show_overhead "$work/err"
    expect_status 0 "$status" "the direct-path probe"
    ;;

  direct-probe)
    "$RIG" --direct --verbose -- sh -c 'exit 5' 2> "$work/err"
    expect_status 5 $? "sh -c 'exit 5' run directly"
    expect_in "$work/err" "mode direct: " "direct mode chosen for svm/vmx and /dev/kvm"

    SEEN_WHEN_DIRECT=yes "$RIG" --direct -- sh -c '[ "$SEEN_WHEN_DIRECT" = yes ]'
    expect_status 0 $? "run directly, the command keeps the whole environment"

    "$RIG" --direct -- no-such-command-kvmini-rig 2> "$work/err"
    expect_status 127 $? "a command that does not exist, run directly"

    start_watched --direct --timeout 3 -- sleep 3600
    finish_watched
    cat "$work/err"
    expect_status "$RIG_FAILURE" "$status" "sleep past --timeout, run directly"
    expect_in "$work/err" "timeout: the overall limit of 3 s expired while the command was running" "timeout message"
    # Only the processes: the job folder in the cache is the outer run's.
    expect_no_leftovers "$work/no-cache"
    ;;

  timeout)
    # Long enough for the outer machine to boot first, so the sleep itself
    # is what the timeout stops.
    limit=${KVMINI_SELFTEST_TIMEOUT:-60}
    cache=$(private_cache) || exit 1
    began=$(date +%s)
    start_watched --cache "$cache" --timeout "$limit" -- sleep 3600
    finish_watched
    took=$(( $(date +%s) - began ))
    cat "$work/err"
    expect_status "$RIG_FAILURE" "$status" "sleep past --timeout"
    expect_in "$work/err" "timeout: the overall limit of $limit s expired while the command was running" "timeout message"
    [ "$took" -le $((limit + 20)) ] || fail "the rig took $took s to stop after a $limit s timeout"
    expect_no_leftovers "$cache"
    ;;

  frozen)
    # The outer machine's heartbeat stops (here: the command stops it, as a
    # frozen emulator would): the rig gives up well before --timeout.
    limit=15
    began=$(date +%s)
    KVMINI_RIG_HEARTBEAT_LIMIT=$limit start_watched --timeout 600 -- "$0" frozen-probe "$work/probe"
    finish_watched
    took=$(( $(date +%s) - began ))
    cat "$work/out" "$work/err"
    expect_status "$RIG_FAILURE" "$status" "a silent outer machine"
    expect_in "$work/err" "the outer machine stopped responding: no heartbeat for" "frozen message"
    expect_in "$work/err" "RIP=" "the outer vCPUs' registers from QEMU's monitor"
    [ "$took" -le 120 ] || fail "the rig took $took s to notice the missing heartbeat (limit $limit s)"
    expect_no_leftovers "$(default_cache)"
    ;;

  frozen-probe)
    # Inside: stop the heartbeat loop (the parent of its 'sleep 5'), then
    # idle far past the rig's heartbeat limit.
    stopped=0
    for status_file in /proc/[0-9]*/status; do
      pid=${status_file#/proc/}; pid=${pid%/status}
      [ "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" = "sleep 5 " ] || continue
      parent=$(awk '/^PPid:/ {print $2}' "$status_file")
      kill -STOP "$parent" && stopped=$((stopped + 1))
    done
    echo "stopped $stopped heartbeat loop(s)"
    [ "$stopped" -ge 1 ] || exit 3
    sleep 300
    ;;

  guest-tests)
    # run-guest-tests over a build tree of six guest-labelled tests: the
    # second resets the outer machine the first time it runs; the fourth
    # stops ctest itself the first time (as a half-frozen outer machine
    # would), so only the watchdog can end it; the third always fails; the
    # fifth fails only the first time, the sixth the first two times.
    # Expected: two rig failures, the second and fourth tests repeated in
    # fresh outer machines, the first never repeated; at the end the third,
    # fifth and sixth run again, the third and sixth once more after that
    # (two reruns by default): the third failed, the fifth and sixth passed
    # and listed as FLAKY.
    mkdir -p "$work/tree"
    cat > "$work/tree/CTestTestfile.cmake" <<EOF
add_test(first "/bin/sh" "-c" "echo run >> '$work/first.runs'")
add_test(second "/bin/sh" "-c" "echo run >> '$work/second.runs'; if [ ! -e '$work/reset-done' ]; then touch '$work/reset-done'; sync; sleep 1; echo b > /proc/sysrq-trigger; sleep 60; fi")
add_test(third "/bin/sh" "-c" "echo run >> '$work/third.runs'; exit 1")
add_test(fourth "/bin/sh" "-c" "echo run >> '$work/fourth.runs'; if [ ! -e '$work/stop-done' ]; then touch '$work/stop-done'; sync; kill -STOP \$PPID; sleep 120; fi")
add_test(fifth "/bin/sh" "-c" "echo run >> '$work/fifth.runs'; [ -e '$work/fifth-failed' ] || { touch '$work/fifth-failed'; exit 1; }")
add_test(sixth "/bin/sh" "-c" "echo run >> '$work/sixth.runs'; [ \$(wc -l < '$work/sixth.runs') -ge 3 ]")
set_tests_properties(first second third fourth fifth sixth PROPERTIES LABELS guest TIMEOUT 5)
EOF
    KVMINI_GUEST_TESTS_WATCHDOG_MARGIN=10 "$(dirname "$RIG")/run-guest-tests" "$work/tree" > "$work/out" 2>&1
    status=$?
    cat "$work/out"
    expect_status 1 "$status" "run-guest-tests with one failing test"
    expect_in "$work/out" "83% tests passed, 1 tests failed out of 6" "summary line"
    expect_in "$work/out" "rig failures (2): during second in outer machine 1; during fourth in outer machine 2" \
      "rig failure list"
    expect_in "$work/out" "watchdog: ctest inside has not ended fourth" "watchdog message"
    expect_in "$work/out" "FAILED: third: Failed, and again: Failed, and again: Failed" \
      "the failing test named"
    expect_in "$work/out" "FLAKY (2; failed, then passed in a fresh outer machine" "flaky list"
    expect_in "$work/out" "investigate): fifth sixth" "the flaky tests named"
    for name in first:1 second:2 third:3 fourth:2 fifth:2 sixth:3; do
      runs=$(wc -l < "$work/${name%:*}.runs")
      [ "$runs" -eq "${name#*:}" ] || fail "test ${name%:*} ran $runs times, expected ${name#*:}"
    done
    ;;

  interrupt)
    # SIGTERM and SIGINT while the outer machine boots: everything stops,
    # the status says which signal.
    cache=$(private_cache) || exit 1
    for signal in TERM INT; do
      start_watched --cache "$cache" -- sleep 3600
      wait_for_child "qemu-system|sleep 3600"
      sleep 2
      kill -s "$signal" "$rig_pid"
      finish_watched
      cat "$work/err"
      expect_status $((128 + $(kill -l "$signal"))) "$status" "SIG$signal to the rig"
      expect_in "$work/err" "interrupted by SIG$signal" "interrupt message"
      expect_no_leftovers "$cache"
    done
    ;;

  cache)
    # A fresh cache: two concurrent --prepare build one entry (the other
    # waits), then two runs in a row reuse it.
    cache="$work/cache"
    "$RIG" --cache "$cache" --prepare 2> "$work/prepare1" &
    first=$!
    "$RIG" --cache "$cache" --prepare 2> "$work/prepare2"
    second_status=$?
    wait "$first"
    first_status=$?
    cat "$work/prepare1" "$work/prepare2"
    expect_status 0 "$first_status" "first concurrent --prepare"
    expect_status 0 "$second_status" "second concurrent --prepare"
    builds=$(cat "$work/prepare1" "$work/prepare2" | grep -c "outer machine image built")
    [ "$builds" -eq 1 ] || fail "$builds concurrent runs built the cache entry, expected exactly 1"
    entries=$(ls -d "$cache"/linux-image-* | wc -l)
    [ "$entries" -eq 1 ] || fail "$entries cache entries, expected 1"
    for run in 1 2; do
      start_watched --cache "$cache" -- sh -c "exit $((run + 2))"
      finish_watched
      show_overhead "$work/err"
      expect_status $((run + 2)) "$status" "run $run in a row"
      if grep -q "building" "$work/err"; then cat "$work/err"; fail "run $run rebuilt the cache"; fi
      expect_no_leftovers "$cache"
    done
    ;;

  offline)
    # An older entry to fall back on: a copy of the default cache's entry
    # under an older kernel's name (same recipe).
    "$RIG" --prepare 2> "$work/err" || { cat "$work/err"; fail "cannot fill the default cache"; }
    entry=$(ls -d "$(default_cache)"/linux-image-* | head -n 1)
    mkdir -p "$work/older"
    cp -r "$entry" "$work/older/linux-image-0.0.0-0-amd64_0-busybox_0-${entry##*-}"

    # No route to the Debian mirror from here on.
    export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
    start_watched --cache "$work/empty" --prepare
    finish_watched
    cat "$work/err"
    expect_status "$RIG_FAILURE" "$status" "--prepare without network and an empty cache"
    expect_in "$work/err" "cannot download the outer machine's kernel" "offline message"
    expect_no_leftovers "$work/empty"

    "$RIG" --cache "$work/older" --prepare 2> "$work/err"
    status=$?
    cat "$work/err"
    expect_status 0 "$status" "--prepare without network and an older entry"
    expect_in "$work/err" "reusing the older cached kernel" "fallback warning"
    ;;

  errors)
    "$RIG" --outer -- no-such-command-kvmini-rig 2> "$work/err"
    expect_status 127 $? "a command that does not exist"
    expect_in "$work/err" "command not found: no-such-command-kvmini-rig" "not-found message"

    KVMINI_RIG_QEMU=/nonexistent/qemu-system-x86_64 "$RIG" --outer -- true 2> "$work/err"
    expect_status "$RIG_FAILURE" $? "no qemu"
    expect_in "$work/err" "apt-get install qemu-system-x86" "no-qemu message"

    "$RIG" --no-such-option true 2> "$work/err"
    expect_status "$RIG_FAILURE" $? "an unknown option"
    expect_in "$work/err" "unknown option --no-such-option" "usage message"

    "$RIG" --timeout soon true 2> "$work/err"
    expect_status "$RIG_FAILURE" $? "a bad --timeout"
    expect_in "$work/err" "--timeout wants a number" "bad timeout message"
    ;;

  *)
    fail "unknown case"
    ;;
esac
echo "PASS ($case_name)"

#!/usr/bin/env bash
# bench/fuzz.sh [SECONDS] [TARGET...]: the long fuzzing run. Builds the
# libFuzzer targets (clang, ASan+UBSan, as scripts/test.sh does) if needed,
# replays each target's regression inputs, fuzzes it for SECONDS (default
# 300) from its seeds plus the corpus kept from earlier runs, and prints a
# table: executions, executions per second, libFuzzer's final coverage
# figures (cov: edges, ft: features), corpus size, peak RSS and findings
# (crash/leak/timeout/oom artifacts, which stay in the findings directory
# for turning into regression inputs).
#
# Environment: KVMINI_FUZZ_BUILD (build directory, default build/asan, the
# one scripts/test.sh uses), KVMINI_FUZZ_JOBS (targets run at once,
# default 1), KVMINI_JOBS (build parallelism).
set -uo pipefail
source "$(dirname "$0")/../scripts/setup.sh"
cd "$KVMINI_ROOT"

seconds=${1:-300}
[ $# -gt 0 ] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: bench/fuzz.sh [SECONDS] [TARGET...] (SECONDS a positive integer, not '$seconds')" >&2
  exit 2
fi
build=${KVMINI_FUZZ_BUILD:-build/asan}
jobs=${KVMINI_FUZZ_JOBS:-1}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for dir in tests/fuzz/*/; do
    name=$(basename "$dir")
    [ -f "$dir/CMakeLists.txt" ] && [ -d "$dir/seeds" ] && targets+=("$name")
  done
fi
for name in "${targets[@]}"; do
  if [ ! -d "tests/fuzz/$name/seeds" ]; then
    echo "bench/fuzz.sh: no fuzz target '$name' (tests/fuzz/$name/seeds is missing)" >&2
    exit 2
  fi
done

kvmini_build "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
  "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" -DKVMINI_SANITIZE=address \
  -DKVMINI_BUILD_FUZZERS=ON -- "${targets[@]/#/fuzz_}" || { echo "build failed" >&2; exit 1; }

out="$KVMINI_ROOT/$build/fuzz-bench"
mkdir -p "$out"

# run_target NAME: writes $out/NAME.log and $out/NAME.result (one table row).
run_target() {
  local name=$1
  local binary="$KVMINI_ROOT/$build/tests/fuzz/$name/fuzz_$name"
  local corpus="$out/corpus/$name" findings="$out/findings/$name" log="$out/$name.log"
  mkdir -p "$corpus" "$findings"
  local regressions=("tests/fuzz/$name/regressions"/*) status=0 replay=ok
  if [ -e "${regressions[0]}" ]; then
    "$binary" -runs=1 "${regressions[@]}" >"$out/$name.replay.log" 2>&1 || replay=FAILED
  fi
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$findings/" "$corpus" "tests/fuzz/$name/seeds" >"$log" 2>&1 || status=$?
  local runs rate final cov ft corp rss found
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
  final=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$final")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$final")
  corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$final")
  found=$(find "$findings" -type f | wc -l)
  local verdict="none"
  [ "$found" -gt 0 ] && verdict="$found artifact(s) in $findings"
  [ "$status" -ne 0 ] && [ "$found" -eq 0 ] && verdict="exit $status, see $log"
  [ "$replay" != ok ] && verdict="regressions FAILED ($out/$name.replay.log); $verdict"
  printf '| %s | %s | %s | %s | %s | %s | %s | %s MB | %s |\n' "$name" "$seconds" "${runs:-?}" \
    "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "${rss:-?}" "$verdict" >"$out/$name.result"
}

kvmini_say "fuzzing ${#targets[@]} targets for ${seconds} s each, $jobs at a time (logs in $out)"
running=0
for name in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  echo "fuzzing $name" >&2
  run_target "$name" &
  running=$((running + 1))
done
wait

echo
echo "| target | seconds | executions | exec/s | cov | ft | corpus | peak RSS | findings |"
echo "|---|---|---|---|---|---|---|---|---|"
failed=0
for name in "${targets[@]}"; do
  cat "$out/$name.result"
  grep -q '| none |$' "$out/$name.result" || failed=1
done
exit "$failed"

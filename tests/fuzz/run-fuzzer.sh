#!/usr/bin/env bash
# run-fuzzer.sh BINARY TARGET_DIR WORK_CORPUS SECONDS
# Replays TARGET_DIR/regressions (every input must pass), then fuzzes for
# SECONDS starting from TARGET_DIR/seeds, writing new inputs to WORK_CORPUS
# (never into the source tree). Fails on any crash, leak, timeout or
# sanitizer report.
set -euo pipefail
binary=$1 target_dir=$2 corpus=$3 seconds=$4
mkdir -p "$corpus"
artifacts=$(mktemp -d)
trap 'rm -rf "$artifacts"' EXIT

shopt -s nullglob
regressions=("$target_dir"/regressions/*)
if [ ${#regressions[@]} -gt 0 ]; then
  echo "replaying ${#regressions[@]} regression inputs"
  "$binary" -runs=1 "${regressions[@]}"
fi
"$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$corpus" "$target_dir/seeds"

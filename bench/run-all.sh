#!/usr/bin/env bash
# Runs every benchmark of the project in one go and writes the performance
# picture: PERFORMANCE.md (tables with min/median/max and ratios measured in
# the same run) and gnuplot PNGs under img/.
#
#   bench/run-all.sh [--quick] [--build DIR] [--out DIR] [--rig | --no-rig]
#                    [--image-dir DIR] [--no-build] [--rig-lock-wait SECONDS]
#
# Host-process benchmarks (real figures for this machine): util_bench (event
# loop vs the eventfd floor), block_bench vs fio (bench/block/compare-fio.sh),
# device_bench blk and scsi vs fio, vmm_startup_bench (start-up and RSS), and
# the hot-stop benchmark when bench/hotstop has built one. Then, in ONE boot of
# the rig's outer machine under the team's lock /tmp/kvmini-rig.lock:
# bench/vmm/boot_compare.py and bench/guest_fio_compare.py, kvmini against
# QEMU microvm (figures only meaningful as ratios). If the lock stays taken
# for --rig-lock-wait seconds (default 1800), the rig part is reported as not
# measured. A nested guest that hangs or dies in the rig (the emulator's
# doing, now and then) is killed and that boot redone, a few times at most;
# if the outer machine itself freezes or dies, a fresh one runs the parts
# not done (guest fio keeps its complete repetitions). The report says which
# and why.
#
# Full run (default): under 20 min on 2 cores besides the wait for the rig
# lock (the report gives each part's duration); writes docs/PERFORMANCE.md
# and docs/img/*.png unless --out says otherwise. --quick: a smoke run of
# about a minute with short measurements, no rig unless --rig, into a scratch
# folder (printed) unless --out is given. Raw figures and logs go to OUT/raw (for
# --out docs: BUILD/bench-results). Exits non-zero when a benchmark failed
# (the report then says which one and why).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/normal
out=
quick=0
rig=default
build_targets=1
image_dir=
lock_wait=1800

usage() {
  sed -n '2,/^set -uo/p' "$0" | sed -e '/^set -uo/d' -e 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --build) build=${2:?--build needs a folder}; shift ;;
    --out) out=${2:?--out needs a folder}; shift ;;
    --rig) rig=yes ;;
    --no-rig) rig=no ;;
    --image-dir) image_dir=${2:?--image-dir needs a folder}; shift ;;
    --no-build) build_targets=0 ;;
    --rig-lock-wait) lock_wait=${2:?--rig-lock-wait needs seconds}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "run-all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
build=$(cd "$build" 2>/dev/null && pwd) ||
  { echo "run-all.sh: no build folder (configure one: cmake -S . -B build/normal -G Ninja)" >&2; exit 2; }
[ "$rig" = default ] && { [ "$quick" = 1 ] && rig=no || rig=yes; }
if [ -z "$out" ]; then
  if [ "$quick" = 1 ]; then out=$(mktemp -d /tmp/kvmini-bench-quick.XXXXXX); else out=$root/docs; fi
fi
mkdir -p "$out" && out=$(cd "$out" && pwd)
if [ "$out" = "$root/docs" ]; then raw=$build/bench-results; else raw=$out/raw; fi
rm -rf "$raw" && mkdir -p "$raw" || exit 1
[ -n "$image_dir" ] || image_dir=$(sed -n 's/^KVMINI_GUEST_IMAGE_DIR:[A-Z]*=//p' "$build/CMakeCache.txt" 2>/dev/null)
[ -n "$image_dir" ] || image_dir=$root/build/guest

cd "$root" || exit 1
say() { echo "run-all.sh: $*" >&2; }
say "report in $out, raw figures in $raw ($([ "$quick" = 1 ] && echo quick || echo full) run)"

# Sizes: the full run gives every comparison at least 5 repetitions; the
# quick one only proves that every figure is produced.
if [ "$quick" = 1 ]; then
  util_args=(--benchmark_repetitions=2 --benchmark_min_time=0.05)
  block_env=(KVMINI_BENCH_REPEAT=1 KVMINI_BENCH_SECONDS=0.3 KVMINI_BENCH_IMAGE_MIB=32)
  device_args=(--rounds 1 --seconds 1 --image-mib 32)
  startup_runs=5
  hotstop_args=(--rounds 100)
  boot_runs=1
  guest_fio_args=(--runs 1 --fio-seconds 1 --fio-ramp 0 --image-mib 32)
  rig_timeout=600
else
  util_args=(--benchmark_repetitions=5 --benchmark_min_time=0.5)
  block_env=(KVMINI_BENCH_REPEAT=5 KVMINI_BENCH_SECONDS=1 KVMINI_BENCH_IMAGE_MIB=256)
  device_args=(--rounds 5 --seconds 2 --image-mib 256)
  startup_runs=30
  hotstop_args=(--rounds 2000)
  boot_runs=5
  guest_fio_args=(--runs 5 --fio-seconds 2 --fio-ramp 1 --image-mib 128)
  # Normally about 13 min (outer machine, 10 boots to /init, 10 guest fio
  # boots); the rest is room for redone boots.
  rig_timeout=1200
fi
shm_image=/dev/shm/kvmini-run-all-$$.img
disk_image=$build/kvmini-run-all-$$.img
trap 'rm -f "$shm_image" "$disk_image"' EXIT
block_env+=(KVMINI_BENCH_SHM_IMAGE="$shm_image" KVMINI_BENCH_DISK_IMAGE="$disk_image"
  KVMINI_BENCH_JSON="$raw/block.json")

hotstop_bench=$build/bench/hotstop/hotstop_bench
targets=(util_bench block_bench device_bench vmm_startup_bench kvmini)
[ -f bench/hotstop/CMakeLists.txt ] && targets+=(hotstop_bench)
if [ "$build_targets" = 1 ]; then
  say "building ${targets[*]} in $build"
  ninja -C "$build" -j"${KVMINI_JOBS:-2}" "${targets[@]}" >"$raw/build.log" 2>&1 ||
    { tail -n 30 "$raw/build.log" >&2; say "build failed (log: $raw/build.log)"; exit 1; }
  printf 'build\t%s\n' "$SECONDS" >"$raw/durations.tsv"
fi

# The machine and the versions, for the report's header.
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  echo "cores=$(nproc)"
  echo "memory_gib=$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "qemu=$(qemu-system-x86_64 --version | head -n 1)"
  echo "fio=$(fio --version)"
  echo "compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt") $(c++ -dumpfullversion 2>/dev/null)"
  echo "build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (with local changes)')"
  echo "hardware_virtualization=$(grep -qwE 'svm|vmx' /proc/cpuinfo && echo yes || echo no)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "quick=$quick"
} >"$raw/env.txt"

# step NAME COMMAND...: runs one benchmark, output in raw/NAME.log; records
# the exact command, its status and its duration.
step() {
  local name=$1; shift
  local started=$SECONDS status
  say "$name: $*"
  printf '%s\t%s\n' "$name" "$*" >>"$raw/commands.tsv"
  "$@" >"$raw/$name.log" 2>&1
  status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - started))" >>"$raw/status.tsv"
  printf '%s\t%s\n' "$name" "$((SECONDS - started))" >>"$raw/durations.tsv"
  [ "$status" = 0 ] || { say "$name FAILED (status $status), last lines:"; tail -n 15 "$raw/$name.log" >&2; }
}

step util "$build/bench/util/util_bench" "${util_args[@]}" \
  --benchmark_out="$raw/util.json" --benchmark_out_format=json
step block env "${block_env[@]}" bench/block/compare-fio.sh "$build"
for device in blk scsi; do
  step "device-$device" "$build/bench/device/device_bench" --device "$device" "${device_args[@]}" \
    --json "$raw/device-$device.json"
done
if [ -e /dev/kvm ]; then
  step startup "$build/bench/vmm/vmm_startup_bench" --runs "$startup_runs" --json "$raw/startup.json"
else
  echo "skipped: start-up needs /dev/kvm, which this machine lacks" >"$raw/startup-skipped.txt"
fi
if [ -x "$hotstop_bench" ]; then
  mkdir -p "$raw/hotstop"
  step hotstop "$hotstop_bench" "${hotstop_args[@]}" --out "$raw/hotstop"
else
  echo "no hot-stop benchmark in this build ($hotstop_bench)" >"$raw/hotstop-missing.txt"
fi

# The rig: boot time and guest fio, kvmini vs QEMU, in one outer-machine
# boot, one rig at a time across the team.
if [ "$rig" = yes ]; then
  kvmini=$build/vmm/kvmini
  cloud=$image_dir/cloud
  rig_script=$raw/rig-job.sh
  rig_runner=$raw/rig-run.sh
  # A part whose status line says 0 is done: a second outer machine (below)
  # runs only the others. sync after each, as a frozen outer machine loses
  # what it has not written back over 9p.
  cat >"$rig_script" <<EOF
#!/bin/bash
# Written by bench/run-all.sh: runs inside the rig's outer machine.
echo "outer_kernel=\$(uname -r)" >"$raw/rig-env.txt"
echo "outer_cpus=\$(nproc)" >>"$raw/rig-env.txt"
echo "outer_cpu=\$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)" >>"$raw/rig-env.txt"
part_done() { grep -q "^\$1 0 " "$raw/rig-status.txt"; }
if ! part_done boot; then
  started=\$SECONDS
  bench/vmm/boot_compare.py --kvmini "$kvmini" --image-dir "$cloud" --runs $boot_runs >"$raw/boot.log" 2>&1
  echo "boot \$? \$((SECONDS - started))" >>"$raw/rig-status.txt"
  sync
fi
if ! part_done guest-fio; then
  started=\$SECONDS
  bench/guest_fio_compare.py --kvmini "$kvmini" --image-dir "$cloud" ${guest_fio_args[*]} --resume \\
    --json "$raw/guest-fio.json" >>"$raw/guest-fio.log" 2>&1
  echo "guest-fio \$? \$((SECONDS - started))" >>"$raw/rig-status.txt"
  sync
fi
EOF
  # Under the team's lock: the outer machine, and once more in a fresh one
  # when the rig itself failed (status 125: QEMU TCG now and then freezes
  # the whole outer machine) and at least 300 s of the rig's time are left.
  cat >"$rig_runner" <<EOF
#!/bin/bash
# Written by bench/run-all.sh: the rig part, run under /tmp/kvmini-rig.lock.
date +%s >"$raw/rig-lock.txt"
tests/rig/run-with-kvm --timeout $rig_timeout -- "$rig_script"
status=\$?
left=\$(($rig_timeout - SECONDS))
if [ "\$status" = 125 ] && [ "\$left" -ge 300 ]; then
  why=\$(grep -m 1 '^run-with-kvm: \\(error\\|timeout\\)' "$raw/rig.log" | cut -c15-300)
  echo "the rig failed after \$SECONDS s (status 125: \$why); the parts not done ran again" \\
    "in a fresh outer machine" >"$raw/rig-retry.txt"
  echo "run-all.sh: one more try in a fresh outer machine (\$left s left)"
  tests/rig/run-with-kvm --timeout "\$left" -- "$rig_script"
  status=\$?
fi
exit \$status
EOF
  chmod +x "$rig_script" "$rig_runner"
  : >"$raw/rig-status.txt"
  printf '%s\t%s\n' boot "bench/vmm/boot_compare.py --kvmini $kvmini --image-dir $cloud --runs $boot_runs" >>"$raw/commands.tsv"
  printf '%s\t%s\n' guest-fio "bench/guest_fio_compare.py --kvmini $kvmini --image-dir $cloud ${guest_fio_args[*]}" >>"$raw/commands.tsv"
  printf '%s\t%s\n' rig "flock /tmp/kvmini-rig.lock tests/rig/run-with-kvm --timeout $rig_timeout -- $rig_script (and once more in a fresh outer machine if the rig itself fails with 300 s of its limit left)" >>"$raw/commands.tsv"
  say "rig: waiting for /tmp/kvmini-rig.lock, then boot_compare.py and guest_fio_compare.py in one outer machine"
  lock_requested=$(date +%s)
  flock -E 200 -w "$lock_wait" /tmp/kvmini-rig.lock "$rig_runner" >"$raw/rig.log" 2>&1
  rig_status=$?
  lock_acquired=$(cat "$raw/rig-lock.txt" 2>/dev/null || echo "$lock_requested")
  echo "rig $rig_status $(($(date +%s) - lock_acquired)) $((lock_acquired - lock_requested))" >>"$raw/rig-status.txt"
  [ "$rig_status" = 200 ] && echo "the rig lock /tmp/kvmini-rig.lock stayed taken for $lock_wait s: $(
    ino=$(stat -c %i /tmp/kvmini-rig.lock); pid=$(awk -v i=":$ino" '$6 ~ i"$" && $2 == "FLOCK" { print $5; exit }' /proc/locks)
    [ -n "$pid" ] && echo "held by process $pid: $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | cut -c1-200)")" >"$raw/rig-lock-timeout.txt"
  [ "$rig_status" = 0 ] || { say "rig FAILED (status $rig_status), last lines:"; tail -n 15 "$raw/rig.log" >&2; }
  [ -f "$raw/rig-retry.txt" ] && say "rig: $(cat "$raw/rig-retry.txt")"
  [ "$rig_status" = 200 ] || for part in boot guest-fio; do
    status=$(awk -v p="$part" '$1 == p { status = $2 } END { print status }' "$raw/rig-status.txt" 2>/dev/null)
    [ "${status:-1}" = 0 ] || { say "$part FAILED inside the rig, last lines:"; tail -n 15 "$raw/$part.log" >&2 2>/dev/null; }
  done
else
  echo "skipped: the rig part (boot time and guest fio against QEMU) needs a boot of the outer machine; run without --quick, or with --rig" >"$raw/rig-skipped.txt"
fi
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw/env.txt"
# The whole run so far (build, host benchmarks, rig with its lock wait).
echo "run_seconds=$SECONDS" >>"$raw/env.txt"

python3 bench/plot/report.py --raw "$raw" --out "$out" --root "$root"

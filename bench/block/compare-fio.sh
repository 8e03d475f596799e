#!/usr/bin/env bash
# BlockBackend next to Debian's fio --ioengine=io_uring: the same files, the
# same block sizes, queue depths and patterns, run in the same session,
# alternating case by case so background load hits both alike. Prints IOPS
# and mean latency for both and the ratio ours/fio, and checks the targets
# of issue 5:
#   - QD32 IOPS at least 0.95 of fio's (fast path off);
#   - QD1 mean latency within 2 us of fio's (fast path off);
#   - QD1 mean latency on /dev/shm below 3 us with the fast path on.
#
# Each pair runs KVMINI_BENCH_REPEAT times (default 2), fio first every
# other time (our cases of a pair, too, swap order every other time).
# Three tables are printed: each side's best run (most IOPS: on
# a shared machine the figure least distorted by other load), each side's
# medians (what a typical run gets), and the paired view: the ratio and
# latency difference of each run's back-to-back pair, median over the runs
# (the host's disk switches between a slow and a fast mode for seconds at a
# time, and other load comes and goes: a pair mostly sees the same
# conditions, two medians need not). The targets are checked on all three.
# A reference row gives fio's plain synchronous reads (psync) at QD1 on /dev/shm, the floor
# an inline read cannot beat on this machine at this moment.
#
# Usage: bench/block/compare-fio.sh [BUILD_DIR]   (default build/normal)
# Environment: KVMINI_BENCH_SECONDS (per case, default 1.5), KVMINI_BENCH_REPEAT,
#   KVMINI_BENCH_POLL ("on", "off" or "both": our loop's adaptive polling,
#   default on; "both" runs each of our cases both ways, alternating, and
#   prints rows for each),
#   KVMINI_BENCH_SHM_IMAGE, KVMINI_BENCH_DISK_IMAGE, KVMINI_BENCH_IMAGE_MIB (256).
# The figures are kept as JSON in BUILD_DIR/block-bench-compare.json (or
# KVMINI_BENCH_JSON): each side's best run, and under "runs" every run.
# "our CPU/IO" is the process's CPU time per I/O, io_uring's kernel workers
# included (fio's own CPU figure leaves those out, so it is not shown).
set -euo pipefail

build=${1:-build/normal}
bench=$build/bench/block/block_bench
seconds=${KVMINI_BENCH_SECONDS:-1.5}
shm_image=${KVMINI_BENCH_SHM_IMAGE:-/dev/shm/kvmini-block-bench.img}
disk_image=${KVMINI_BENCH_DISK_IMAGE:-/var/tmp/kvmini-block-bench.img}
image_mib=${KVMINI_BENCH_IMAGE_MIB:-256}
repeat=${KVMINI_BENCH_REPEAT:-2}
case ${KVMINI_BENCH_POLL:-on} in
  on) polls="on" ;;
  off) polls="off" ;;
  both) polls="on off" ;;
  *) echo "compare-fio.sh: KVMINI_BENCH_POLL must be on, off or both" >&2; exit 1 ;;
esac
# fio truncates fractional seconds ("1.5" runs 1 s): give it milliseconds.
fio_runtime=$(awk -v s="$seconds" 'BEGIN { printf "%dms", s * 1000 }')

if [ ! -x "$bench" ]; then
  echo "compare-fio.sh: $bench not found; build it first (ninja -C $build block_bench)" >&2
  exit 1
fi
command -v fio >/dev/null || { echo "compare-fio.sh: fio is not installed (apt-get install fio)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# ours CASE RUN: one block_bench case per poll setting (the order alternates
# with RUN), JSON in $work/ours-<case>-<poll>-RUN.json.
ours() {
  local case=$1 run=$2 poll max_ns order=$polls
  if [ $((run % 2)) -eq 0 ]; then order=$(echo "$polls" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for poll in $order; do
    max_ns=""
    if [ "$poll" = off ]; then max_ns="--poll_max_ns=0"; fi
    "$bench" --shm_image="$shm_image" --disk_image="$disk_image" --image_mib="$image_mib" \
      --seconds="$seconds" --benchmark_filter="^${case}/" --benchmark_format=json $max_ns \
      >"$work/ours-${case//\//_}-$poll-$run.json"
  done
}

# fio_run NAME RUN FILE RW BS DEPTH DIRECT [ENGINE]: JSON in $work/fio-NAME-RUN.json.
fio_run() {
  local name=$1 run=$2 file=$3 rw=$4 bs=$5 depth=$6 direct=$7 engine=${8:-io_uring}
  fio --name=kvmini --filename="$file" --ioengine="$engine" --rw="$rw" --bs="$bs" \
    --iodepth="$depth" --direct="$direct" --size="${image_mib}m" --runtime="$fio_runtime" \
    --time_based --norandommap --randrepeat=0 --output-format=json \
    >"$work/fio-$name-$run.json"
}

# pair RUN OURS_CASES FIO_ARGS...: both sides, in an order that alternates
# with RUN, and our cases too: the second of two back-to-back cases ran
# 12-14% slower in medians than the first (randwrite QD32 on /dev/shm, fast
# path on after off) where a direct A/B found them equal.
pair() {
  local run=$1 cases=$2; shift 2
  local case
  if [ $((run % 2)) -eq 0 ]; then cases=$(echo "$cases" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  if [ $((run % 2)) -eq 1 ]; then fio_run "$1" "$run" "${@:2}"; fi
  for case in $cases; do ours "$case" "$run"; done
  if [ $((run % 2)) -eq 0 ]; then fio_run "$1" "$run" "${@:2}"; fi
}

echo "block_bench vs fio io_uring, ${seconds}s per case, $repeat runs each;" \
  "images $shm_image, $disk_image" >&2
# The first block_bench run creates the images (random content) if needed.
for workload in "randread_4k_qd1 randread 4k 1" "randread_4k_qd32 randread 4k 32" \
                "randwrite_4k_qd32 randwrite 4k 32" "seqread_128k_qd8 read 128k 8"; do
  read -r name rw bs depth <<<"$workload"
  echo "  $name" >&2
  for run in $(seq 1 "$repeat"); do
    pair "$run" "$name/shm/nowait:off $name/shm/nowait:on" \
      "${name}_shm" "$shm_image" "$rw" "$bs" "$depth" 0
    pair "$run" "$name/disk/direct" "${name}_disk" "$disk_image" "$rw" "$bs" "$depth" 1
  done
done
for run in $(seq 1 "$repeat"); do
  fio_run psync_floor "$run" "$shm_image" randread 4k 1 0 psync
done

python3 - "$work" "${KVMINI_BENCH_JSON:-$build/block-bench-compare.json}" $polls <<'EOF'
import glob, json, os, statistics, sys

work, keep, polls = sys.argv[1], sys.argv[2], sys.argv[3:]
ours, fio = {}, {}
runs = {"ours": {}, "fio": {}}

def keep_best(table, name, figures):
    runs["ours" if table is ours else "fio"].setdefault(name, []).append(figures)
    if name not in table or figures["iops"] > table[name]["iops"]:
        table[name] = figures

def run_number(path):
    return int(os.path.basename(path)[:-5].rsplit("-", 1)[1])

def with_poll(case, poll):
    return case if len(polls) == 1 else f"{case} poll:{poll}"

for path in glob.glob(os.path.join(work, "ours-*.json")):
    poll = os.path.basename(path)[:-5].rsplit("-", 2)[1]
    for run in json.load(open(path))["benchmarks"]:
        if run.get("error_occurred"):
            sys.exit(f"block_bench {run['name']}: {run.get('error_message')}")
        case = with_poll(run["name"].split("/iterations")[0], poll)
        keep_best(ours, case, {"iops": run["iops"], "lat_us": run["lat_mean_us"],
                               "cpu_us": run["cpu_us_per_io"], "run": run_number(path)})
for path in glob.glob(os.path.join(work, "fio-*.json")):
    name = os.path.basename(path)[4:-5].rsplit("-", 1)[0]
    job = json.load(open(path))["jobs"][0]
    side = job["write"] if job["write"]["io_bytes"] > 0 else job["read"]
    keep_best(fio, name, {"iops": side["iops"], "lat_us": side["lat_ns"]["mean"] / 1000,
                          "run": run_number(path)})
json.dump({"ours": ours, "fio": fio, "runs": runs}, open(keep, "w"), indent=1)

def median_of(side, name):
    entries = runs[side][name]
    return {key: statistics.median(entry[key] for entry in entries)
            for key in entries[0] if key != "run"}

def unpaired(ours_of, fio_of):
    def compare(case, fio_name):
        o, f = ours_of(case), fio_of(fio_name)
        return o, f, o["iops"] / f["iops"], o["lat_us"] - f["lat_us"]
    return compare

def paired(case, fio_name):
    """Medians of each side, and the medians of the runs' own ratios and differences."""
    fio_by_run = {entry["run"]: entry for entry in runs["fio"][fio_name]}
    pairs = [(entry, fio_by_run[entry["run"]]) for entry in runs["ours"][case]]
    ratio = statistics.median(o["iops"] / f["iops"] for o, f in pairs)
    diff = statistics.median(o["lat_us"] - f["lat_us"] for o, f in pairs)
    return median_of("ours", case), median_of("fio", fio_name), ratio, diff

def table(title, compare, fio_of):
    """Prints one table and returns the targets it misses."""
    print(title)
    print(f"{'case':43} {'ours IOPS':>10} {'ours lat':>9} {'fio IOPS':>10} {'fio lat':>9} "
          f"{'IOPS ratio':>10} {'lat diff':>9} {'our CPU/IO':>10}")
    failures = []
    for workload in ["randread_4k_qd1", "randread_4k_qd32", "randwrite_4k_qd32", "seqread_128k_qd8"]:
        for variant, fio_name, poll in [(v, f, p) for v, f in [
                ("shm/nowait:off", "shm"), ("shm/nowait:on", "shm"), ("disk/direct", "disk")]
                for p in polls]:
            case = with_poll(f"{workload}/{variant}", poll)
            o, f, ratio, diff = compare(case, f"{workload}_{fio_name}")
            print(f"{case:43} {o['iops']:10.0f} {o['lat_us']:8.2f}u {f['iops']:10.0f} "
                  f"{f['lat_us']:8.2f}u {ratio:10.3f} {diff:+8.2f}u {o['cpu_us']:9.2f}u")
            if "nowait:on" in case:
                if workload.endswith("qd1") and o["lat_us"] >= 3:
                    failures.append(f"{case}: QD1 latency {o['lat_us']:.2f} us, target < 3 us")
                continue
            if workload.endswith("qd32") and ratio < 0.95:
                failures.append(f"{case}: {ratio:.3f} of fio's IOPS, target >= 0.95")
            if workload.endswith("qd1") and diff > 2:
                failures.append(f"{case}: QD1 latency {diff:+.2f} us vs fio, target within 2 us")
    floor = fio_of("psync_floor")
    print(f"{'reference: fio psync randread 4k QD1 shm':54} {floor['iops']:10.0f} "
          f"{floor['lat_us']:8.2f}u")
    print()
    return failures

# The best run of each side is the one least disturbed by other load; the
# median says what a typical run gets; the pairs say how the two compare
# under the same conditions. On a shared machine they can differ a lot:
# read all three.
median_fio = lambda name: median_of("fio", name)
for title, compare, fio_of in [
        ("best run of each side (most IOPS):", unpaired(ours.__getitem__, fio.__getitem__),
         fio.__getitem__),
        ("median of each side's runs (each column separately):",
         unpaired(lambda name: median_of("ours", name), median_fio), median_fio),
        ("paired: each side's medians; ratio and lat diff are the medians of each run's "
         "own (ours next to the fio run beside it):", paired, median_fio)]:
    failures = table(title, compare, fio_of)
    if failures:
        print("targets missed:")
        for failure in failures:
            print("  " + failure)
    else:
        print("all targets met")
    print()
EOF

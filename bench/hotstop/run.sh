#!/bin/bash
# Runs hotstop_bench (dataplane stop/start latency in the device harness,
# idle and under load) and plots the distributions with gnuplot:
# bench/out/hotstop/*.dat and bench/out/hotstop/hotstop_latency.png.
# Without gnuplot the figures are still printed and the data written; the
# plot is skipped with a note.
#
#   bench/hotstop/run.sh BUILD_DIR [hotstop_bench options...]
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [hotstop_bench options...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/.." && pwd)/out/hotstop
bench=$build/bench/hotstop/hotstop_bench
[ -x "$bench" ] || { echo "run.sh: $bench is not built (ninja -C $build hotstop_bench)" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.dat
"$bench" --out "$out" "$@" | tee "$out/summary.txt"

if ! command -v gnuplot >/dev/null; then
	echo "run.sh: gnuplot is not installed; skipping the plot (data in $out)"
	exit 0
fi
plots=()
for load in idle qd; do
	for file in "$out"/*-"$load"*-stop.dat "$out"/*-"$load"*-start.dat; do
		[ -e "$file" ] || continue
		name=$(basename "$file" .dat)
		plots+=("'$file' using 1:2 with steps title '$name'")
	done
done
for file in "$out"/*-stop-minus-slowest-in-flight.dat; do
	[ -e "$file" ] && plots+=("'$file' using 1:2 with steps dashtype 2 title '$(basename "$file" .dat)'")
done
((${#plots[@]})) || { echo "run.sh: no data to plot"; exit 1; }
plot_list=$(IFS=,; echo "${plots[*]}")
gnuplot <<GNUPLOT
set terminal pngcairo size 1100,650 noenhanced
set output '$out/hotstop_latency.png'
set title 'dataplane stop / start latency (device harness; cumulative distribution)'
set xlabel 'microseconds'
set ylabel 'fraction of operations'
set logscale x
set key bottom right
set grid
plot $plot_list
GNUPLOT
echo "plot: $out/hotstop_latency.png"

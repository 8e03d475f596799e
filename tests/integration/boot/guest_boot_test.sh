#!/bin/bash
# One Linux boot under kvmini, checking one way the guest can end.
#   guest_boot_test.sh KVMINI IMAGE_DIR CASE
# IMAGE_DIR is a guest-images/build.sh output (vmlinuz, initrd-base.img).
# Cases:
#   boots-to-init  the kernel reaches /init (marker), `true` -> exit 0
#   two-cpus       --cpus 2: the guest counts 2 CPUs
#   exit-status    `sh -c "exit 7"` in the guest -> kvmini exits 7
#   poweroff       `poweroff -f` -> exit 0 (ACPI S5 through the power port)
#   reboot         `reboot -f` -> exit 0 (i8042 reset)
#   panic          a kernel panic (sysrq c) -> exit 1 with a message saying so
#   console-output 2 vCPUs; the command prints 200 numbered lines (5 KB, more
#                  than the kernel's 4 KiB UART buffer) and exits at once:
#                  every line reaches the console file, in order, and
#                  before /init's exit-status line
#   console-short  the same with `uname -a` (a few bytes left in the UART
#                  buffer when the command exits, as in scripts/quickstart.sh)
#   console-slow   console-output with 600 lines into a slow reader (a FIFO
#                  with a 4 KiB pipe buffer, 2.5 KB/s after the /init
#                  marker): the drains must wait for a slow consumer
#                  (kvmini's vCPU blocks in the write, so this does not make
#                  the old lost-tail race certain; QEMU's non-blocking UART
#                  back-end does)
# Needs /dev/kvm that can run Linux (hardware virtualization, or inside
# tests/rig/run-with-kvm); prints the console and kvmini's stderr on failure.
set -u

kvmini=$1
image_dir=$2
case_name=$3

fail() {
	echo "FAIL ($case_name): $*"
	if [ -n "${work:-}" ]; then
		echo "--- kvmini stderr:"; cat "$work/stderr" 2>/dev/null
		echo "--- guest console (last 60 lines):"; tail -n 60 "$work/console" 2>/dev/null
	fi
	exit 1
}

for file in vmlinuz initrd-base.img; do
	[ -r "$image_dir/$file" ] || fail "no $image_dir/$file: build it with guest-images/build.sh --flavour $(basename "$image_dir") $image_dir"
done
if ! grep -qwE 'svm|vmx' /proc/cpuinfo && [ -z "${KVMINI_RIG_INSIDE:-}" ]; then
	fail "this host's /dev/kvm has no hardware virtualization and cannot boot Linux: run through tests/rig/run-with-kvm"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kvmini-boot-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

cpus=1
expected_status=0
case "$case_name" in
boots-to-init) command='-- true' ;;
two-cpus) cpus=2; command='-- true' ;;
exit-status) command='-- sh -c "exit 7"'; expected_status=7 ;;
poweroff) command='-- poweroff -f' ;;
reboot) command='-- reboot -f' ;;
panic) command='-- sh -c "echo c > /proc/sysrq-trigger"'; expected_status=1 ;;
# The session leader (sh) exits right after the pipeline, with output still
# queued in the guest's tty: the case the console drain in /init is for.
console-output) cpus=2; command='-- sh -c "seq 1 200 | sed s/^/kvmini-console-line-/"' ;;
console-short) cpus=2; command='-- uname -a' ;;
console-slow) cpus=2; command='-- sh -c "seq 1 600 | sed s/^/kvmini-console-line-/"' ;;
*) echo "unknown case $case_name"; exit 2 ;;
esac

reader=
if [ "$case_name" = console-slow ]; then
	mkfifo "$work/console.fifo"
	# Fast until the /init marker (kernel messages are written by polling),
	# then 256 bytes per 100 ms.
	python3 -c '
import fcntl, os, sys
import time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.fcntl(fd, 1031, 4096)  # F_SETPIPE_SZ: no 64 KiB pipe to hide the stall
seen, slow = b"", False
with open(sys.argv[2], "wb") as out:
    while chunk := os.read(fd, 256):
        out.write(chunk)
        out.flush()
        if slow:
            time.sleep(0.1)
        else:
            seen = seen[-64:] + chunk
            slow = b"init ready" in seen
' "$work/console.fifo" "$work/console" &
	reader=$!
fi
serial_target=$work/console
[ -n "$reader" ] && serial_target=$work/console.fifo

start=$(date +%s.%N)
"$kvmini" --kernel "$image_dir/vmlinuz" --initrd "$image_dir/initrd-base.img" \
	--memory 256M --cpus "$cpus" --serial "file:$serial_target" \
	--append "$command" </dev/null 2>"$work/stderr"
status=$?
end=$(date +%s.%N)
if [ -n "$reader" ]; then
	# A kvmini that never opened the FIFO leaves the reader blocked in its
	# open: this open for writing releases it (and times out if it is gone).
	# shellcheck disable=SC2016 # $1 is the inner shell's
	timeout 2 sh -c ': >"$1"' sh "$work/console.fifo" 2>/dev/null
	wait "$reader"
fi
echo "kvmini exited with $status after $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s ($case_name, $(basename "$image_dir"))"

[ "$status" = "$expected_status" ] || fail "kvmini exited with $status, expected $expected_status"
grep -q 'kvmini-guest: init ready' "$work/console" || fail "the guest never printed the /init marker"

case "$case_name" in
two-cpus)
	grep -q 'kvmini-guest: kernel .*, 2 CPU(s)' "$work/console" || fail "the guest does not see 2 CPUs"
	;;
poweroff)
	grep -q 'guest powered off' "$work/stderr" || fail "kvmini did not report a power-off"
	grep -q 'kvmini-guest: exit status' "$work/console" && fail "init went on after poweroff -f"
	;;
reboot)
	grep -q 'guest rebooted' "$work/stderr" || fail "kvmini did not report a reboot"
	;;
panic)
	grep -q 'panicked' "$work/stderr" || fail "kvmini did not report the kernel panic"
	;;
console-output | console-slow)
	lines=200
	[ "$case_name" = console-slow ] && lines=600
	# Whole lines only: a kernel message may share a line with one of ours,
	# and would then show up as a missing number.
	seen=$(grep -oE 'kvmini-console-line-[0-9]+' "$work/console" | sed 's/^kvmini-console-line-//' | tr '\n' ' ')
	expected=$(seq 1 "$lines" | tr '\n' ' ')
	[ "$seen" = "$expected" ] || fail "console lines missing or out of order: got $(echo "$seen" | wc -w) of $lines, last: $(echo "$seen" | awk '{ print $NF }')"
	last_line=$(grep -n "kvmini-console-line-$lines" "$work/console" | cut -d: -f1)
	status_line=$(grep -n 'kvmini-guest: exit status 0' "$work/console" | cut -d: -f1)
	[ -n "$status_line" ] || fail "no 'kvmini-guest: exit status 0' line"
	[ "$last_line" -lt "$status_line" ] || fail "the command's output came after /init's exit-status line"
	;;
console-short)
	grep -qE '^Linux [^ ]+ [0-9]+\.[0-9]+.* x86_64' "$work/console" || fail "no 'uname -a' output on the console"
	grep -q 'kvmini-guest: exit status 0' "$work/console" || fail "no 'kvmini-guest: exit status 0' line"
	;;
esac
echo "PASS ($case_name)"

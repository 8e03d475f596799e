#!/bin/bash
# Self-check of a built guest image: boots it under QEMU (TCG, so it runs on
# any host) and checks the /init contract: the ready marker, every module
# loaded, fio/sg3-utils/util-linux blkdiscard/guest-exit working, the exit
# status reaching port 0xf4, and the interactive shell when no command is
# given. Usage: guest-images/check.sh IMAGEDIR (made by build.sh).
# Prints "N passed, M failed"; exits non-zero if any check fails.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 IMAGEDIR" >&2; exit 2; }
image_dir=$(cd "$1" && pwd)
for file in vmlinuz initrd.img manifest.txt; do
	[ -f "$image_dir/$file" ] || { echo "check.sh: $image_dir/$file is missing: build it with guest-images/build.sh" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "check.sh: qemu-system-x86_64 is missing (apt-get install qemu-system-x86)" >&2; exit 2; }
boot_timeout=${KVMINI_CHECK_TIMEOUT:-300}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
check() { # name, then a command that must succeed
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1)) && echo "ok   $name"
	else
		failed=$((failed + 1)) && echo "FAIL $name"
	fi
}
has_line() { grep -q -x -F -- "$2" "$1"; }
has_text() { grep -q -F -- "$2" "$1"; }
lacks_text() { ! grep -q -F -- "$2" "$1"; }

# A second cpio appended to the image adds the in-guest part of the check:
# the kernel unpacks concatenated archives one over the other.
mkdir -p "$work/overlay"
cat >"$work/overlay/guest-check" <<'EOF'
#!/bin/sh
for module in $(cat /etc/kvmini/modules); do
	name=$(basename "$module" .ko | tr - _)
	grep -q "^$name " /proc/modules && echo "loaded $name" || echo "NOT LOADED $name"
done
fio --version
fio --name=smoke --filename=/tmp/fio.dat --size=1M --bs=4k --rw=randwrite --ioengine=psync \
	--minimal >/dev/null && echo "fio ran a job"
sg_inq --version 2>&1 | head -n 1
blkdiscard -V
guest-exit --help >/dev/null 2>&1; echo "guest-exit usage status $?"
exit 7
EOF
chmod 755 "$work/overlay/guest-check"
(cd "$work/overlay" && echo guest-check | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$work/overlay.cpio"
# The kernel looks for an uncompressed archive after a compressed one only at a
# 4-byte-aligned offset, skipping zero bytes up to it.
cp "$image_dir/initrd.img" "$work/initrd.img"
truncate -s %4 "$work/initrd.img"
cat "$work/overlay.cpio" >>"$work/initrd.img"

qemu() { # stdin, then kernel command line
	timeout "$boot_timeout" qemu-system-x86_64 -M pc -accel tcg -cpu max -m 512 -nographic \
		-nodefaults -no-user-config -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-kernel "$image_dir/vmlinuz" -initrd "$work/initrd.img" -append "console=ttyS0 $1"
}

# 1. A command after " -- ": its status 7 leaves QEMU with (7 << 1) | 1.
start=$(date +%s.%N)
status=0
qemu '-- /guest-check' </dev/null >"$work/command.raw" 2>&1 || status=$?
tr -d '\r' <"$work/command.raw" >"$work/command.log"
seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
# Substring matches: kernel messages may share a line with the guest's output.
check "ready marker printed" has_text "$work/command.log" "kvmini-guest: init ready"
check "no module failed to load" lacks_text "$work/command.log" "module load failed"
while read -r module; do
	name=$(basename "$module" .ko | tr - _)
	check "module $name loaded" has_line "$work/command.log" "loaded $name"
done < <(sed -n 's/^modules //p' "$image_dir/manifest.txt" | tr ' ' '\n' | grep .)
check "fio runs (libraries resolve)" has_text "$work/command.log" "fio-3"
check "fio runs a job" has_line "$work/command.log" "fio ran a job"
check "sg_inq runs" has_text "$work/command.log" "Version string:"
check "blkdiscard is util-linux's" has_text "$work/command.log" "blkdiscard from util-linux"
check "guest-exit rejects bad usage" has_line "$work/command.log" "guest-exit usage status 2"
check "exit status line printed" has_text "$work/command.log" "kvmini-guest: exit status 7"
check "status 7 reaches port 0xf4 (QEMU exits 15, got $status)" test "$status" = 15
echo "boot to exit with a command: $seconds s"

# 2. No command: an interactive shell on the console; its exit status ends the VM.
mkfifo "$work/console-in"
{
	shell_status=0
	qemu '' <"$work/console-in" >"$work/shell.raw" 2>&1 || shell_status=$?
	echo "$shell_status" >"$work/shell.status"
} &
qemu_pipeline=$!
exec 8>"$work/console-in"
for _ in $(seq "$boot_timeout"); do
	grep -q "starting a shell" "$work/shell.raw" && break
	sleep 1
done
sleep 2 # let the shell reach its prompt
echo 'echo "shell says $((6 * 7))"; exit 5' >&8
wait "$qemu_pipeline" || true
exec 8>&-
tr -d '\r' <"$work/shell.raw" >"$work/shell.log"
check "shell starts without a command" has_text "$work/shell.log" "starting a shell"
check "shell runs typed commands" has_line "$work/shell.log" "shell says 42"
check "shell exit status ends the VM" has_text "$work/shell.log" "kvmini-guest: exit status 5"
check "status 5 reaches port 0xf4 (QEMU exits 11, got $(cat "$work/shell.status"))" test "$(cat "$work/shell.status")" = 11

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "logs: (kept in $work.logs)"; cp -r "$work" "$work.logs"; exit 1; }

#!/bin/bash
# Self-check of a built guest image: boots it under QEMU (TCG, so it runs on
# any host) and checks the /init contract: the ready marker, every module
# loaded, fio/sg3-utils/util-linux blkdiscard/guest-exit working, the exit
# status reaching port 0xf4 (initrd.img and initrd-base.img), and the
# interactive shell when no command is given. Usage: guest-images/check.sh IMAGEDIR (made by build.sh).
# Prints "N passed, M failed"; exits non-zero if any check fails.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 IMAGEDIR" >&2; exit 2; }
image_dir=$(cd "$1" && pwd)
for file in vmlinuz initrd.img initrd-base.img manifest.txt; do
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
if [ -e /usr/bin/fio ]; then
	fio --version
	fio --name=smoke --filename=/tmp/fio.dat --size=1M --bs=4k --rw=randwrite --ioengine=psync \
		--minimal >/dev/null && echo "fio ran a job"
else
	echo "image without fio"
fi
sg_inq --version 2>&1 | head -n 1
blkdiscard -V
guest-exit --help >/dev/null 2>&1; echo "guest-exit usage status $?"
exit 7
EOF
chmod 755 "$work/overlay/guest-check"
(cd "$work/overlay" && echo guest-check | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$work/overlay.cpio"

# Prints the path of a copy of the given initrd with the overlay appended.
with_overlay() {
	local copy=$work/${1##*/}
	cp "$1" "$copy"
	# The kernel looks for an archive that follows a compressed one only at
	# 4-byte-aligned offsets, skipping zero bytes up to it.
	truncate -s %4 "$copy"
	cat "$work/overlay.cpio" >>"$copy"
	echo "$copy"
}

qemu() { # stdin, then the initrd, then the kernel command line
	timeout "$boot_timeout" qemu-system-x86_64 -M pc -accel tcg -cpu max -m 512 -nographic \
		-nodefaults -no-user-config -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 \
		-kernel "$image_dir/vmlinuz" -initrd "$1" -append "console=ttyS0 $2"
}

# A command after " -- ": its status 7 leaves QEMU with (7 << 1) | 1.
check_command_boot() { # initrd, whether it has fio (yes/no)
	local name=${1##*/} log=$work/${1##*/}.log status=0 start seconds module
	start=$(date +%s.%N)
	qemu "$(with_overlay "$1")" '-- /guest-check' </dev/null >"$log.raw" 2>&1 || status=$?
	tr -d '\r' <"$log.raw" >"$log"
	seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	# Substring matches: kernel messages may share a line with the guest's output.
	check "$name: ready marker printed" has_text "$log" "kvmini-guest: init ready"
	check "$name: no module failed to load" lacks_text "$log" "module load failed"
	while read -r module; do
		module=$(basename "$module" .ko | tr - _)
		check "$name: module $module loaded" has_line "$log" "loaded $module"
	done < <(sed -n 's/^modules //p' "$image_dir/manifest.txt" | tr ' ' '\n' | grep .)
	if [ "$2" = yes ]; then
		check "$name: fio runs (libraries resolve)" has_text "$log" "fio-3"
		check "$name: fio runs a job" has_line "$log" "fio ran a job"
	else
		check "$name: has no fio" has_line "$log" "image without fio"
	fi
	check "$name: sg_inq runs" has_text "$log" "Version string:"
	check "$name: blkdiscard is util-linux's" has_text "$log" "blkdiscard from util-linux"
	check "$name: guest-exit rejects bad usage" has_line "$log" "guest-exit usage status 2"
	check "$name: exit status line printed" has_text "$log" "kvmini-guest: exit status 7"
	check "$name: status 7 reaches port 0xf4 (QEMU exits 15, got $status)" test "$status" = 15
	echo "$name: boot to exit with a command: $seconds s"
}

check_command_boot "$image_dir/initrd.img" yes
check_command_boot "$image_dir/initrd-base.img" no

# 2. No command: an interactive shell on the console; its exit status ends the VM.
mkfifo "$work/console-in"
{
	shell_status=0
	qemu "$image_dir/initrd-base.img" '' <"$work/console-in" >"$work/shell.raw" 2>&1 || shell_status=$?
	echo "$shell_status" >"$work/shell.status"
} &
qemu_pipeline=$!
exec 8>"$work/console-in"
for _ in $(seq "$boot_timeout"); do
	grep -q "starting a shell" "$work/shell.raw" && break
	sleep 1
done
sleep 2 # let the shell reach its prompt
# shellcheck disable=SC2016 # expanded by the guest's shell
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

#!/bin/bash
# Disks in a Debian guest under kvmini: one kvmini boot per case, the
# in-guest checks in guest/CASE.sh (appended to the initrd as a cpio), the
# host-side checks (images after the run, the control socket) here.
#   guest_disk_test.sh KVMINI KVMINI_CTL IMAGE_DIR CASE
# IMAGE_DIR is a guest-images/build.sh output (vmlinuz, initrd.img with fio,
# sg3-utils and blkdiscard). Cases:
#   blk      virtio-blk: size, serial, ro flag, fio verify with and without an
#            IOThread and with queues=2, writes to a read-only disk fail,
#            blkdiscard and fsync reach the image
#   scsi     virtio-scsi: size, sg_inq, sg_vpd -p bl / -p lbpv, sg_readcap -l,
#            sg_luns, sg_turs, fio verify with and without an IOThread,
#            blkdiscard reaches the image, a read-only disk refuses writes
#            (write protect in dmesg)
#   hotstop  fio verify on vda and sda, each on its own IOThread, while this
#            script does dataplane-stop/start and device-set-iothread through
#            kvmini-ctl and a few stop/cont pairs (the images must not change
#            while paused); no I/O errors; the counters add up; quit -> exit 0
# Images and the control socket live in $TMPDIR (tmpfs inside the rig).
# Needs /dev/kvm that can run Linux (inside tests/rig/run-with-kvm).
set -u

kvmini=$1
ctl=$2
image_dir=$3
case_name=$4
here=$(cd "$(dirname "$0")" && pwd)
kvmini_pid=

fail() {
	echo "FAIL ($case_name): $*"
	if [ -n "${work:-}" ]; then
		echo "--- kvmini stderr:"; cat "$work/stderr" 2>/dev/null
		echo "--- guest console (last 80 lines):"; tail -n 80 "$work/console" 2>/dev/null
		[ -s "$work/ops.log" ] && { echo "--- last control operations:"; tail -n 15 "$work/ops.log"; }
	fi
	exit 1
}

cleanup() {
	[ -n "$kvmini_pid" ] && kill -KILL "$kvmini_pid" 2>/dev/null
	[ -n "${work:-}" ] && rm -rf "$work"
}

for file in vmlinuz initrd.img; do
	[ -r "$image_dir/$file" ] || fail "no $image_dir/$file: build it with guest-images/build.sh $image_dir"
done
if ! grep -qwE 'svm|vmx' /proc/cpuinfo && [ -z "${KVMINI_RIG_INSIDE:-}" ]; then
	fail "this host's /dev/kvm has no hardware virtualization and cannot boot Linux: run through tests/rig/run-with-kvm"
fi
[ -r "$here/guest/$case_name.sh" ] || { echo "unknown case $case_name"; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kvmini-disk-test.XXXXXX")
trap cleanup EXIT

# The in-guest scripts, appended to a copy of the initrd: the kernel unpacks
# a plain cpio that follows the compressed one (at a 4-byte boundary).
mkdir -p "$work/overlay/kvmini-test"
cp "$here/guest/common.sh" "$here/guest/$case_name.sh" "$work/overlay/kvmini-test/"
chmod 755 "$work/overlay/kvmini-test/"*.sh
(cd "$work/overlay" && find kvmini-test | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$work/overlay.cpio"
cp "$image_dir/initrd.img" "$work/initrd.img"
truncate -s %4 "$work/initrd.img"
cat "$work/overlay.cpio" >>"$work/initrd.img"

image() { # NAME SIZE_MIB: a sparse image in $work
	truncate -s "$2M" "$work/$1.img"
	echo "$work/$1.img"
}

# Starts kvmini in the background with the case's disks; the guest runs
# /kvmini-test/CASE.sh. Extra words before " -- " become its environment.
start_kvmini() { # ENVIRONMENT_WORDS KVMINI_ARGS...
	local environment=$1
	shift
	start_time=$(date +%s.%N)
	"$kvmini" --kernel "$image_dir/vmlinuz" --initrd "$work/initrd.img" --memory 512M --cpus 2 \
		--serial "file:$work/console" --append "$environment -- /kvmini-test/$case_name.sh" \
		"$@" </dev/null 2>"$work/stderr" &
	kvmini_pid=$!
}

wait_kvmini() { # EXPECTED_STATUS
	wait "$kvmini_pid"
	local status=$?
	kvmini_pid=
	echo "kvmini exited with $status after $(awk -v a="$start_time" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
	grep -q 'kvmini-guest: init ready' "$work/console" || fail "the guest never reached /init"
	grep 'kvmini-test:' "$work/console" | tr -d '\r'
	grep -q 'kvmini-test: FAIL' "$work/console" && fail "checks failed in the guest (see above)"
	grep -q 'kvmini-test: all checks done' "$work/console" || fail "the guest's checks did not finish"
	[ "$status" = "$1" ] || fail "kvmini exited with $status, expected $1"
}

# Whether the image's bytes [OFFSET_MIB, +LENGTH_MIB) are all zero.
all_zero() { # IMAGE OFFSET_MIB LENGTH_MIB
	cmp -s -n $(($3 << 20)) <(tail -c +$((($2 << 20) + 1)) "$1") /dev/zero
}

case "$case_name" in
blk)
	vda=$(image vda 64)
	start_kvmini "" --iothread io0 \
		--blk "path=$vda,iothread=io0,serial=KVMINI-VDA" \
		--blk "path=$(image vdb 16),readonly=on,serial=KVMINI-RO" \
		--blk "path=$(image vdc 32),iothread=io0,queues=2,serial=KVMINI-MQ" \
		--blk "path=$(image vdd 32),serial=KVMINI-MAIN"
	wait_kvmini 0
	# The guest wrote a marker with fsync at 60 MiB, filled [40, 49) MiB and
	# discarded [40, 48) MiB.
	grep -q 'KVMINI-FSYNC-MARKER' <(tail -c +$(((60 << 20) + 1)) "$vda" | head -c 4096) ||
		fail "the fsync'ed marker is not in the image at 60 MiB"
	all_zero "$vda" 40 8 || fail "the discarded range [40, 48) MiB is not zero in the image"
	all_zero "$vda" 48 1 && fail "the range after the discard [48, 49) MiB lost its data"
	echo "host: marker and discard found in $vda"
	;;
scsi)
	sda=$(image sda 64)
	start_kvmini "" --iothread io0 \
		--scsi "path=$sda,iothread=io0,serial=KVMINI-SDA" \
		--scsi "path=$(image sdb 16),readonly=on,serial=KVMINI-SRO" \
		--scsi "path=$(image sdc 32),serial=KVMINI-SDC"
	wait_kvmini 0
	all_zero "$sda" 40 8 || fail "the discarded range [40, 48) MiB is not zero in the image"
	all_zero "$sda" 48 1 && fail "the range after the discard [48, 49) MiB lost its data"
	echo "host: discard found in $sda"
	;;
hotstop)
	. "$here/hotstop_host.sh"
	;;
esac
echo "PASS ($case_name)"

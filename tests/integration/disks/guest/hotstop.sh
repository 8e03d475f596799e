#!/bin/sh
# In-guest part of the hot-stop test (../hotstop_host.sh): fio verify on vda
# and sda at the same time, round after round until the host says stop,
# while the host moves their dataplanes and pauses the VM. Then the
# block-layer totals for the host to compare with query-devices, and a wait
# for the host's quit.
. /kvmini-test/common.sh

wait_for_disks 'vd*' 1
wait_for_disks 'sd*' 1
# The host writes this marker into vda at 60 MiB (fio stays below 8 MiB)
# once it has done its operations: then the current round is the last.
stop_marker_seen() {
	dd if=/dev/vda bs=4096 skip=15360 count=1 iflag=direct 2>/dev/null | grep -q KVMINI-STOP-FIO
}
uptime_s() { cut -d. -f1 /proc/uptime; }
start=$(uptime_s)
echo "kvmini-test: fio started"
rounds=0
while [ "$failures" = 0 ] && ! stop_marker_seen; do
	if [ $(($(uptime_s) - start)) -gt 900 ]; then
		fail "no stop marker from the host within 900 s"
		break
	fi
	rounds=$((rounds + 1))
	for disk in vda sda; do
		fio --name="$disk" --filename=/dev/$disk --ioengine=libaio --direct=1 --iodepth=16 \
			--rw=randwrite --bs=4k --size=8M --verify=crc32c --do_verify=1 --verify_fatal=1 \
			--randrepeat=0 >/tmp/fio-$disk.log 2>&1 &
		eval "pid_$disk=$!"
	done
	for disk in vda sda; do
		eval "wait \$pid_$disk" || fail "fio verify $disk, round $rounds: $(tail -n 8 /tmp/fio-$disk.log | tr '\n' '|')"
	done
done
[ "$failures" = 0 ] && ok "fio verify on vda and sda: $rounds rounds in $(($(uptime_s) - start)) s"
no_io_errors_in_dmesg
for disk in vda sda; do
	# /sys/block/X/stat: reads, merged, sectors, ticks, writes, merged, sectors, ticks, in flight
	set -- $(cat /sys/block/$disk/stat)
	echo "kvmini-test: stat $disk reads=$1 read_sectors=$3 writes=$5 write_sectors=$7 in_flight=$9"
done
echo "kvmini-test: all checks done ($failures failed)"
[ "$failures" = 0 ] || exit "$failures"
# The host reads the counters, then quits kvmini through the control socket.
sleep 600
fail "no quit from the host within 600 s"
exit 1

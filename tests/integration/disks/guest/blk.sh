#!/bin/sh
# In-guest virtio-blk checks; kvmini gives (see ../guest_disk_test.sh, case blk):
#   vda 64 MiB, IOThread, serial KVMINI-VDA     vdb 16 MiB, read-only, KVMINI-RO
#   vdc 32 MiB, IOThread, queues=2, KVMINI-MQ   vdd 32 MiB, main loop, KVMINI-MAIN
. /kvmini-test/common.sh

wait_for_disks 'vd*' 4
# The DSDT lists the --blk disks in command-line order: vda is the first.
expect_eq "vda serial" "$(cat /sys/block/vda/serial)" KVMINI-VDA
expect_eq "vdb serial" "$(cat /sys/block/vdb/serial)" KVMINI-RO
expect_eq "vdc serial" "$(cat /sys/block/vdc/serial)" KVMINI-MQ
expect_eq "vdd serial" "$(cat /sys/block/vdd/serial)" KVMINI-MAIN
expect_eq "vda size (sectors)" "$(cat /sys/block/vda/size)" 131072
expect_eq "vdb size (sectors)" "$(cat /sys/block/vdb/size)" 32768
expect_eq "vda read-only flag" "$(cat /sys/block/vda/ro)" 0
expect_eq "vdb read-only flag" "$(cat /sys/block/vdb/ro)" 1
expect_eq "vda queues" "$(ls /sys/block/vda/mq | wc -l)" 1
expect_eq "vdc queues" "$(ls /sys/block/vdc/mq | wc -l)" 2
expect_eq "vda logical block size" "$(cat /sys/block/vda/queue/logical_block_size)" 512

fio_verify "fio verify vda (IOThread)" /dev/vda
# Two jobs on the two CPUs, so both queues carry requests.
fio_verify "fio verify vdc (IOThread, 2 queues)" /dev/vdc --numjobs=2 --offset_increment=8M \
	--cpus_allowed=0-1 --cpus_allowed_policy=split
fio_verify "fio verify vdd (main loop)" /dev/vdd

check_fails "write to read-only vdb" dd if=/dev/zero of=/dev/vdb bs=4096 count=1
check "read from read-only vdb" dd if=/dev/vdb of=/dev/null bs=4096 count=16 iflag=direct

# Discard and flush must reach the image (the host checks it afterwards).
expect_match "vda offers discard" "$(cat /sys/block/vda/queue/discard_max_bytes)" '^[1-9]'
check "fill [40, 49) MiB of vda" sh -c \
	'yes KVMINI-DATA | head -c 9437184 | dd of=/dev/vda bs=1M seek=40 iflag=fullblock conv=fsync'
check "blkdiscard [40, 48) MiB of vda" blkdiscard -o 41943040 -l 8388608 /dev/vda
expect_eq "non-zero bytes read back from the discarded range" \
	"$(dd if=/dev/vda bs=1M skip=40 count=8 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)" 0
check "marker at 60 MiB with fsync" sh -c \
	'printf KVMINI-FSYNC-MARKER | dd of=/dev/vda bs=512 seek=122880 conv=sync,fsync'

no_io_errors_in_dmesg
finish

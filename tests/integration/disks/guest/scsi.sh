#!/bin/sh
# In-guest virtio-scsi checks; kvmini gives (see ../guest_disk_test.sh, case
# scsi) three controllers, one disk each, found here by serial (the SCSI scan
# is asynchronous, so sdX names may come in any order):
#   KVMINI-SDA 64 MiB, IOThread   KVMINI-SRO 16 MiB, read-only   KVMINI-SDC 32 MiB, main loop
. /kvmini-test/common.sh

disk_with_serial() { # SERIAL -> /dev/sdX
	for path in /sys/block/sd*; do
		serial=$(sg_vpd -p sn "/dev/${path##*/}" 2>/dev/null | sed -n 's/^ *Unit serial number: *//p')
		[ "$serial" = "$1" ] && { echo "/dev/${path##*/}"; return 0; }
	done
	echo "/dev/no-disk-with-serial-$1"
}

wait_for_disks 'sd*' 3
sda=$(disk_with_serial KVMINI-SDA)
sdb=$(disk_with_serial KVMINI-SRO)
sdc=$(disk_with_serial KVMINI-SDC)
echo "kvmini-test: disks $sda $sdb $sdc"
expect_eq "KVMINI-SDA size (sectors)" "$(cat /sys/block/${sda#/dev/}/size)" 131072
expect_eq "KVMINI-SRO read-only flag" "$(cat /sys/block/${sdb#/dev/}/ro)" 1

check "sg_inq" sg_inq "$sda"
expect_match "sg_inq vendor" "$out" 'Vendor identification: KVMINI'
expect_match "sg_inq product" "$out" 'Product identification: KVMINI DISK'
check "sg_vpd -p bl" sg_vpd -p bl "$sda"
echo "$out" | sed 's/^/  /'
expect_match "block limits: maximum transfer length" "$out" 'Maximum transfer length: 16384 blocks'
expect_match "block limits: maximum unmap LBA count" "$out" 'Maximum unmap LBA count: 2097152'
check "sg_vpd -p lbpv" sg_vpd -p lbpv "$sda"
expect_match "provisioning: UNMAP supported" "$out" 'Unmap command supported \(LBPU\): 1'
check "sg_readcap -l" sg_readcap -l "$sda"
echo "$out" | sed 's/^/  /'
expect_match "capacity: last LBA" "$out" 'Last (LBA|logical block address)=131071'
expect_match "capacity: block length" "$out" 'Logical block length=512 bytes'
expect_match "capacity: provisioning enabled" "$out" 'lbpme=1'
check "sg_luns" sg_luns "$sda"
expect_match "LUN 0 reported" "$out" '^ +0000000000000000'
check "sg_turs" sg_turs "$sda"

fio_verify "fio verify KVMINI-SDA (IOThread)" "$sda"
fio_verify "fio verify KVMINI-SDC (main loop)" "$sdc"

check "fill [40, 49) MiB of KVMINI-SDA" sh -c \
	"yes KVMINI-DATA | head -c 9437184 | dd of=$sda bs=1M seek=40 iflag=fullblock conv=fsync"
check "blkdiscard [40, 48) MiB of KVMINI-SDA" blkdiscard -o 41943040 -l 8388608 "$sda"
check "sync after discard" sync

check_fails "write to read-only KVMINI-SRO" dd if=/dev/zero of="$sdb" bs=4096 count=1
# WRITE(10) of one block, past the kernel's own read-only check (the device
# is opened read-only; root may send any command through SG_IO).
out=$(sg_raw -R -s 512 -i /dev/zero "$sdb" 2a 00 00 00 00 00 00 00 01 00 2>&1)
echo "$out" | sed 's/^/  sg_raw: /'
expect_match "WRITE(10) to read-only disk: DATA PROTECT" "$out" '[Dd]ata [Pp]rotect'
expect_match "WRITE(10) to read-only disk: write protected" "$out" '[Ww]rite protected'
expect_match "dmesg: write protect on the read-only disk" "$(dmesg)" \
	"\\[${sdb#/dev/}\\] Write Protect is on"

no_io_errors_in_dmesg
finish

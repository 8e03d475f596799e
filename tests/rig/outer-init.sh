#!/bin/busybox sh
# /init of the rig's outer machine (packed into its initramfs by
# outer_image.py): loads the modules for 9p and kvm_amd, mounts the host's
# root filesystem from the 9p share, chroots into it and runs the job that
# run-with-kvm wrote, then powers off.
#
# Channels: /dev/console (ttyS0) carries kernel messages and our markers
# "<nonce> READY <uptime>", "<nonce> EXIT rc=N", "<nonce> FAIL <why>"; ttyS1
# carries only the command's output. The nonce comes from run-with-kvm, so
# the command's own output can never be mistaken for a marker.

export PATH=/bin
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

nonce=
job=
tty=0
cache=loose
for word in $(cat /proc/cmdline); do
  case "$word" in
    kvmini_rig.nonce=*) nonce=${word#*=} ;;
    kvmini_rig.job=*) job=${word#*=} ;;
    kvmini_rig.tty=*) tty=${word#*=} ;;
    kvmini_rig.9p_cache=*) cache=${word#*=} ;;
  esac
done

say() {
  echo "$nonce $*" > /dev/console
}

fail() {
  say "FAIL $*"
  poweroff -f
  sleep 60
}

[ -n "$nonce" ] && [ -n "$job" ] || fail "kernel command line lacks kvmini_rig.nonce/job"

# The load order was resolved from each module's own dependency list when
# the initramfs was built.
for module in $(cat /modules/order); do
  insmod "/modules/$module.ko" || fail "insmod $module failed"
done

# cache=loose (the default): program start-up is about 10x faster than
# with cache=none, since files are read once. Written pages reach the host
# at writeback; the sync before power-off flushes what is left.
mkdir -p /host
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,cache=$cache" hostroot /host \
  || fail "cannot mount the host's root filesystem over 9p (tag hostroot)"

grep -qw svm /proc/cpuinfo || fail "the outer CPU shows no svm flag (qemu -cpu max without AMD-V?)"
[ -c /dev/kvm ] || fail "kvm_amd loaded but /dev/kvm is missing"

# These mounts exist only in this machine's mount table: the host sees its
# own /proc, /sys, /dev and /run unchanged.
mount -t proc proc /host/proc || fail "cannot mount proc in the chroot"
mount -t sysfs sysfs /host/sys || fail "cannot mount sysfs in the chroot"
mount -t devtmpfs devtmpfs /host/dev || fail "cannot mount devtmpfs in the chroot"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
# Tests may talk to themselves over 127.0.0.1; there is no other network.
ip link set lo up
# 9p cannot hold sockets, FIFOs or device nodes: /run (and $TMPDIR in it)
# is a tmpfs.
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "cannot mount a tmpfs on /run in the chroot"
mkdir -p -m 1777 /host/run/kvmini-rig-tmp

[ -f "/host$job/job.sh" ] || fail "job script $job/job.sh is not visible over 9p"

stty -F /dev/ttyS1 raw -echo || fail "no second serial port (ttyS1) for the command's output"

# A heartbeat on the console while the job runs: QEMU's TCG has been seen
# to freeze the whole outer machine (no console, no output); run-with-kvm
# tells that apart from a slow command by the heartbeat stopping.
( while sleep 5; do say ALIVE; done ) &
heartbeat=$!

# The job starts with an empty environment: it sets what it passes.
read -r uptime _ < /proc/uptime
say "READY $uptime"
if [ "$tty" = 1 ]; then
  env -i /bin/chroot /host /bin/sh "$job/job.sh" < /dev/null > /dev/ttyS1 2>&1
  rc=$?
else
  set -o pipefail
  env -i /bin/chroot /host /bin/sh "$job/job.sh" < /dev/null 2>&1 | cat > /dev/ttyS1
  rc=$?
fi
kill "$heartbeat" 2>/dev/null
# stty sets the line with TCSADRAIN: it returns once the UART has sent
# everything the command wrote, so no output is lost at power-off.
stty -F /dev/ttyS1 raw -echo
sync
say "EXIT rc=$rc"
poweroff -f
sleep 60

# Shared by the in-guest disk checks (sourced; dash). Each check prints
# "kvmini-test: ok NAME" or "kvmini-test: FAIL NAME: why"; finish() prints
# "kvmini-test: all checks done" and exits with the number of failures.

failures=0
ok() { echo "kvmini-test: ok $*"; }
fail() {
	echo "kvmini-test: FAIL $*"
	failures=$((failures + 1))
}

# NAME COMMAND...: passes if the command succeeds; its output is kept in $out.
check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then ok "$name"; else fail "$name: $(echo "$out" | tail -n 5 | tr '\n' '|')"; fi
}

# NAME COMMAND...: passes if the command fails.
check_fails() {
	name=$1
	shift
	if out=$("$@" 2>&1); then fail "$name: succeeded: $(echo "$out" | tail -n 2 | tr '\n' '|')"; else ok "$name"; fi
}

expect_eq() { # NAME ACTUAL EXPECTED
	if [ "$2" = "$3" ]; then ok "$1 = $2"; else fail "$1: got '$2', expected '$3'"; fi
}

# NAME TEXT PATTERN: passes if TEXT has a line matching the extended regex.
expect_match() {
	if printf '%s\n' "$2" | grep -qE -- "$3"; then
		ok "$1"
	else
		fail "$1: no match for /$3/ in: $(printf '%s' "$2" | head -n 12 | tr '\n' '|')"
	fi
}

# Waits up to 20 s for COUNT block devices matching the glob in /sys/block
# (the SCSI scan is asynchronous).
wait_for_disks() { # GLOB COUNT
	i=0
	while [ "$(ls -d /sys/block/$1 2>/dev/null | wc -l)" -lt "$2" ] && [ $i -lt 200 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	expect_eq "number of /sys/block/$1" "$(ls -d /sys/block/$1 2>/dev/null | wc -l)" "$2"
}

# fio random writes then a crc32c verify of everything written.
fio_verify() { # NAME DEVICE [FIO OPTIONS...]
	name=$1
	device=$2
	shift 2
	check "$name" fio --name="$name" --filename="$device" --ioengine=libaio --direct=1 \
		--iodepth=16 --rw=randwrite --bs=4k --size=8M --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --randrepeat=0 "$@"
	echo "$out" | grep -E '^ *(WRITE|READ):' | sed 's/^/  fio: /'
}

no_io_errors_in_dmesg() {
	errors=$(dmesg | grep -iE 'I/O error|blk_update_request|Buffer I/O|critical (medium|target)|timed out|task abort|virtio.*(broken|needs reset)')
	if [ -z "$errors" ]; then ok "no I/O errors in dmesg"; else fail "dmesg: $(echo "$errors" | head -n 5 | tr '\n' '|')"; fi
}

finish() {
	echo "kvmini-test: all checks done ($failures failed)"
	exit "$failures"
}

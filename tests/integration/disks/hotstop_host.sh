# Host part of the hot-stop case, sourced by guest_disk_test.sh (bash): the
# dataplane churn and pauses through kvmini-ctl while the guest runs
# guest/hotstop.sh, then the counters, then quit.
#
# While the guest runs, this script starts no process at all: commands go
# through ONE kvmini-ctl --batch coprocess, the images are hashed by one
# long-lived python process, and the console is read and the waits are
# slept with bash builtins. Inside the rig, starting processes in the
# outer machine at a high rate while the nested guest runs was seen to crash
# the nested guest (triple fault) or the outer machine itself, with nothing
# but query-status being sent (a TCG nested-SVM problem, not a kvmini one);
# the waits used to run grep and sleep twice a second, and the pauses md5sum.
#
# The guest repeats its fio rounds until this script has done its share of
# operations and writes a stop marker into vda's image (at 60 MiB, where
# fio never writes); the round running then is the last.
#
# Tunables: KVMINI_HOTSTOP_MIN_OPS (default 200), KVMINI_HOTSTOP_PAUSES
# (default 3), KVMINI_HOTSTOP_PAUSE_EVERY (default 50);
# KVMINI_HOTSTOP_CHURN=0 runs the same guest load without control operations
# (to tell a guest or load problem from a dataplane one).
min_ops=${KVMINI_HOTSTOP_MIN_OPS:-200}
min_pauses=${KVMINI_HOTSTOP_PAUSES:-3}
pause_every=${KVMINI_HOTSTOP_PAUSE_EVERY:-50}
vda=$(image vda 64)
sda=$(image sda 64)
socket=$work/control.sock
start_kvmini "" --iothread io0 --iothread io1 --iothread io2 \
	--blk "path=$vda,iothread=io0" --scsi "path=$sda,iothread=io1" --control "$socket"

# A sleep that starts no process: a read that times out on a pipe that
# this shell holds both ends of (the process substitution's `:` exits at once).
exec {idle_fd}<> <(:)
nap() { read -r -t "$1" -u "$idle_fd" _; true; }
# Whether a line of the console shows TEXT, read by the shell itself
# (mapfile, not read -d '': a NUL byte from the serial port would end a
# read there, and only cuts its own line short here).
console_has() { # TEXT
	local lines=()
	[ -r "$work/console" ] && mapfile -t lines <"$work/console"
	[[ "${lines[*]}" == *"$1"* ]]
}
guest_done() { console_has 'kvmini-test: all checks done'; }
# MD5s of the two images, one line in $hashes, from one long-lived process
# behind two FIFOs (bash keeps track of one coprocess only: kvmini-ctl's).
mkfifo "$work/hasher-in" "$work/hasher-out"
python3 -u -c '
import hashlib, sys
for line in sys.stdin:
    print(" ".join(hashlib.md5(open(path, "rb").read()).hexdigest() for path in line.split()))' \
	<"$work/hasher-in" >"$work/hasher-out" &
exec {hasher_in}>"$work/hasher-in" {hasher_out}<"$work/hasher-out"
image_hashes() {
	echo "$vda $sda" >&"$hasher_in"
	IFS= read -r -t 60 hashes <&"$hasher_out" || fail "no answer from the image hasher"
}
json_field() { # JSON PYTHON_EXPRESSION_ON_r (r = the "return" object)
	python3 -c 'import json, sys; r = json.loads(sys.argv[1])["return"]; print(eval(sys.argv[2]))' "$1" "$2"
}

for ((tries = 0; tries < 600; tries++)); do
	console_has 'kvmini-test: fio started' && break
	kill -0 "$kvmini_pid" 2>/dev/null || fail "kvmini ended before the guest started fio"
	nap 0.5
done
console_has 'kvmini-test: fio started' || fail "the guest did not start fio within 300 s"

coproc CTL { "$ctl" --socket "$socket" --batch 2>&1; }
# Sends one command; its answer (one JSON line) is left in $answer and
# logged. Fails the test on an error answer unless the guest has finished.
# ops.log: "SENT ANSWERED COMMAND... -> ANSWER" (times: $EPOCHREALTIME), read
# by hotstop_stats.py for the latency figures.
ctl() {
	local sent=$EPOCHREALTIME
	# bash unsets CTL once the coprocess has exited (kvmini gone, its socket
	# closed): say so, with kvmini's stderr, instead of dying on "unbound
	# variable" under set -u with no diagnostics. Exited but not yet
	# reaped, it still has CTL, and writing to it would kill this script
	# with SIGPIPE (ignored just for the write: no child inherits that).
	[[ -n ${CTL[1]:-} ]] || fail "kvmini-ctl has exited (has kvmini?); could not send: $*"
	trap '' PIPE
	echo "$*" 2>/dev/null >&"${CTL[1]}"
	local written=$?
	trap - PIPE
	((written == 0)) || fail "kvmini-ctl has exited (has kvmini?); could not send: $*"
	IFS= read -r -t 120 answer <&"${CTL[0]}" || fail "no answer from kvmini-ctl to: $*"
	echo "$sent $EPOCHREALTIME $* -> $answer" >>"$work/ops.log"
	[[ $answer == *'"error"'* ]] && fail "kvmini-ctl $*: $answer"
	return 0
}

# Error counts before the churn: the guest's SCSI scan probes commands the
# disk refuses (CHECK CONDITION counts as an error), during the boot only.
ctl query-devices
errors_before=$(json_field "$answer" "' '.join(str(d['errors']) for d in r['devices'])")

iothreads=(io0 io1 io2)
ops=0
pauses=0
churn_start=$EPOCHREALTIME
while kill -0 "$kvmini_pid" 2>/dev/null; do
	# Reading the whole console takes a while: not at every operation.
	((ops % 20 == 0)) && guest_done && break
	if ((ops >= min_ops && pauses >= min_pauses)) && [ -z "${stop_sent:-}" ]; then
		printf KVMINI-STOP-FIO | dd of="$vda" bs=1 seek=$((60 << 20)) conv=notrunc status=none
		stop_sent=1
	fi
	if [ "${KVMINI_HOTSTOP_CHURN:-1}" = 0 ]; then
		nap 1
		ops=$((ops + 1))
		pauses=$min_pauses
		continue
	fi
	disk=blk0
	((RANDOM % 2)) && disk=scsi0
	case $((RANDOM % 3)) in
	0) ctl dataplane-stop "device=$disk" ;;
	1) ctl dataplane-start "device=$disk" ;;
	2) ctl device-set-iothread "device=$disk" "iothread=${iothreads[RANDOM % 3]}" ;;
	esac
	ops=$((ops + 1))
	if ((ops % pause_every == 0)); then
		ctl stop
		ctl query-status
		[[ $answer == *'"status":"paused"'* ]] || fail "query-status after stop: $answer"
		image_hashes
		before=$hashes
		nap 1
		image_hashes
		[ "$before" = "$hashes" ] || fail "an image changed while the VM was paused (pause $((pauses + 1)))"
		ctl cont
		pauses=$((pauses + 1))
	fi
done
[ "${KVMINI_HOTSTOP_CHURN:-1}" = 0 ] && ops=0
churn_seconds=$(awk -v a="$churn_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
echo "host: $ops dataplane operations and $pauses stop/cont pairs in $churn_seconds s"
# Round trips of each command and the stop/start/move durations kvmini
# measured while guest I/O was running (min/p50/p99/max).
python3 "$here/hotstop_stats.py" "$work/ops.log"

for ((tries = 0; tries < 600; tries++)); do
	guest_done && break
	kill -0 "$kvmini_pid" 2>/dev/null || break
	nap 0.5
done
guest_done || fail "the guest's fio did not finish"
grep -q 'kvmini-test: FAIL' "$work/console" && wait_kvmini 0
((ops >= min_ops)) || fail "only $ops dataplane operations before the guest finished (need $min_ops)"
((pauses >= min_pauses)) || fail "only $pauses stop/cont pairs (need $min_pauses)"

# The guest's block-layer totals must match what the devices counted.
ctl query-devices
devices=$answer
read -r -a errors_before <<<"$errors_before"
index=0
for pair in vda:blk0 sda:scsi0; do
	guest_disk=${pair%%:*}
	device=${pair##*:}
	stat=$(grep -o "kvmini-test: stat $guest_disk .*" "$work/console" | tr -d '\r')
	read_sectors=$(sed -n 's/.* read_sectors=\([0-9]*\).*/\1/p' <<<"$stat")
	write_sectors=$(sed -n 's/.* write_sectors=\([0-9]*\).*/\1/p' <<<"$stat")
	select="[d for d in r['devices'] if d['id'] == '$device'][0]"
	counters=$(json_field "$devices" "' '.join(str($select[k]) for k in ('bytes_read', 'bytes_written', 'requests_in_flight', 'errors', 'requests_completed'))")
	read -r bytes_read bytes_written in_flight errors completed <<<"$counters"
	echo "host: $device: read $bytes_read bytes (guest $((read_sectors * 512))), wrote $bytes_written (guest $((write_sectors * 512))), $completed requests, $in_flight in flight, $errors errors (${errors_before[index]} before the test)"
	[ "$bytes_read" = $((read_sectors * 512)) ] || fail "$device: bytes_read $bytes_read != guest's $((read_sectors * 512))"
	[ "$bytes_written" = $((write_sectors * 512)) ] || fail "$device: bytes_written $bytes_written != guest's $((write_sectors * 512))"
	[ "$in_flight" = 0 ] || fail "$device: $in_flight requests in flight with the guest idle"
	[ "$errors" = "${errors_before[index]}" ] ||
		fail "$device: $((errors - errors_before[index])) errors during the test"
	index=$((index + 1))
done

ctl quit
# kvmini-ctl may already have exited with kvmini (see ctl).
[[ -n ${CTL[1]:-} ]] && eval "exec ${CTL[1]}>&-"
wait_kvmini 0
[ -e "$socket" ] && fail "the control socket is still there after quit"
grep -q 'quit on the control socket' "$work/stderr" || fail "kvmini did not report the quit"

#!/usr/bin/env python3
"""Guest fio on kvmini next to QEMU's microvm, on the same kernel, initrd and image.

Boots the guest image (guest-images/build.sh output, with fio) with one disk
and runs fio inside the guest: 4 KiB random reads at queue depth 1 and 32
and 4 KiB random writes at queue depth 32 (O_DIRECT in the guest, io_uring
engine). The disk is, in turn:
  blk   kvmini --blk path=IMG,iothread=io0        vs QEMU virtio-blk-device
  scsi  kvmini --scsi path=IMG,iothread=io0       vs QEMU virtio-scsi-device + scsi-hd
each on an IOThread, QEMU with -object iothread and aio=io_uring. Both VMMs
open the image buffered (kvmini's default; QEMU cache=writeback), because
the image lives on a tmpfs that has no O_DIRECT in the rig's outer kernel.
The VMMs alternate boot by boot (who goes first swaps every repetition), so
load from elsewhere hits both alike. Prints each run, min/median/max IOPS for
both and the ratio kvmini/QEMU of the medians; --json keeps every figure.

Needs /dev/kvm that can run Linux: on a host without hardware virtualization
run it through the rig, under the team's rig lock:

  flock /tmp/kvmini-rig.lock tests/rig/run-with-kvm -- bench/guest_fio_compare.py \\
      --kvmini build/normal/vmm/kvmini --image-dir build/guest/cloud

Only one VMM process runs at a time and nothing else is started while a guest
runs (docs/TESTING.md: a high process start rate next to a nested guest can
crash it). The console is read until the image's /init prints its exit line;
then the VMM is killed, so neither VMM's power-off path is timed or needed.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "vmm"))
import boot_compare  # pylint: disable=wrong-import-position

# kvmini's default kernel command line (as in bench/vmm/boot_compare.py), so
# both VMMs boot the kernel with the same parameters.
CMDLINE = ("console=ttyS0 quiet reboot=k,panic_warm panic=-1 pci=off 8250.nr_uarts=1 "
           "no_timer_check")
EXIT_LINE = b"kvmini-guest: exit status"
RESULT_PREFIX = "kvmini-bench: result "
# name -> (fio --rw, queue depth)
JOBS = {
    "randread_qd1": ("randread", 1),
    "randread_qd32": ("randread", 32),
    "randwrite_qd32": ("randwrite", 32),
}
GUEST_DEVICE = {"blk": "vda", "scsi": "sda"}

# Runs in the guest (busybox sh): waits for the disk, runs each fio job and
# prints one result line per job with its read and write IOPS.
#   fio.sh DEVICE SECONDS RAMP_SECONDS JOB...   (JOB = name:rw:depth)
GUEST_SCRIPT = r"""#!/bin/sh
device=$1 seconds=$2 ramp=$3
shift 3
waited=0
while [ ! -b "/dev/$device" ]; do
	[ "$waited" -ge 200 ] && { echo "kvmini-bench: error: no /dev/$device after 20 s"; exit 1; }
	sleep 0.1
	waited=$((waited + 1))
done
status=0
for job in "$@"; do
	name=${job%%:*}
	rest=${job#*:}
	rw=${rest%%:*}
	depth=${rest#*:}
	if fio --name="$name" --filename="/dev/$device" --direct=1 --ioengine=io_uring \
		--rw="$rw" --bs=4k --iodepth="$depth" --runtime="$seconds" --ramp_time="$ramp" \
		--time_based --norandommap --randrepeat=0 --output-format=json \
		--output=/tmp/fio.json >/tmp/fio.log 2>&1; then
		# The job's first "iops" key is its read side, the second its write side.
		echo "kvmini-bench: result $name $(awk -F': ' '/"iops" :/ { gsub(",", "", $2); v[n++] = $2 } END { print v[0], v[1] }' /tmp/fio.json)"
	else
		echo "kvmini-bench: error: fio $name failed: $(tail -n 5 /tmp/fio.log | tr '\n' '|')"
		status=1
	fi
done
exit $status
"""


def cpio_newc(entries):
    """A newc cpio archive of (path, mode, data) entries (data None: a directory)."""
    out = bytearray()

    def pad4():
        out.extend(b"\0" * (-len(out) % 4))

    for inode, (path, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        body = data or b""
        name = path.encode() + b"\0"
        fields = [inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(name), 0]
        out.extend(b"070701" + b"".join(b"%08X" % field for field in fields) + name)
        pad4()
        out.extend(body)
        pad4()
    return bytes(out)


def make_initrd(image_dir, work):
    """The image's initrd with the guest script appended as a second cpio."""
    base = os.path.join(image_dir, "initrd.img")
    initrd = os.path.join(work, "initrd-bench.img")
    shutil.copyfile(base, initrd)
    archive = cpio_newc([("kvmini-bench", 0o040755, None),
                         ("kvmini-bench/fio.sh", 0o100755, GUEST_SCRIPT.encode())])
    with open(initrd, "ab") as out:
        # The kernel unpacks a plain cpio that follows the compressed one at a
        # 4-byte boundary.
        out.write(b"\0" * (-out.tell() % 4))
        out.write(archive)
    return initrd


def make_image(path, mib):
    """A raw image of non-zero bytes, so reads never hit holes."""
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(chunk)


def vmm_command(vmm, device, args, kernel, initrd, image, guest_args):
    cmdline = f"{CMDLINE} -- /kvmini-bench/fio.sh {guest_args}"
    if vmm == "kvmini":
        disk = f"path={image},iothread=io0"
        return [args.kvmini, "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
                "--memory", f"{args.memory_mib}M", "--cpus", str(args.cpus),
                "--serial", "stdio", "--iothread", "io0", f"--{device}", disk]
    drive = f"file={image},if=none,id=disk0,format=raw,aio=io_uring,cache=writeback"
    if device == "blk":
        devices = ["-device", "virtio-blk-device,drive=disk0,iothread=io0"]
    else:
        devices = ["-device", "virtio-scsi-device,id=scsi0,iothread=io0",
                   "-device", "scsi-hd,drive=disk0,bus=scsi0.0"]
    return [args.qemu, "-M", "microvm,acpi=on", "-enable-kvm", "-cpu", "host",
            "-smp", str(args.cpus), "-m", str(args.memory_mib), "-nodefaults",
            "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", kernel,
            "-initrd", initrd, "-append", cmdline, "-object", "iothread,id=io0",
            "-drive", drive] + devices


def run_guest(command, timeout):
    """Runs the VMM until the guest's /init prints its exit line; returns the console."""
    try:
        seconds, seen = boot_compare.run_until_marker(command, EXIT_LINE, timeout)
    except RuntimeError as error:
        raise RuntimeError(f"{error}\n--- command: {' '.join(command)}") from None
    return seen.decode(errors="replace"), seconds


def parse_results(console, jobs):
    """{job: iops} from the guest's result lines; raises if one is missing."""
    figures = {}
    for line in console.splitlines():
        line = line.strip()
        if line.startswith("kvmini-bench: error"):
            raise RuntimeError(f"in the guest: {line}\n--- console:\n{console[-3000:]}")
        if line.startswith(RESULT_PREFIX):
            name, read_iops, write_iops = line[len(RESULT_PREFIX):].split()
            figures[name] = float(write_iops if JOBS[name][0].endswith("write") else read_iops)
    missing = [job for job in jobs if job not in figures]
    if missing:
        raise RuntimeError(f"no result for {', '.join(missing)}\n--- console:\n{console[-3000:]}")
    return figures


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "runs": values}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kvmini", help="kvmini binary (needed unless --vmms qemu)")
    parser.add_argument("--image-dir", required=True,
                        help="guest-images/build.sh output with fio (vmlinuz, initrd.img)")
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--vmms", default="kvmini,qemu", help="comma-separated: kvmini,qemu")
    parser.add_argument("--devices", default="blk,scsi", help="comma-separated: blk,scsi")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated: {','.join(JOBS)}")
    parser.add_argument("--runs", type=int, default=5, help="boots per VMM and device")
    parser.add_argument("--fio-seconds", type=int, default=5, help="measured time per fio job")
    parser.add_argument("--fio-ramp", type=int, default=1, help="unmeasured warm-up per fio job")
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300, help="per boot, seconds")
    parser.add_argument("--work-dir", default=os.environ.get("TMPDIR", "/tmp"),
                        help="where the image and initrd go (default $TMPDIR: tmpfs in the rig)")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    vmms = args.vmms.split(",")
    devices = args.devices.split(",")
    jobs = args.jobs.split(",")
    for value, allowed, what in [(vmms, ("kvmini", "qemu"), "--vmms"),
                                 (devices, GUEST_DEVICE, "--devices"), (jobs, JOBS, "--jobs")]:
        unknown = [item for item in value if item not in allowed]
        if unknown or not value:
            parser.error(f"{what}: unknown {unknown or 'empty list'}; use {', '.join(allowed)}")
    if "kvmini" in vmms and not (args.kvmini and os.access(args.kvmini, os.X_OK)):
        parser.error(f"--kvmini: not an executable: {args.kvmini}")
    if args.runs < 1 or args.fio_seconds < 1 or args.fio_ramp < 0 or args.image_mib < 16:
        parser.error("need --runs >= 1, --fio-seconds >= 1, --fio-ramp >= 0, --image-mib >= 16")
    kernel = os.path.join(args.image_dir, "vmlinuz")
    for path in (kernel, os.path.join(args.image_dir, "initrd.img")):
        if not os.access(path, os.R_OK):
            parser.error(f"no {path}: build it with guest-images/build.sh {args.image_dir}")

    work = tempfile.mkdtemp(prefix="kvmini-guest-fio.", dir=args.work_dir)
    try:
        initrd = make_initrd(args.image_dir, work)
        image = os.path.join(work, "disk.img")
        make_image(image, args.image_mib)
        job_words = " ".join(f"{job}:{JOBS[job][0]}:{JOBS[job][1]}" for job in jobs)
        print(f"guest fio, 4 KiB, O_DIRECT in the guest, {args.fio_seconds} s per job after "
              f"{args.fio_ramp} s warm-up; {args.runs} boots per VMM and device, alternating; "
              f"image {args.image_mib} MiB on {args.work_dir}; {args.cpus} vCPU, "
              f"{args.memory_mib} MiB", flush=True)
        iops = {device: {vmm: {job: [] for job in jobs} for vmm in vmms} for device in devices}
        boot_seconds = {device: {vmm: [] for vmm in vmms} for device in devices}
        failure = None
        try:
            for run in range(args.runs):
                order = vmms if run % 2 == 0 else list(reversed(vmms))
                for device in devices:
                    guest_args = (f"{GUEST_DEVICE[device]} {args.fio_seconds} {args.fio_ramp} "
                                  f"{job_words}")
                    for vmm in order:
                        command = vmm_command(vmm, device, args, kernel, initrd, image,
                                              guest_args)
                        console, seconds = run_guest(command, args.timeout)
                        figures = parse_results(console, jobs)
                        boot_seconds[device][vmm].append(seconds)
                        for job in jobs:
                            iops[device][vmm][job].append(figures[job])
                        print(f"run {run + 1} {device:4} {vmm:6} "
                              + " ".join(f"{job} {figures[job]:9.0f}" for job in jobs)
                              + f"  ({seconds:.1f} s)", flush=True)
        except RuntimeError as error:
            # Keep the repetitions that completed for every VMM and disk: a
            # nested guest that hangs late in a long run should not void it.
            failure = str(error)
            print(f"guest_fio_compare.py: {failure}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    complete = min(len(values) for by_vmm in boot_seconds.values() for values in by_vmm.values())
    if complete == 0:
        raise RuntimeError("no repetition completed (see above)")
    if failure:
        print(f"guest_fio_compare.py: summarising the {complete} complete repetitions",
              file=sys.stderr)
        for device in devices:
            for vmm in vmms:
                del boot_seconds[device][vmm][complete:]
                for job in jobs:
                    del iops[device][vmm][job][complete:]
    result = {"runs": complete, "error": failure, "fio_seconds": args.fio_seconds, "fio_ramp": args.fio_ramp,
              "image_mib": args.image_mib, "cpus": args.cpus, "memory_mib": args.memory_mib,
              "devices": {}}
    print("\nIOPS, min / median / max" + (", ratio kvmini/QEMU of the medians (target >= 1.0)"
                                          if len(vmms) == 2 else ""))
    for device in devices:
        result["devices"][device] = {"vm_seconds": {vmm: summary(boot_seconds[device][vmm])
                                                    for vmm in vmms}, "jobs": {}}
        for job in jobs:
            entry = {vmm: summary(iops[device][vmm][job]) for vmm in vmms}
            line = f"  {device:4} {job:15}"
            for vmm in vmms:
                s = entry[vmm]
                line += f"  {vmm} {s['min']:8.0f} {s['median']:8.0f} {s['max']:8.0f}"
            if len(vmms) == 2:
                entry["ratio_median"] = entry["kvmini"]["median"] / entry["qemu"]["median"]
                line += f"  ratio {entry['ratio_median']:.2f}"
            result["devices"][device]["jobs"][job] = entry
            print(line)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    return 1 if failure else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"guest_fio_compare.py: {error}", file=sys.stderr)
        sys.exit(1)

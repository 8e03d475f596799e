#!/usr/bin/env python3
"""Guest fio on kvmini next to QEMU's microvm, on the same kernel, initrd and image.

Boots the guest image (guest-images/build.sh output, with fio) with both
disks and runs one fio process inside the guest that measures, one job after
the other on each disk: 4 KiB random reads at queue depth 1 and 32 and 4 KiB
random writes at queue depth 32 (O_DIRECT in the guest, io_uring engine).
The disks, each with an image of its own and an IOThread of its own:
  blk   kvmini --blk path=IMG1,iothread=io0       vs QEMU virtio-blk-device
  scsi  kvmini --scsi path=IMG2,iothread=io1      vs QEMU virtio-scsi-device + scsi-hd
QEMU with -object iothread and aio=io_uring. Both VMMs open the images
buffered (kvmini's default; QEMU cache=writeback), because the images live
on a tmpfs that has no O_DIRECT in the rig's outer kernel. One boot per VMM
and repetition measures every job (a boot costs more than all of fio).
The VMMs alternate boot by boot (who goes first swaps every repetition), so
load from elsewhere hits both alike. Prints each run, min/median/max IOPS for
both and the ratio kvmini/QEMU of the medians; --json keeps every figure (and
is rewritten after every repetition, so a run cut short keeps what it did).

A boot that hangs or dies (the rig's nested guests now and then do, under
either VMM, for the emulator's reasons) is killed with its VMM after a few
times the slowest boot of that VMM so far and redone, a few times at most;
the output and the JSON say which boot was redone and why.

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

# Runs in the guest (busybox sh): waits for the disks, then runs ONE fio
# process whose jobs run one after the other (stonewall) and prints one result
# line per job with its read and write IOPS (fio's terse format, version 3:
# field 3 the job's name, 8 read IOPS, 49 write IOPS). One fio start instead
# of one per job: a program start costs seconds at the nested guest's speed.
#   fio.sh SECONDS RAMP_SECONDS JOB...   (JOB = device:name:rw:depth)
GUEST_SCRIPT = r"""#!/bin/sh
seconds=$1 ramp=$2
shift 2
jobs=""
for job in "$@"; do
	device=${job%%:*}
	rest=${job#*:}
	name=${rest%%:*}
	rest=${rest#*:}
	rw=${rest%%:*}
	depth=${rest#*:}
	waited=0
	while [ ! -b "/dev/$device" ]; do
		[ "$waited" -ge 200 ] && { echo "kvmini-bench: error: no /dev/$device after 20 s"; exit 1; }
		sleep 0.1
		waited=$((waited + 1))
	done
	jobs="$jobs --name=$device.$name --filename=/dev/$device --rw=$rw --iodepth=$depth --stonewall"
done
# shellcheck disable=SC2086 # $jobs is a list of words
if fio --direct=1 --ioengine=io_uring --bs=4k --runtime="$seconds" --ramp_time="$ramp" \
	--time_based --norandommap --randrepeat=0 --output-format=terse \
	--output=/tmp/fio.terse $jobs >/tmp/fio.log 2>&1; then
	awk -F';' '$1 == 3 { print "kvmini-bench: result", $3, $8, $49 }' /tmp/fio.terse
else
	echo "kvmini-bench: error: fio failed: $(tail -n 5 /tmp/fio.log | tr '\n' '|')"
	exit 1
fi
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


def vmm_command(vmm, args, kernel, initrd, images, guest_args):
    """The VMM's command line with one disk per entry of `images` ({device: path})."""
    cmdline = f"{CMDLINE} -- /kvmini-bench/fio.sh {guest_args}"
    iothreads = {device: f"io{index}" for index, device in enumerate(images)}
    if vmm == "kvmini":
        command = [args.kvmini, "--kernel", kernel, "--initrd", initrd, "--cmdline", cmdline,
                   "--memory", f"{args.memory_mib}M", "--cpus", str(args.cpus),
                   "--serial", "stdio"]
        for device, image in images.items():
            command += ["--iothread", iothreads[device],
                        f"--{device}", f"path={image},iothread={iothreads[device]}"]
        return command
    command = [args.qemu, "-M", "microvm,acpi=on", "-enable-kvm", "-cpu", "host",
               "-smp", str(args.cpus), "-m", str(args.memory_mib), "-nodefaults",
               "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", kernel,
               "-initrd", initrd, "-append", cmdline]
    for device, image in images.items():
        iothread, drive = iothreads[device], f"disk{device}"
        command += ["-object", f"iothread,id={iothread}", "-drive",
                    f"file={image},if=none,id={drive},format=raw,aio=io_uring,cache=writeback"]
        if device == "blk":
            command += ["-device", f"virtio-blk-device,drive={drive},iothread={iothread}"]
        else:
            command += ["-device", f"virtio-scsi-device,id=scsi0,iothread={iothread}",
                        "-device", f"scsi-hd,drive={drive},bus=scsi0.0"]
    return command


def parse_results(console, devices, jobs):
    """{device: {job: iops}} from the guest's result lines; raises if one is missing."""
    figures = {device: {} for device in devices}
    for line in console.splitlines():
        line = line.strip()
        if line.startswith("kvmini-bench: error"):
            raise RuntimeError(f"in the guest: {line}\n--- console:\n{console[-3000:]}")
        if line.startswith(RESULT_PREFIX):
            name, read_iops, write_iops = line[len(RESULT_PREFIX):].split()
            guest_device, job = name.split(".", 1)
            device = next(key for key, value in GUEST_DEVICE.items() if value == guest_device)
            figures[device][job] = float(write_iops if JOBS[job][0].endswith("write")
                                         else read_iops)
    missing = [f"{device} {job}" for device in devices for job in jobs
               if job not in figures[device]]
    if missing:
        raise RuntimeError(f"no result for {', '.join(missing)}\n--- console:\n{console[-3000:]}")
    return figures


def summary(values):
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "runs": values}


def document(args, vmms, devices, jobs, iops, vm_seconds, runner, error):
    """The JSON document of the repetitions that completed for every VMM; prints
    their table when `error` is not the placeholder of a run still going."""
    complete = min(len(values) for values in vm_seconds.values())
    result = {"runs": complete, "runs_asked": args.runs, "error": error,
              "fio_seconds": args.fio_seconds, "fio_ramp": args.fio_ramp,
              "image_mib": args.image_mib, "cpus": args.cpus, "memory_mib": args.memory_mib,
              "boot_limits": runner.describe(), "redos": runner.redos,
              "vm_seconds": {vmm: summary(vm_seconds[vmm][:complete]) for vmm in vmms},
              "devices": {}}
    for device in devices:
        result["devices"][device] = {"jobs": {}}
        for job in jobs:
            entry = {vmm: summary(iops[device][vmm][job][:complete]) for vmm in vmms}
            if len(vmms) == 2:
                entry["ratio_median"] = entry["kvmini"]["median"] / entry["qemu"]["median"]
            result["devices"][device]["jobs"][job] = entry
    return result


def print_table(result, vmms):
    print("\nIOPS, min / median / max" + (", ratio kvmini/QEMU of the medians (target >= 1.0)"
                                          if len(vmms) == 2 else ""))
    for device, entry in result["devices"].items():
        for job, figures in entry["jobs"].items():
            line = f"  {device:4} {job:15}"
            for vmm in vmms:
                s = figures[vmm]
                line += f"  {vmm} {s['min']:8.0f} {s['median']:8.0f} {s['max']:8.0f}"
            if "ratio_median" in figures:
                line += f"  ratio {figures['ratio_median']:.2f}"
            print(line)
    print(f"{result['runs']} complete repetitions; {result['boot_limits']}")


def write_json(path, result):
    if path:
        with open(path + ".new", "w") as out:
            json.dump(result, out, indent=1)
        os.replace(path + ".new", path)


def resume(args, vmms, devices, jobs, iops, vm_seconds, runner):
    """Loads the complete repetitions of an earlier run of the same settings from
    --json (bench/run-all.sh's second outer machine, after the rig itself
    failed); returns how many there are."""
    if not (args.json and os.path.exists(args.json)):
        return 0
    with open(args.json) as data:
        previous = json.load(data)
    settings = ("fio_seconds", "fio_ramp", "image_mib", "cpus", "memory_mib")
    if (any(previous.get(key) != getattr(args, key) for key in settings)
            or list(previous.get("vm_seconds", {})) != vmms
            or list(previous["devices"]) != devices
            or any(list(entry["jobs"]) != jobs for entry in previous["devices"].values())):
        print(f"not resuming: {args.json} is of other settings", flush=True)
        return 0
    done = min(previous["runs"], args.runs)
    for vmm in vmms:
        vm_seconds[vmm][:] = previous["vm_seconds"][vmm]["runs"][:done]
        for device in devices:
            for job in jobs:
                runs = previous["devices"][device]["jobs"][job][vmm]["runs"]
                iops[device][vmm][job][:] = runs[:done]
    runner.redos[:] = previous.get("redos", [])
    runner.slowest = {vmm: max(values) for vmm, values in vm_seconds.items() if values}
    print(f"resuming after the {done} complete repetitions in {args.json}", flush=True)
    return done


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
    parser.add_argument("--runs", type=int, default=5, help="boots per VMM")
    parser.add_argument("--fio-seconds", type=int, default=3, help="measured time per fio job")
    parser.add_argument("--fio-ramp", type=int, default=1, help="unmeasured warm-up per fio job")
    parser.add_argument("--image-mib", type=int, default=256, help="size of each disk's image")
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--limit-floor", type=float,
                        help="per-boot limit at least this "
                             "(seconds; default 60 + 2 x the fio time)")
    parser.add_argument("--limit-ceiling", type=float,
                        help="per-boot limit at most this, and until a boot completed "
                             "(default 120 + 4 x the fio time)")
    parser.add_argument("--max-redos", type=int, default=3,
                        help="boots that hung or died redone at most this often in all")
    parser.add_argument("--work-dir", default=os.environ.get("TMPDIR", "/tmp"),
                        help="where the images and initrd go (default $TMPDIR: tmpfs in the rig)")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--resume", action="store_true",
                        help="if --json holds the repetitions of a run with the same settings "
                             "that was cut short, keep them and run only the rest")
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
    if (args.runs < 1 or args.fio_seconds < 1 or args.fio_ramp < 0 or args.image_mib < 16
            or args.max_redos < 0):
        parser.error("need --runs >= 1, --fio-seconds >= 1, --fio-ramp >= 0, --image-mib >= 16, "
                     "--max-redos >= 0")
    fio_time = len(devices) * len(jobs) * (args.fio_seconds + args.fio_ramp)
    floor = args.limit_floor or 60 + 2 * fio_time
    ceiling = args.limit_ceiling or max(floor, 120 + 4 * fio_time)
    if not 0 < floor <= ceiling:
        parser.error("need 0 < --limit-floor <= --limit-ceiling")
    kernel = os.path.join(args.image_dir, "vmlinuz")
    for path in (kernel, os.path.join(args.image_dir, "initrd.img")):
        if not os.access(path, os.R_OK):
            parser.error(f"no {path}: build it with guest-images/build.sh {args.image_dir}")

    runner = boot_compare.BootRunner(floor, ceiling, max_redos=args.max_redos)
    iops = {device: {vmm: {job: [] for job in jobs} for vmm in vmms} for device in devices}
    vm_seconds = {vmm: [] for vmm in vmms}  # boot to the exit line, all jobs
    first_run = resume(args, vmms, devices, jobs, iops, vm_seconds, runner) if args.resume else 0
    failure = None
    work = tempfile.mkdtemp(prefix="kvmini-guest-fio.", dir=args.work_dir)
    try:
        initrd = make_initrd(args.image_dir, work)
        images = {device: os.path.join(work, f"{device}.img") for device in devices}
        for image in images.values():
            make_image(image, args.image_mib)
        guest_args = f"{args.fio_seconds} {args.fio_ramp} " + " ".join(
            f"{GUEST_DEVICE[device]}:{job}:{JOBS[job][0]}:{JOBS[job][1]}"
            for device in devices for job in jobs)
        print(f"guest fio, 4 KiB, O_DIRECT in the guest, {args.fio_seconds} s per job after "
              f"{args.fio_ramp} s warm-up; {args.runs} boots per VMM with every disk "
              f"({', '.join(devices)}), alternating; image {args.image_mib} MiB per disk on "
              f"{args.work_dir}; {args.cpus} vCPU, {args.memory_mib} MiB", flush=True)
        try:
            for run in range(first_run, args.runs):
                for vmm in vmms if run % 2 == 0 else list(reversed(vmms)):
                    command = vmm_command(vmm, args, kernel, initrd, images, guest_args)
                    seconds, seen = runner.run(f"run {run + 1} {vmm}", vmm, command, EXIT_LINE)
                    console = seen.decode(errors="replace")
                    try:
                        figures = parse_results(console, devices, jobs)
                    except RuntimeError as error:
                        raise RuntimeError(f"run {run + 1} {vmm}: {error}\n--- command: "
                                           + " ".join(command)) from None
                    vm_seconds[vmm].append(seconds)
                    for device in devices:
                        for job in jobs:
                            iops[device][vmm][job].append(figures[device][job])
                        print(f"run {run + 1} {device:4} {vmm:6} "
                              + " ".join(f"{job} {figures[device][job]:9.0f}" for job in jobs)
                              + f"  ({seconds:.1f} s)", flush=True)
                # What a run cut short from outside (the rig's own timeout) leaves.
                write_json(args.json, document(
                    args, vmms, devices, jobs, iops, vm_seconds, runner,
                    f"cut short after {run + 1} of {args.runs} repetitions"))
        except RuntimeError as error:
            # Keep the repetitions that completed for every VMM: a nested
            # guest that fails late in a long run should not void it.
            failure = str(error)
            print(f"guest_fio_compare.py: {failure}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if min(len(values) for values in vm_seconds.values()) == 0:
        raise RuntimeError("no repetition completed (see above)")
    result = document(args, vmms, devices, jobs, iops, vm_seconds, runner, failure)
    if failure:
        print(f"guest_fio_compare.py: summarising the {result['runs']} complete repetitions",
              file=sys.stderr)
    print_table(result, vmms)
    write_json(args.json, result)
    return 1 if failure else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"guest_fio_compare.py: {error}", file=sys.stderr)
        sys.exit(1)

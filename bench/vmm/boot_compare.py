#!/usr/bin/env python3
"""Boot time of kvmini next to QEMU's microvm, measured in the same place.

Time from starting the VMM process to the guest image's /init marker
("kvmini-guest: init ready" on the serial console), for kvmini and for
`qemu-system-x86_64 -M microvm,acpi=on -enable-kvm` with the same kernel,
initrd and kernel command line, runs alternating between the two. Prints
every run, min and median for each, and the kvmini/QEMU ratio (target: at
most 0.8). Needs /dev/kvm that can run Linux: on hosts without hardware
virtualization run it through the rig, in one outer-machine boot:

  tests/rig/run-with-kvm -- bench/vmm/boot_compare.py \\
      --kvmini build/normal/vmm/kvmini --image-dir build/guest/cloud
"""

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import time

MARKER = b"kvmini-guest: init ready"
# kvmini's default kernel command line (vmm/machine/launch_options.h), so
# both VMMs boot the kernel with the same parameters.
DEFAULT_CMDLINE = ("console=ttyS0 quiet reboot=k,panic_warm panic=-1 pci=off 8250.nr_uarts=1 "
                   "no_timer_check")


def run_until_marker(command, marker, timeout):
    """Starts `command`, reads its stdout until `marker` appears, then kills it.

    Returns (seconds from start to the marker, everything read). Also used
    by bench/guest_fio_compare.py.
    """
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    seen = b""
    try:
        while True:
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise RuntimeError(f"no marker within {timeout} s: {command[0]}\n"
                                   + seen[-2000:].decode(errors="replace"))
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"{command[0]} ended (status {process.wait()}) before the "
                                   "marker:\n" + seen[-2000:].decode(errors="replace"))
            seen += chunk
            if marker in seen:
                return time.monotonic() - start, seen
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def time_to_marker(command, timeout):
    """Starts `command`, returns seconds until MARKER appears on its stdout."""
    return run_until_marker(command, MARKER, timeout)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kvmini", required=True)
    parser.add_argument("--image-dir", required=True, help="guest-images/build.sh output")
    parser.add_argument("--initrd", default="initrd-base.img")
    parser.add_argument("--kvmini-kernel",
                        help="boot kvmini from this kernel file instead of IMAGE_DIR/vmlinuz, "
                             "e.g. the same kernel as an uncompressed ELF vmlinux (PVH entry)")
    parser.add_argument("--qemu", default="qemu-system-x86_64")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-mib", type=int, default=256)
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--cmdline", default=DEFAULT_CMDLINE)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    kernel = os.path.join(args.image_dir, "vmlinuz")
    initrd = os.path.join(args.image_dir, args.initrd)
    cmdline = args.cmdline + " -- true"
    commands = {
        "kvmini": [args.kvmini, "--kernel", args.kvmini_kernel or kernel, "--initrd", initrd,
                   "--cmdline", cmdline,
                   "--memory", f"{args.memory_mib}M", "--cpus", str(args.cpus),
                   "--serial", "stdio"],
        "qemu": [args.qemu, "-M", "microvm,acpi=on", "-enable-kvm", "-cpu", "host",
                 "-smp", str(args.cpus), "-m", str(args.memory_mib), "-nodefaults",
                 "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", kernel,
                 "-initrd", initrd, "-append", cmdline],
    }
    times = {name: [] for name in commands}
    for run in range(args.runs):
        for name, command in commands.items():
            seconds = time_to_marker(command, args.timeout)
            times[name].append(seconds)
            print(f"run {run + 1}: {name:6s} {seconds:7.2f} s", flush=True)
    print(f"\nstart to /init marker, {args.runs} runs each, alternating "
          f"({os.path.basename(args.image_dir)}, {args.cpus} vCPU, {args.memory_mib} MiB; "
          f"kvmini kernel {args.kvmini_kernel or kernel}, QEMU kernel {kernel}):")
    for name, values in times.items():
        print(f"  {name:6s} min {min(values):7.2f} s  median {statistics.median(values):7.2f} s")
    ratio_median = statistics.median(times["kvmini"]) / statistics.median(times["qemu"])
    ratio_min = min(times["kvmini"]) / min(times["qemu"])
    print(f"  kvmini/QEMU: {ratio_median:.2f} (medians), {ratio_min:.2f} (mins); target <= 0.8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

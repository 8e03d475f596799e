#!/usr/bin/env python3
"""Boot time of kvmini next to QEMU's microvm, measured in the same place.

Time from starting the VMM process to the guest image's /init marker
("kvmini-guest: init ready" on the serial console), for kvmini and for
`qemu-system-x86_64 -M microvm,acpi=on -enable-kvm` with the same kernel,
initrd and kernel command line, runs alternating between the two. Prints
every run, min and median for each, and the kvmini/QEMU ratio (target: at
most 0.8). A boot that hangs or dies (the rig's nested guests sometimes do)
is killed after a few times the slowest boot of its VMM so far and redone,
a few times at most; each redo is printed ("redo N of at most M: ..."). Needs
/dev/kvm that can run Linux: on hosts without hardware
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


class BootFailed(RuntimeError):
    """A boot that hung (no marker in time) or whose VMM ended before the marker."""

    def __init__(self, why, console):
        super().__init__(f"{why}\n{console}")
        self.why = why  # one line: what happened
        self.console = console  # the last console output


def run_until_marker(command, marker, timeout):
    """Starts `command`, reads its stdout until `marker` appears, then kills it.

    Returns (seconds from start to the marker, everything read); raises
    BootFailed when the marker does not come within `timeout` seconds or the
    process ends first. Whatever happens, the VMM's whole process group (the
    VMM and with it its guest) is killed and reaped before this returns.
    Also used by bench/guest_fio_compare.py.
    """
    start = time.monotonic()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    seen = b""
    try:
        while True:
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise BootFailed(f"hung: no marker within {timeout:.0f} s ({command[0]})",
                                 seen[-2000:].decode(errors="replace"))
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise BootFailed(f"died: {command[0]} ended (status {process.wait()}) "
                                 f"{time.monotonic() - start:.0f} s after its start, before "
                                 "the marker", seen[-2000:].decode(errors="replace"))
            seen += chunk
            if marker in seen:
                return time.monotonic() - start, seen
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Never start the next boot next to a VMM that would not die.
            raise RuntimeError(f"{command[0]} (pid {process.pid}) still runs 60 s after "
                               "SIGKILL") from None
        process.stdout.close()


class BootRunner:
    """Boots with a time limit learned from the boots that completed, redoing a
    boot that hung or died.

    In the rig a nested guest now and then hangs or dies for the emulator's
    reasons (QEMU TCG with nested SVM), under either VMM. Rather than wait
    out a fixed long timeout and lose the run, a boot gets `factor` times the
    slowest completed boot of the same VMM (within [floor, ceiling]; the
    ceiling until one completed: QEMU's boots take up to twice kvmini's), is
    then killed with its VMM, and is run again, at most `max_redos` times
    over the whole run. Every redo is kept in `redos` so the report can say
    which boot was redone and why.
    """

    def __init__(self, floor, ceiling, factor=3.0, max_redos=3):
        self.floor, self.ceiling, self.factor, self.max_redos = floor, ceiling, factor, max_redos
        self.slowest = {}  # VMM -> seconds of its slowest completed boot
        self.redos = []  # {"boot": label, "why", "limit": seconds, "last_console_line"}

    def limit(self, vmm):
        if vmm not in self.slowest:
            return self.ceiling
        return min(self.ceiling, max(self.floor, self.factor * self.slowest[vmm]))

    def run(self, label, vmm, command, marker):
        """Boots `command` (of VMM `vmm`) until `marker`: (seconds, console bytes).
        `label` names the boot in messages (e.g. "run 3 qemu")."""
        while True:
            limit = self.limit(vmm)
            try:
                seconds, seen = run_until_marker(command, marker, limit)
            except BootFailed as failure:
                if len(self.redos) >= self.max_redos:
                    earlier = "; ".join(f"{redo['boot']}: {redo['why']}" for redo in self.redos)
                    raise RuntimeError(
                        f"{label}: {failure.why}; no redo left (at most {self.max_redos}"
                        + (f", done: {earlier}" if earlier else "")
                        + f")\n--- console:\n{failure.console}\n--- command: "
                        + " ".join(command)) from None
                last = (failure.console.strip().splitlines()[-1:] or ["(nothing)"])[0][:200]
                self.redos.append({"boot": label, "why": failure.why, "limit": round(limit),
                                   "last_console_line": last})
                print(f"redo {len(self.redos)} of at most {self.max_redos}: {label}: "
                      f"{failure.why}; last console line: {last}", flush=True)
                continue
            self.slowest[vmm] = max(self.slowest.get(vmm, 0.0), seconds)
            return seconds, seen

    def describe(self):
        """One line for the end of a run: the limits used and the redos."""
        text = (f"per-boot limit {self.factor:g} x the slowest completed boot of the same "
                f"VMM, within "
                f"{self.floor:g}-{self.ceiling:g} s; redone boots: {len(self.redos)}")
        if self.redos:
            text += " (" + "; ".join(f"{redo['boot']}: {redo['why']}" for redo in self.redos) + ")"
        return text


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
    parser.add_argument("--limit-floor", type=float, default=60,
                        help="per-boot limit at least this (seconds)")
    parser.add_argument("--limit-ceiling", type=float, default=120,
                        help="per-boot limit at most this, and until a boot completed")
    parser.add_argument("--max-redos", type=int, default=3,
                        help="boots that hung or died redone at most this often in all")
    args = parser.parse_args()
    if args.runs < 1 or not 0 < args.limit_floor <= args.limit_ceiling or args.max_redos < 0:
        parser.error("need --runs >= 1, 0 < --limit-floor <= --limit-ceiling, --max-redos >= 0")

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
    runner = BootRunner(args.limit_floor, args.limit_ceiling, max_redos=args.max_redos)
    for run in range(args.runs):
        for name, command in commands.items():
            seconds = runner.run(f"run {run + 1} {name}", name, command, MARKER)[0]
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
    print(f"  {runner.describe()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as error:
        print(f"boot_compare.py: {error}", file=sys.stderr)
        sys.exit(1)

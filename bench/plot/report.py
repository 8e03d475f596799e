#!/usr/bin/env python3
"""Writes PERFORMANCE.md and img/*.png from the raw figures of bench/run-all.sh.

  report.py --raw RAW_DIR --out OUT_DIR --root REPO_ROOT

Every table row carries measured numbers; a benchmark that failed or was
skipped gets a line saying so instead of its table. Exits 1 when a benchmark
failed, so run-all.sh does too.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean


def spread(values):
    """(min, median, max) of a non-empty list."""
    return min(values), statistics.median(values), max(values)


def bar(values):
    """(median, min, max): one contender's columns in a bars.gp data file."""
    low, middle, high = spread(values)
    return middle, low, high


def number(value, digits=None):
    if digits is None:
        digits = 0 if abs(value) >= 100 else 2
    return f"{value:,.{digits}f}"


def triple(values, digits=None):
    low, middle, high = spread(values)
    if digits is None:
        digits = 0 if abs(middle) >= 100 else 2
    return f"{number(low, digits)} / **{number(middle, digits)}** / {number(high, digits)}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class Report:
    def __init__(self, raw, out, root):
        self.raw, self.out, self.root = raw, out, root
        self.parts = []
        self.failed = []
        self.plots = []  # (data rows, file name, heading, ylabel, first, second, log)
        self.targets = []  # rows of the summary: figure, measured, target, met
        self.status = self._read_status()
        self.commands = {}
        for line in self._lines("commands.tsv"):
            name, command = line.split("\t", 1)
            self.commands[name] = command.replace(root + "/", "")

    def _lines(self, name):
        path = os.path.join(self.raw, name)
        return open(path).read().splitlines() if os.path.exists(path) else []

    def _read_status(self):
        status = {}
        for line in self._lines("status.tsv"):
            name, code, seconds = line.split("\t")
            status[name] = (int(code), int(seconds))
        for line in self._lines("rig-status.txt"):
            fields = line.split()
            status[fields[0]] = (int(fields[1]), int(fields[2]))
            if fields[0] == "rig" and len(fields) > 3:
                status["rig-lock-wait"] = (0, int(fields[3]))
        return status

    def add(self, text):
        self.parts.append(text)

    def load_json(self, name):
        with open(os.path.join(self.raw, name)) as data:
            return json.load(data)

    def section(self, step, heading, build, command_steps=None):
        """Adds `heading`, then build() or a line saying why it is missing, and the
        commands of `command_steps` (default: `step`)."""
        self.add(f"\n## {heading}\n")
        code = self.status.get(step, (None, 0))[0]
        log = os.path.join(self.raw, f"{step}.log")
        if code not in (None, 0) and step != "guest-fio":
            self.failed.append(step)
            tail = open(log).read().strip().splitlines()[-8:] if os.path.exists(log) else []
            self.add(f"**Not measured: `{step}` failed (status {code}).** Last lines of its "
                     "output:\n\n```\n" + "\n".join(tail) + "\n```\n")
            return
        try:
            build()
        except (OSError, KeyError, ValueError, IndexError, statistics.StatisticsError) as error:
            self.failed.append(step)
            self.add(f"**Not measured: the figures of `{step}` are missing or unreadable "
                     f"({type(error).__name__}: {error}).**\n")
            return
        commands = [self.commands[name] for name in command_steps or [step]
                    if name in self.commands]
        if commands:
            self.add(f"\nCommand{'s' if len(commands) > 1 else ''}: "
                     + ", ".join(f"`{command}`" for command in commands) + "\n")

    def target(self, figure, value, target, met, digits=None):
        self.targets.append([figure, number(value, digits), target, "yes" if met else "**no**"])

    def plot(self, rows, name, heading, ylabel, first, second, log=False):
        self.plots.append((rows, name, heading, ylabel, first, second, log))
        self.add(f"\n![{heading}](img/{name})\n")

    # ---- host-process benchmarks -------------------------------------------------

    def util(self):
        data = self.load_json("util.json")
        times = {}
        for run in data["benchmarks"]:
            if run.get("run_type") != "iteration":
                continue
            scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[run["time_unit"]]
            times.setdefault(run["run_name"].split("/")[0], []).append(run["real_time"] * scale)
        floor = statistics.median(times["BM_EventfdPingPong"])
        names = {"BM_EventfdPingPong": "eventfd ping-pong between two threads (the floor)",
                 "BM_BhScheduleCrossThread": "BH into an IOThread and a BH back",
                 "BM_AioWaitBhOneshotRoundTrip": "AioWaitBhOneshot into an IOThread"}
        floor_min = min(times["BM_EventfdPingPong"])
        rows = [[names[name], triple(times[name]), number(statistics.median(times[name]) / floor),
                 number(min(times[name]) / floor_min)] for name in names]
        self.add(f"Round-trip time in ns, min / **median** / max of "
                 f"{len(times['BM_EventfdPingPong'])} repetitions; the ratios are over the "
                 "eventfd floor of the same run, of the medians and of the minimums (the "
                 "run least disturbed by other load; target for AioWaitBhOneshot: at most "
                 "1.5).\n\n")
        self.add(table(["round trip", "ns", "/ floor (medians)", "/ floor (mins)"], rows))
        ratio = statistics.median(times["BM_AioWaitBhOneshotRoundTrip"]) / floor
        self.target("AioWaitBhOneshot / eventfd ping-pong (medians)", ratio, "<= 1.5", ratio <= 1.5)
        self.plot([[name.replace("BM_", ""), *bar(times[name])] for name in names],
                  "util.png", "Event-loop round trips", "ns", "round trip (median, min..max)", "")

    def block(self):
        data = self.load_json("block.json")["runs"]
        rows, plot_rows = [], []
        for workload in ["randread_4k_qd1", "randread_4k_qd32", "randwrite_4k_qd32",
                         "seqread_128k_qd8"]:
            for variant, fio_name, label in [("shm/nowait:off", "shm", "/dev/shm, fast path off"),
                                             ("shm/nowait:on", "shm", "/dev/shm, fast path on"),
                                             ("disk/direct", "disk", "disk, O_DIRECT")]:
                ours = data["ours"][f"{workload}/{variant}"]
                fio = data["fio"][f"{workload}_{fio_name}"]
                ours_iops = [run["iops"] for run in ours]
                fio_iops = [run["iops"] for run in fio]
                self.block_target(workload, variant, label, ours, fio)
                rows.append([workload, label, triple(ours_iops), triple(fio_iops),
                             number(statistics.median(ours_iops) / statistics.median(fio_iops)),
                             number(statistics.median(run["lat_us"] for run in ours)),
                             number(statistics.median(run["lat_us"] for run in fio))])
                plot_rows.append([f"{workload} {fio_name}{' inline' if 'on' in variant else ''}",
                                  *bar(ours_iops), *bar(fio_iops)])
        repeats = len(data["fio"]["randread_4k_qd1_shm"])
        self.add(f"BlockBackend (bench/block/block_bench) next to Debian's fio "
                 f"`--ioengine=io_uring` on the same files, alternating, {repeats} runs each. "
                 "IOPS min / **median** / max; ratio = median ours / median fio; mean "
                 "latency in us (medians). Targets: QD32 at least 0.95 of fio with the fast "
                 "path off; QD1 latency within 2 us of fio (fast path off) and below 3 us on "
                 "/dev/shm with the fast path on.\n\n")
        self.add(table(["workload", "image", "kvmini IOPS", "fio IOPS", "ratio",
                        "kvmini lat us", "fio lat us"], rows))
        floor = data["fio"].get("psync_floor")
        if floor:
            self.add(f"\nReference: fio psync 4 KiB random reads at QD1 on /dev/shm (plain "
                     f"synchronous reads, the floor for an inline read): median "
                     f"{number(statistics.median(run['lat_us'] for run in floor))} us.\n")
        self.plot(plot_rows, "block.png", "BlockBackend vs fio io_uring (IOPS)", "IOPS",
                  "kvmini BlockBackend", "fio io_uring", log=True)

    def block_target(self, workload, variant, label, ours, fio):
        ratio = statistics.median(run["iops"] for run in ours) / statistics.median(
            run["iops"] for run in fio)
        latency = statistics.median(run["lat_us"] for run in ours)
        difference = latency - statistics.median(run["lat_us"] for run in fio)
        if "nowait:on" in variant:
            if workload.endswith("qd1") and variant.startswith("shm"):
                self.target(f"block {workload}, {label}: mean latency (us)", latency, "< 3",
                            latency < 3)
        elif workload.endswith("qd32"):
            self.target(f"block {workload}, {label}: IOPS / fio", ratio, ">= 0.95",
                        ratio >= 0.95)
        elif workload.endswith("qd1"):
            self.target(f"block {workload}, {label}: latency - fio's (us)", difference,
                        "<= 2", difference <= 2, digits=2)

    def device(self):
        rows, plot_rows = [], []
        for device in ["blk", "scsi"]:
            data = self.load_json(f"device-{device}.json")
            for depth in ["qd1", "qd32"]:
                ours = data["round_iops"][f"device_{depth}"]
                fio = data["round_iops"][f"fio_{depth}"]
                rows.append([f"virtio-{device}", depth.upper(), triple(ours), triple(fio),
                             number(statistics.median(ours) / statistics.median(fio)),
                             number(data[f"device_{depth}"]["mean_latency_us"]),
                             number(data[f"fio_{depth}"]["mean_latency_us"])])
                plot_rows.append([f"{device} {depth.upper()}", *bar(ours), *bar(fio)])
                if depth == "qd32":
                    ratio = statistics.median(ours) / statistics.median(fio)
                    self.target(f"device path virtio-{device} QD32: IOPS / fio", ratio, ">= 0.90",
                                ratio >= 0.90)
        rounds = len(data["round_iops"]["fio_qd1"])
        self.add("4 KiB random reads through the whole device path in a host process (a "
                 "driver thread posts to the virtqueue and kicks the notify eventfd; the "
                 "device runs on an IOThread dataplane over the io_uring backend; completions "
                 "come back through the used ring and the interrupt eventfd), next to fio "
                 f"io_uring on the same /dev/shm image, alternating, {rounds} rounds. IOPS min "
                 "/ **median** / max; ratio of the medians (target at QD32: at least 0.90); "
                 "mean latency of the median round in us.\n\n")
        self.add(table(["device", "depth", "device path IOPS", "fio IOPS", "ratio",
                        "device lat us", "fio lat us"], rows))
        self.plot(plot_rows, "device.png", "Device path vs fio (IOPS)", "IOPS",
                  "device path", "fio io_uring", log=True)

    def startup(self):
        data = self.load_json("startup.json")
        names = [("first_kvm_run_ms", "exec -> first KVM_RUN (ms; target < 5)"),
                 ("kvm_setup_floor_ms", "the bare KVM set-up calls in kvmini's order (ms)"),
                 ("kvm_setup_memory_after_irqchip_ms",
                  "the same calls with guest RAM after the irqchip, QEMU's order (ms)"),
                 ("exit_ms", "exec -> process exit (ms)"),
                 ("peak_rss_mib", "peak RSS (MiB; target < 5)")]
        names = [(key, label) for key, label in names if key in data]
        self.add(f"kvmini with a tiny bzImage (a few instructions that write the exit port) "
                 f"on this machine's /dev/kvm, --memory {data['memory']} --cpus {data['cpus']}, "
                 f"{len(data['exit_ms'])} runs; min / **median** / max.\n\n")
        self.add(table(["figure", "min / median / max"],
                       [[label, triple(data[key])] for key, label in names]))
        first_run = statistics.median(data["first_kvm_run_ms"])
        rss = statistics.median(data["peak_rss_mib"])
        self.target("start-up: exec -> first KVM_RUN, median (ms)", first_run, "< 5", first_run < 5)
        self.target("start-up: peak RSS, median (MiB)", rss, "< 5", rss < 5)

    def hotstop(self):
        rows, notes = [], []
        for line in open(os.path.join(self.raw, "hotstop.log")):
            match = re.match(r"(\w+)\s+(\w+)\s+(\S+)\s+min ([\d.]+) us, p50 ([\d.]+) us, "
                             r"p99 ([\d.]+) us, max ([\d.]+) us \(n=(\d+)\)", line)
            if match:
                device, load, what, *figures, count = match.groups()
                rows.append([f"virtio-{device}", load, what,
                             *(number(float(figure)) for figure in figures), count])
                if load == "idle" and what == "stop+start":
                    p99 = float(figures[2])
                    self.target(f"hot-stop virtio-{device} idle stop+start p99 (us)", p99,
                                "< 1000", p99 < 1000)
            elif "requests in the device" in line:
                notes.append(" ".join(line.split()))
        if not rows:
            raise ValueError("no latency lines in hotstop.log")
        self.add("Dataplane stop (IOThread -> main loop) and start (back) as the operator "
                 "sees them, in the device harness (a host process), idle and with a driver "
                 "thread keeping 32 requests in flight; microseconds. "
                 "`stop-minus-slowest-in-flight` is the stop's own cost beyond waiting for "
                 "the slowest request in flight (targets: idle stop+start p99 under 1000 us; "
                 "under load, stop bounded by the in-flight I/O).\n\n")
        self.add(table(["device", "load", "operation", "min", "p50", "p99", "max", "n"], rows))
        if notes:
            self.add("\n" + "".join(f"- {note}\n" for note in notes))
    # ---- the rig --------------------------------------------------------------------

    def boot(self):
        times = {"kvmini": [], "qemu": []}
        redos, limits = [], None
        for line in open(os.path.join(self.raw, "boot.log")):
            match = re.match(r"run \d+: (\w+)\s+([\d.]+) s", line)
            if match:
                times[match.group(1)].append(float(match.group(2)))
            match = re.match(r"redo \d+ of at most \d+: (.*)", line)
            if match:
                redos.append(match.group(1))
            match = re.match(r"\s*(per-boot limit [^;]*);", line)
            if match:
                limits = match.group(1)
        ratio = statistics.median(times["kvmini"]) / statistics.median(times["qemu"])
        self.add(f"Start of the VMM process to the guest's /init marker, same kernel, initrd "
                 f"and command line (cloud image), {len(times['kvmini'])} boots each, "
                 "alternating; seconds min / **median** / max.\n\n")
        self.add(table(["VMM", "seconds", "kvmini/QEMU (medians)"],
                       [["kvmini", triple(times["kvmini"]), number(ratio)],
                        ["QEMU microvm", triple(times["qemu"]), number(1.0)]]))
        self.add(f"\nTarget: at most 0.8. Measured ratio kvmini/QEMU: **{number(ratio)}**.\n")
        self.add(self.redo_text(redos, limits))
        self.target("rig: boot to /init, kvmini / QEMU (medians)", ratio, "<= 0.8", ratio <= 0.8)
        self.plot([["boot to /init", *bar(times["kvmini"]), *bar(times["qemu"])]],
                  "boot.png", "Boot to /init in the outer machine (seconds)", "s",
                  "kvmini", "QEMU microvm")

    @staticmethod
    def redo_text(redos, limits):
        """What the report says about boots that hung or died and were redone."""
        text = f"\nRedone boots: **{len(redos)}**"
        if limits:
            text += f" ({limits})"
        if not redos:
            return text + ".\n"
        return (text + ". A nested guest in the rig now and then hangs or dies for the "
                "emulator's reasons; such a boot was killed with its VMM and run again:\n\n"
                + "".join(f"- {redo}\n" for redo in redos))

    def guest_fio_from_log(self):
        """The figures of the boots that completed, from guest_fio_compare.py's log
        (for a run that failed part-way: its JSON is written only at the end)."""
        log = open(os.path.join(self.raw, "guest-fio.log")).read()
        settings = re.search(r"(\d+) s per job after (\d+) s warm-up;.*image (\d+) MiB.*; "
                             r"(\d+) vCPU, (\d+) MiB", log)
        boots = {}  # (run, device) -> {vmm: {job: iops}}
        for match in re.finditer(r"^run (\d+) (\w+)\s+(\w+)\s+(.*?)\s+\([\d.]+ s\)$", log, re.M):
            words = match.group(4).split()
            boots.setdefault((match.group(1), match.group(2)), {})[match.group(3)] = {
                words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}
        devices, complete_runs = {}, set()
        for (run, device), by_vmm in sorted(boots.items()):
            if set(by_vmm) != {"kvmini", "qemu"}:
                continue  # a pair cut short by the failure
            complete_runs.add(run)
            jobs = devices.setdefault(device, {"jobs": {}})["jobs"]
            for job in by_vmm["kvmini"]:
                entry = jobs.setdefault(job, {"kvmini": {"runs": []}, "qemu": {"runs": []}})
                for vmm in ("kvmini", "qemu"):
                    entry[vmm]["runs"].append(by_vmm[vmm][job])
        if not devices:
            raise ValueError("no complete kvmini/QEMU pair in guest-fio.log")
        for entry in devices.values():
            for figures in entry["jobs"].values():
                figures["ratio_median"] = (statistics.median(figures["kvmini"]["runs"]) /
                                           statistics.median(figures["qemu"]["runs"]))
        fio_seconds, ramp, image_mib, cpus, memory_mib = (settings.groups() if settings
                                                         else ["?"] * 5)
        return {"runs": len(complete_runs), "fio_seconds": fio_seconds, "fio_ramp": ramp,
                "image_mib": image_mib, "cpus": cpus, "memory_mib": memory_mib,
                "devices": devices}

    def guest_fio(self):
        code = self.status.get("guest-fio", (None, 0))[0]
        if code != 0:
            # The JSON is rewritten after every repetition, so a run that failed
            # or was cut short keeps its complete ones; an older one only has
            # its log.
            try:
                data = self.load_json("guest-fio.json")
            except OSError:
                data = self.guest_fio_from_log()
        else:
            data = self.load_json("guest-fio.json")
        if code != 0 or data.get("error"):
            if "guest-fio" not in self.failed:
                self.failed.append("guest-fio")
            how = (f"failed part-way (status {code})" if code is not None
                   else "was cut short (no exit status: the rig stopped it)")
            tail = open(os.path.join(self.raw, "guest-fio.log")).read().strip().splitlines()
            self.add(f"**Incomplete: guest_fio_compare.py {how}; below are the "
                     f"{data['runs']} repetitions in which both VMMs completed.** Its last "
                     "lines:\n\n```\n"
                     + "\n".join(line[:300] for line in
                                 [line for line in tail if line.startswith("guest_fio_compare.py:")][:1]
                                 + ["..."] + tail[-4:]) + "\n```\n\n")
        rows, plot_rows = [], []
        for device, entry in data["devices"].items():
            for job, figures in entry["jobs"].items():
                kvmini, qemu = figures["kvmini"]["runs"], figures["qemu"]["runs"]
                rows.append([f"virtio-{device}", job, triple(kvmini), triple(qemu),
                             f"**{number(figures['ratio_median'])}**"])
                plot_rows.append([f"{device} {job}", *bar(kvmini), *bar(qemu)])
                self.target(f"rig: guest fio virtio-{device} {job}, kvmini / QEMU (medians)",
                            figures["ratio_median"], ">= 1.0", figures["ratio_median"] >= 1.0)
        if "vm_seconds" in data:  # one boot per VMM measures both disks
            boots = (f"{data['runs']} boots per VMM, alternating, each with both disks (a "
                     f"{data['image_mib']} MiB image each on the outer machine's tmpfs) and "
                     "ONE fio process in the guest running the jobs one after the other")
        else:  # an older run: one boot per VMM and disk
            boots = (f"{data['runs']} boots per VMM and disk, alternating, one disk of "
                     f"{data['image_mib']} MiB on the outer machine's tmpfs")
        self.add(f"fio in the guest (4 KiB, O_DIRECT in the guest, io_uring engine, "
                 f"{data['fio_seconds']} s per job after {data['fio_ramp']} s warm-up); "
                 f"{boots}; {data['cpus']} vCPU, {data['memory_mib']} MiB. Each disk on an "
                 "IOThread of its own (kvmini `--iothread io0 --blk path=IMG1,iothread=io0 "
                 "--iothread io1 --scsi path=IMG2,iothread=io1`; QEMU `-object iothread` with "
                 "`virtio-blk-device`, and `virtio-scsi-device` + `scsi-hd`, "
                 "`aio=io_uring,cache=writeback`: both buffered, as tmpfs has no O_DIRECT "
                 "there). IOPS min / **median** / max; ratio of the medians (target: at least "
                 "1.0).\n\n")
        self.add(table(["disk", "job", "kvmini IOPS", "QEMU IOPS", "kvmini/QEMU"], rows))
        if "vm_seconds" in data:
            self.add("\nA whole boot (start of the VMM to the guest's exit line, every job): "
                     + ", ".join(f"{'QEMU' if vmm == 'qemu' else vmm} "
                                 f"{triple(figures['runs'])} s"
                                 for vmm, figures in data["vm_seconds"].items()) + ".\n")
        if "redos" in data:
            self.add(self.redo_text([f"{redo['boot']}: {redo['why']}; last console line: "
                                     f"{redo.get('last_console_line', '?')}"
                                     for redo in data["redos"]],
                                    data.get("boot_limits", "").split(";")[0]))
        self.plot(plot_rows, "guest-fio.png", "Guest fio in the outer machine (IOPS)", "IOPS",
                  "kvmini", "QEMU microvm", log=True)

    # ---- the document ---------------------------------------------------------------

    def header(self):
        env = dict(line.split("=", 1) for line in self._lines("env.txt") if "=" in line)
        rig_env = dict(line.split("=", 1) for line in self._lines("rig-env.txt") if "=" in line)
        total = sum(seconds for name, (_, seconds) in self.status.items()
                    if name not in ("boot", "guest-fio", "rig", "rig-lock-wait"))
        self.add("# kvmini performance\n")
        self.add(f"Written by `bench/run-all.sh{' --quick' if env.get('quick') == '1' else ''}` "
                 f"on {env.get('date', '?')}. Every comparison below is a ratio of figures "
                 "measured in the same run, the contenders alternating so that load from "
                 "elsewhere hits both alike.\n")
        self.add("\n### Which numbers are real\n\n"
                 "- **Host-process benchmarks** (event loop, block backend, device path, "
                 "start-up and RSS, hot-stop) run directly on this machine: their absolute "
                 "figures are real for it. The machine is shared (2 cores, other builds and "
                 "tests running: see the load averages), so absolute figures are noisy; the "
                 "ratios, measured side by side, are the figures to trust.\n"
                 "- **Rig benchmarks** (boot time, guest fio against QEMU) run inside the "
                 "rig's outer machine: QEMU TCG emulating an AMD-V CPU, with kvmini and QEMU as "
                 "nested hypervisors. Guest code runs at emulation speed and every exit to "
                 "the VMM costs about 130 us, so absolute seconds and IOPS say nothing about "
                 "real hardware; **only the kvmini/QEMU ratios are meaningful**, and even they "
                 "weigh exits far more heavily than real hardware would.\n")
        machine = [
            ["date", env.get("date", "?")],
            ["CPU", f"{env.get('cpu', '?')}, {env.get('cores', '?')} cores, "
                    f"{env.get('memory_gib', '?')} GiB"],
            ["hardware virtualization", env.get("hardware_virtualization", "?") +
             ("" if env.get("hardware_virtualization") == "yes" else
              " (/dev/kvm is software KVM: Linux guests run only in the rig)")],
            ["OS, kernel", f"{env.get('os', '?')}, Linux {env.get('kernel', '?')}"],
            ["QEMU", env.get("qemu", "?")],
            ["fio", env.get("fio", "?")],
            ["compiler, build", f"{env.get('compiler', '?')}, {env.get('build_type', '?')}"],
            ["kvmini commit", env.get("commit", "?")],
            ["load average before / after", f"{env.get('load_before', '?')} / "
                                             f"{env.get('load_after', '?')}"],
            ["host-process benchmarks took", f"{total} s"],
        ]
        if rig_env:
            rig_seconds = self.status.get("rig", (0, 0))[1]
            machine += [
                ["rig outer machine", f"QEMU TCG, {rig_env.get('outer_cpus', '?')} vCPUs "
                                      f"({rig_env.get('outer_cpu', '?')}), Linux "
                                      f"{rig_env.get('outer_kernel', '?')}"],
                ["rig part took", f"{rig_seconds} s (after waiting "
                                  f"{self.status.get('rig-lock-wait', (0, 0))[1]} s for the "
                                  "team's rig lock)"]]
        self.add("\n" + table(["", ""], machine))
        self.durations(env)

    def durations(self, env):
        """The table of how long each part of the run took (issue 10: the full run
        fits in 20 minutes on 2 cores, the wait for the team's rig lock aside)."""
        rows = [[name, f"{seconds} s"] for name, seconds in
                (line.split("\t") for line in self._lines("durations.tsv"))]
        lock_wait = self.status.get("rig-lock-wait", (0, 0))[1]
        if "rig" in self.status:
            ready = re.search(r"outer machine ready in ([\d.]+) s", "\n".join(
                self._lines("rig.log")))
            rows += [["rig: wait for the team's rig lock (not counted)", f"{lock_wait} s"],
                     ["rig: outer machine boot", f"{float(ready.group(1)):.0f} s" if ready
                      else "?"]]
            rows += [[f"rig: {part} ({script})", f"{self.status[part][1]} s"]
                     for part, script in (("boot", "boot_compare.py"),
                                          ("guest-fio", "guest_fio_compare.py"))
                     if part in self.status]
            rows.append(["rig: whole (outer machine start to end)",
                         f"{self.status['rig'][1]} s"])
        if "run_seconds" in env:
            whole = int(env["run_seconds"]) - lock_wait
            rows.append(["**whole run, without the wait for the rig lock**",
                         f"**{whole} s ({whole / 60:.1f} min)**"])
        if rows:
            self.add("\nWhere the time went (report writing and plots, a few seconds, "
                     "aside):\n\n" + table(["part", "took"], rows))

    def write(self):
        self.header()
        summary_at = len(self.parts)
        self.add("\n# Host-process benchmarks (real figures for this machine)\n")
        self.section("util", "Event loop: cross-thread round trips", self.util)
        self.section("block", "Block backend vs fio", self.block)
        self.section("device-blk", "Device path (virtio-blk, virtio-scsi) vs fio", self.device,
                     ["device-blk", "device-scsi"])
        if self.status.get("device-scsi", (0, 0))[0] != 0:
            self.failed.append("device-scsi")
            self.add("\n**virtio-scsi figures: device_bench --device scsi failed (see "
                     "raw/device-scsi.log).**\n")
        skipped = self._lines("startup-skipped.txt")
        if skipped:
            self.add(f"\n## VMM start-up and RSS\n\n{skipped[0][0].upper() + skipped[0][1:]}.\n")
        else:
            self.section("startup", "VMM start-up and RSS", self.startup)
        if "hotstop" in self.status:
            self.section("hotstop", "Dataplane hot-stop latency", self.hotstop)
        else:
            self.add("\n## Dataplane hot-stop latency\n\nNot in this run: the build has no "
                     "hot-stop benchmark (bench/hotstop).\n")
        self.add("\n# In the rig's outer machine (only the ratios are meaningful)\n")
        skipped = self._lines("rig-skipped.txt")
        if skipped:
            self.add("\n" + skipped[0][0].upper() + skipped[0][1:] + ".\n")
        elif self._lines("rig-lock-timeout.txt"):
            self.failed.append("rig")
            self.add("\n**Not measured: " + self._lines("rig-lock-timeout.txt")[0] + ".** "
                     "Boot time and guest fio against QEMU are missing from this run.\n")
        else:
            if self.status.get("rig", (0, 0))[0] != 0:
                self.failed.append("rig")
                self.add(f"\n**The rig failed (status {self.status['rig'][0]}); see "
                         "raw/rig.log.**\n")
            retry = self._lines("rig-retry.txt")
            if retry:
                self.add(f"\n**Two outer machines: {retry[0]}.**\n")
            self.section("boot", "Boot time: kvmini vs QEMU microvm", self.boot)
            if self.status.get("guest-fio", (0, 0))[0] != 0:
                self.failed.append("guest-fio")
            self.section("guest-fio", "Guest fio: kvmini vs QEMU microvm", self.guest_fio)
            if "rig" in self.commands:
                where = ("in two outer-machine boots (see above)" if retry
                         else "in one outer-machine boot")
                self.add(f"\nBoth ran {where}: `{self.commands['rig']}`\n")
        self.add("\n## Reproduce\n\n`bench/run-all.sh` (full run, under 20 min on 2 cores "
                 "besides the wait for the team's rig lock, writes this file and docs/img/) or "
                 "`bench/run-all.sh --quick` (under a minute, no rig, into a scratch folder). The raw figures of each benchmark "
                 "(JSON and logs) are kept next to the report (`raw/`) or in "
                 "`BUILD/bench-results`.\n")
        if self.targets:
            self.parts.insert(summary_at, "\n## Targets at a glance\n\nEach figure against the "
                              "target its issue set, from the tables below.\n\n"
                              + table(["figure", "measured", "target", "met"], self.targets))
        os.makedirs(os.path.join(self.out, "img"), exist_ok=True)
        self.draw()
        with open(os.path.join(self.out, "PERFORMANCE.md"), "w") as out:
            out.write("".join(self.parts))

    def draw(self):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bars.gp")
        if not shutil.which("gnuplot"):
            self.add("\nPlots skipped: gnuplot is not installed (apt-get install gnuplot-nox).\n")
            return
        for rows, name, heading, ylabel, first, second, log in self.plots:
            data = os.path.join(self.raw, name.replace(".png", ".dat"))
            with open(data, "w") as out:
                for row in rows:
                    out.write(f'"{row[0]}" ' + " ".join(f"{value:g}" for value in row[1:]) + "\n")
            variables = (f"data='{data}'; output='{os.path.join(self.out, 'img', name)}'; "
                         f"heading='{heading}'; ylabel='{ylabel}'; first='{first}'; "
                         f"second='{second}'; logscale={1 if log else 0}")
            result = subprocess.run(["gnuplot", "-e", variables, script], capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                self.failed.append(f"plot {name}")
                self.add(f"\nPlot {name} failed: {result.stderr.strip()[-300:]}\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    report = Report(os.path.abspath(args.raw), os.path.abspath(args.out),
                    os.path.abspath(args.root))
    report.write()
    print(f"report.py: wrote {os.path.join(args.out, 'PERFORMANCE.md')}")
    if report.failed:
        print(f"report.py: not measured or failed: {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

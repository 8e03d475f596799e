#!/usr/bin/env python3
"""Smoke test of bench/run-all.sh: every figure is produced, never that it is fast.

  check_report.py BUILD_DIR [run-all.sh options...]

Runs `bench/run-all.sh --quick --no-build --build BUILD_DIR --out TMP` (plus
the given options) and checks: it exits 0; PERFORMANCE.md has the host-process
tables (event loop, block backend, device path, start-up) and no "Not
measured"; every table row is complete and has numbers (no empty, nan or inf
cells); the plots are PNG files when gnuplot is installed; the raw JSON
figures are there and parse.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST_TABLES = ["Event loop", "Block backend", "Device path", "VMM start-up"]
HOST_PLOTS = ["util.png", "block.png", "device.png"]
HOST_JSON = ["util.json", "block.json", "device-blk.json", "device-scsi.json", "startup.json"]
NUMBER = re.compile(r"\d")


def table_problems(markdown):
    """Rows of markdown tables that are incomplete or lack numbers."""
    problems = []
    lines = markdown.splitlines()
    separator = re.compile(r"^\|(-+\|)+$")
    for line_number, line in enumerate(lines, start=1):
        if not line.startswith("|") or separator.match(line):
            continue
        if line_number < len(lines) and separator.match(lines[line_number]):
            continue  # a header row
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if any(not cell for cell in cells):
            problems.append(f"line {line_number}: empty cell: {line}")
        elif any(re.search(r"\b(nan|inf)\b", cell, re.I) for cell in cells):
            problems.append(f"line {line_number}: nan/inf: {line}")
        elif not NUMBER.search(" ".join(cells[1:])):
            problems.append(f"line {line_number}: no number: {line}")
    return problems


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    build, extra = sys.argv[1], sys.argv[2:]
    if not os.path.exists("/dev/kvm"):
        # run-all.sh says the start-up figures need /dev/kvm instead.
        HOST_TABLES.remove("VMM start-up")
        HOST_JSON.remove("startup.json")
    out = tempfile.mkdtemp(prefix="kvmini-bench-check.")
    failures = []
    try:
        command = [os.path.join(ROOT, "bench", "run-all.sh"), "--quick", "--no-build",
                   "--build", build, "--out", out] + extra
        print("running:", " ".join(command), flush=True)
        status = subprocess.run(command, check=False).returncode
        if status != 0:
            failures.append(f"run-all.sh exited {status}")
        report_path = os.path.join(out, "PERFORMANCE.md")
        if not os.path.exists(report_path):
            failures.append("no PERFORMANCE.md")
            markdown = ""
        else:
            markdown = open(report_path).read()
            print(markdown)
        for heading in HOST_TABLES:
            section = markdown.split(f"## {heading}", 1)
            if len(section) < 2:
                failures.append(f"no section '{heading}'")
            elif "\n|" not in section[1].split("\n## ", 1)[0]:
                failures.append(f"section '{heading}' has no table")
        if "Not measured" in markdown:
            failures.append("a benchmark was not measured (see the report above)")
        # The figure tables follow the machine description.
        failures += table_problems(markdown.split("\n# Host-process", 1)[-1])
        if shutil.which("gnuplot"):
            for name in HOST_PLOTS:
                path = os.path.join(out, "img", name)
                if not os.path.exists(path) or open(path, "rb").read(8) != b"\x89PNG\r\n\x1a\n":
                    failures.append(f"img/{name} is missing or not a PNG")
        for name in HOST_JSON:
            try:
                json.load(open(os.path.join(out, "raw", name)))
            except (OSError, ValueError) as error:
                failures.append(f"raw/{name}: {error}")
        print("files:", ", ".join(sorted(os.path.relpath(path, out)
                                         for path in glob.glob(os.path.join(out, "**"),
                                                               recursive=True))))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print("PASS: every figure was produced")
    return 0


if __name__ == "__main__":
    sys.exit(main())

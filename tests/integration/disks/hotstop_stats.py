#!/usr/bin/env python3
"""Latency figures of the hot-stop guest test, from its control log.

hotstop_host.sh logs every kvmini-ctl command as
    SENT ANSWERED COMMAND [key=value...] -> ANSWER_JSON
(SENT/ANSWERED: $EPOCHREALTIME when the command went to the kvmini-ctl
--batch coprocess and when its answer line came back). This prints, per
command, min/p50/p99/max of that round trip, and the durations kvmini itself
measured for the operations that changed something: a dataplane-stop that
took a running dataplane off its IOThread (last_stop_us), a dataplane-start
that put it back (last_start_us), a device-set-iothread that moved a running
dataplane to another IOThread (last_start_us: the whole move), and each
stop's quiesce time (quiesce_us). A stop or start that found the dataplane
already where it was asked to be reports an older duration, so it is left
out of the device-measured figures (kept in the round trips).

usage: hotstop_stats.py OPS_LOG
"""
import json
import math
import sys


def summary(values):
    if not values:
        return "none"
    values = sorted(values)

    def rank(fraction):
        return values[max(1, math.ceil(fraction * len(values))) - 1]

    return "min %.0f, p50 %.0f, p99 %.0f, max %.0f (n=%d)" % (
        values[0], rank(0.5), rank(0.99), values[-1], len(values))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    round_trips = {}
    measured = {"dataplane-stop (running -> main loop)": [],
                "dataplane-start (main loop -> IOThread)": [],
                "device-set-iothread (running, to another IOThread)": [],
                "stop (pause: vCPUs parked, disks quiesced)": []}
    running = {}  # device id -> dataplane running, as last reported
    iothread = {}
    with open(sys.argv[1]) as log:
        for line in log:
            left, sep, answer_text = line.rstrip("\n").partition(" -> ")
            fields = left.split()
            if not sep or len(fields) < 3:
                continue
            try:
                sent, answered = float(fields[0]), float(fields[1])
                answer = json.loads(answer_text)
            except ValueError:
                continue
            command = fields[2]
            round_trips.setdefault(command, []).append((answered - sent) * 1e6)
            result = answer.get("return")
            if not isinstance(result, dict):
                continue
            if command == "stop" and "quiesce_us" in result:
                measured["stop (pause: vCPUs parked, disks quiesced)"].append(result["quiesce_us"])
            for device in result.get("devices", []):  # query-devices
                running[device["id"]] = device["dataplane_running"]
                iothread[device["id"]] = device["iothread"]
            if "device" not in result:
                continue
            device = result["device"]
            was_running, now_running = running.get(device), result["dataplane_running"]
            if command == "dataplane-stop" and was_running and not now_running:
                measured["dataplane-stop (running -> main loop)"].append(result["last_stop_us"])
            elif command == "dataplane-start" and was_running is False and now_running:
                measured["dataplane-start (main loop -> IOThread)"].append(result["last_start_us"])
            elif (command == "device-set-iothread" and was_running and now_running
                  and iothread.get(device) != result["iothread"]):
                measured["device-set-iothread (running, to another IOThread)"].append(
                    result["last_start_us"])
            running[device] = now_running
            iothread[device] = result["iothread"]
    print("host: kvmini-ctl round trips, us (guest I/O running):")
    for command in sorted(round_trips):
        print("host:   %-20s %s" % (command, summary(round_trips[command])))
    print("host: durations kvmini measured, us:")
    for what, values in measured.items():
        print("host:   %-52s %s" % (what, summary(values)))


if __name__ == "__main__":
    main()
